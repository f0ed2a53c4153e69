// The training text: every regular file under a directory (or one file),
// read in sorted name order, a character vocabulary, and a held-out split.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace charlm {

struct Corpus {
  /// The files read, in order, and how many bytes each gave.
  std::vector<std::string> files;
  /// Files skipped because they hold a NUL byte (not text).
  size_t binaryFilesSkipped = 0;
  /// Byte value -> token id, or -1 for a byte that the training split lacks.
  int idOf[256];
  /// Token id -> byte value: the training split's alphabet.
  std::vector<unsigned char> chars;
  /// The two splits as token ids, each the concatenation of its parts of the
  /// files in file order. A validation character outside the training
  /// alphabet is stored as id 0 and marked unknown.
  std::vector<uint8_t> train, validation;
  /// unknownBefore[i]: unknown characters in validation[0, i).
  std::vector<uint32_t> unknownBefore;

  int vocabSize() const { return static_cast<int>(chars.size()); }
  size_t unknownValidationChars() const { return unknownBefore.back(); }
  /// Whether validation[p - context .. p] (a context and its target) holds
  /// only characters of the training alphabet.
  bool validationWindowKnown(size_t p, size_t context) const {
    return unknownBefore[p + 1] == unknownBefore[p - context];
  }
  /// Entropy in nats of the training split's character frequencies: the loss
  /// of the best model that ignores context, the bar a language model must
  /// clear.
  double unigramEntropy() const;
};

/// Reads path: a regular file, or a directory whose regular files (not
/// symbolic links: /usr/share/common-licenses has GPL -> GPL-3 and the like,
/// which would count the same text twice; nor binary files, those holding a
/// NUL byte, such as fortune's .dat indexes) are read in sorted name order.
/// The last validationFraction of every file is held out, so that the
/// validation text covers every document rather than only the last ones (and
/// near-identical licence versions have the same part held out). The
/// alphabet is the training split's: a model cannot know a character it
/// never saw, and a never-seen target's logit is only ever pushed down, by
/// an amount that depends on the optimizer, which would swamp the
/// comparison (the licences' held-out parts have 175 '_' the rest lacks).
/// Throws std::runtime_error with a message naming the path when it is
/// missing, unreadable, holds no regular file or too little text.
Corpus loadCorpus(const std::string &path, double validationFraction);

} // namespace charlm
