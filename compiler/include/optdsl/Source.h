// A source buffer with its name, and byte ranges into it. Every AST node and
// diagnostic carries a SourceRange so errors point at the user's text.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace optdsl {

/// Half-open byte range [begin, end) into one SourceFile.
struct SourceRange {
  uint32_t begin = 0;
  uint32_t end = 0;
  bool operator==(const SourceRange &) const = default;
};

struct LineCol {
  uint32_t line = 1;   // 1-based
  uint32_t column = 1; // 1-based, in bytes
};

class SourceFile {
public:
  SourceFile(std::string name, std::string text);

  /// Reads a file; "-" reads standard input. Throws std::runtime_error naming
  /// the path and the OS error when it cannot be read.
  static SourceFile load(const std::string &path);

  const std::string &name() const { return name_; }
  const std::string &text() const { return text_; }
  std::string_view slice(SourceRange range) const;

  LineCol lineCol(uint32_t offset) const;
  /// The byte offset of a 1-based line and column, clamped to the file.
  uint32_t offsetOf(LineCol position) const;
  /// The text of a 1-based line, without its newline (LF or CRLF).
  std::string_view lineText(uint32_t line) const;

private:
  std::string name_;
  std::string text_;
  std::vector<uint32_t> lineStarts_;
};

} // namespace optdsl
