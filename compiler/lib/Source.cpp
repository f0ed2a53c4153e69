#include "optdsl/Source.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>
#include <stdexcept>

namespace optdsl {

SourceFile::SourceFile(std::string name, std::string text)
    : name_(std::move(name)), text_(std::move(text)) {
  lineStarts_.push_back(0);
  for (uint32_t i = 0; i < text_.size(); ++i)
    if (text_[i] == '\n')
      lineStarts_.push_back(i + 1);
}

SourceFile SourceFile::load(const std::string &path) {
  if (path == "-") {
    std::ostringstream buffer;
    buffer << std::cin.rdbuf();
    return SourceFile("<stdin>", buffer.str());
  }
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw std::runtime_error("cannot open '" + path + "': " + std::strerror(errno));
  std::string text;
  try {
    text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  } catch (const std::ios_base::failure &) {
    // libstdc++ throws from the read itself (of a directory, say), with a
    // message that does not name the file.
    in.setstate(std::ios::badbit);
  }
  if (in.bad())
    throw std::runtime_error("cannot read '" + path + "': " + std::strerror(errno));
  return SourceFile(path, std::move(text));
}

std::string_view SourceFile::slice(SourceRange range) const {
  uint32_t begin = std::min<uint32_t>(range.begin, text_.size());
  uint32_t end = std::clamp<uint32_t>(range.end, begin, text_.size());
  return std::string_view(text_).substr(begin, end - begin);
}

LineCol SourceFile::lineCol(uint32_t offset) const {
  offset = std::min<uint32_t>(offset, text_.size());
  auto it = std::upper_bound(lineStarts_.begin(), lineStarts_.end(), offset);
  uint32_t line = static_cast<uint32_t>(it - lineStarts_.begin());
  return {line, offset - lineStarts_[line - 1] + 1};
}

uint32_t SourceFile::offsetOf(LineCol position) const {
  if (position.line == 0 || position.line > lineStarts_.size())
    return static_cast<uint32_t>(text_.size());
  uint32_t offset = lineStarts_[position.line - 1] + (position.column ? position.column - 1 : 0);
  return std::min<uint32_t>(offset, text_.size());
}

std::string_view SourceFile::lineText(uint32_t line) const {
  if (line == 0 || line > lineStarts_.size())
    return {};
  uint32_t begin = lineStarts_[line - 1];
  bool endsWithNewline = line < lineStarts_.size();
  uint32_t end = endsWithNewline ? lineStarts_[line] - 1 : text_.size();
  // The CR of a CRLF ending is not part of the line; a CR that ends the file
  // with no LF after it is an ordinary (control) character of the last line,
  // and takes its column like any other.
  if (endsWithNewline && end > begin && text_[end - 1] == '\r')
    --end;
  return std::string_view(text_).substr(begin, end - begin);
}

uint32_t SourceFile::include(std::shared_ptr<const SourceFile> file) const {
  // One past the end of what is there, so that an empty range at the end of
  // one file is not the start of the next.
  uint32_t base = included_.empty() ? static_cast<uint32_t>(text_.size()) + 1
                                    : included_.back().base + static_cast<uint32_t>(included_.back().file->text().size()) + 1;
  included_.push_back({base, std::move(file)});
  return base;
}

std::pair<const SourceFile *, uint32_t> SourceFile::locate(uint32_t offset) const {
  for (auto it = included_.rbegin(); it != included_.rend(); ++it)
    if (offset >= it->base)
      return {it->file.get(), offset - it->base};
  return {this, offset};
}

uint32_t SourceFile::offsetIn(const std::string &name, LineCol position) const {
  if (name == name_)
    return offsetOf(position);
  for (const Included &included : included_)
    if (included.file->name() == name)
      return included.base + included.file->offsetOf(position);
  return UINT32_MAX;
}

} // namespace optdsl
