#include "Corpus.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace charlm {
namespace fs = std::filesystem;

namespace {

std::string readFile(const fs::path &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw std::runtime_error("cannot read corpus file '" + path.string() + "': " + std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad())
    throw std::runtime_error("cannot read corpus file '" + path.string() + "': read error");
  return text.str();
}

} // namespace

double Corpus::unigramEntropy() const {
  std::vector<double> counts(chars.size(), 0.0);
  for (uint8_t id : train)
    counts[id] += 1;
  double entropy = 0, n = static_cast<double>(train.size());
  for (double count : counts)
    if (count > 0)
      entropy -= count / n * std::log(count / n);
  return entropy;
}

Corpus loadCorpus(const std::string &pathName, double validationFraction) {
  if (!(validationFraction > 0 && validationFraction < 1))
    throw std::runtime_error("the validation fraction must lie strictly between 0 and 1");
  fs::path path(pathName);
  std::error_code error;
  fs::file_status status = fs::status(path, error);
  if (error)
    throw std::runtime_error("cannot read corpus '" + pathName + "': " + error.message());

  std::vector<fs::path> files;
  if (fs::is_directory(status)) {
    fs::directory_iterator it(path, error), end;
    if (error)
      throw std::runtime_error("cannot read corpus directory '" + pathName + "': " + error.message());
    for (; it != end; it.increment(error)) {
      if (error)
        throw std::runtime_error("cannot read corpus directory '" + pathName + "': " + error.message());
      if (it->is_regular_file() && !it->is_symlink())
        files.push_back(it->path());
    }
    // Directory order is the file system's; sort so that every run (and
    // every machine) sees the same text in the same order.
    std::sort(files.begin(), files.end());
    if (files.empty())
      throw std::runtime_error("corpus directory '" + pathName + "' holds no regular file");
  } else if (fs::is_regular_file(status)) {
    files.push_back(path);
  } else {
    throw std::runtime_error("corpus '" + pathName + "' is neither a regular file nor a directory");
  }

  // Binary files (a NUL byte: fortune's .dat indexes beside its text files)
  // are no text to learn; they are skipped and counted.
  Corpus corpus;
  std::vector<std::string> texts;
  std::vector<fs::path> textFiles;
  for (const fs::path &file : files) {
    std::string text = readFile(file);
    if (text.find('\0') != std::string::npos) {
      ++corpus.binaryFilesSkipped;
      continue;
    }
    texts.push_back(std::move(text));
    textFiles.push_back(file);
  }
  if (texts.empty())
    throw std::runtime_error("corpus '" + pathName + "' holds no text file (" +
                             std::to_string(corpus.binaryFilesSkipped) + " binary files skipped)");
  files = std::move(textFiles);

  std::vector<size_t> cuts;
  bool seen[256] = {};
  for (const std::string &text : texts) {
    cuts.push_back(text.size() - static_cast<size_t>(std::llround(text.size() * validationFraction)));
    for (size_t i = 0; i < cuts.back(); ++i)
      seen[static_cast<unsigned char>(text[i])] = true;
  }
  for (int c = 0; c < 256; ++c) {
    corpus.idOf[c] = seen[c] ? static_cast<int>(corpus.chars.size()) : -1;
    if (seen[c])
      corpus.chars.push_back(static_cast<unsigned char>(c));
  }
  corpus.unknownBefore.push_back(0);
  for (size_t f = 0; f < files.size(); ++f) {
    const std::string &text = texts[f];
    for (size_t i = 0; i < text.size(); ++i) {
      int id = corpus.idOf[static_cast<unsigned char>(text[i])];
      if (i < cuts[f]) {
        corpus.train.push_back(static_cast<uint8_t>(id));
      } else {
        corpus.validation.push_back(static_cast<uint8_t>(id < 0 ? 0 : id));
        corpus.unknownBefore.push_back(corpus.unknownBefore.back() + (id < 0));
      }
    }
    corpus.files.push_back(files[f].string());
  }
  if (corpus.train.size() < 1000 || corpus.validation.size() < 100)
    throw std::runtime_error("corpus '" + pathName + "' is too small (" +
                             std::to_string(corpus.train.size() + corpus.validation.size()) +
                             " bytes); it needs at least a few kilobytes of text");
  return corpus;
}

} // namespace charlm
