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
  /// Byte value -> token id, or -1 for a byte that never occurs.
  int idOf[256];
  /// Token id -> byte value.
  std::vector<unsigned char> chars;
  /// The two splits as token ids, each the concatenation of its parts of the
  /// files in file order.
  std::vector<uint8_t> train, validation;

  int vocabSize() const { return static_cast<int>(chars.size()); }
  /// Entropy in nats of the training split's character frequencies: the loss
  /// of the best model that ignores context, the bar a language model must
  /// clear.
  double unigramEntropy() const;
};

/// Reads path: a regular file, or a directory whose regular files (not
/// symbolic links: /usr/share/common-licenses has GPL -> GPL-3 and the like,
/// which would count the same text twice) are read in sorted name order.
/// The last validationFraction of every file is held out, so that the
/// validation text covers every document rather than only the last ones.
/// Throws std::runtime_error with a message naming the path when it is
/// missing, unreadable, holds no regular file or too little text.
Corpus loadCorpus(const std::string &path, double validationFraction);

} // namespace charlm
