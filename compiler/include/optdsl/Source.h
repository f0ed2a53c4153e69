// A source buffer with its name, and byte ranges into it. Every AST node and
// diagnostic carries a SourceRange so errors point at the user's text.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace optdsl {

/// Half-open byte range [begin, end) into one SourceFile (or, past its end,
/// into a file it included: SourceFile::include).
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

  /// Makes `file` (a transform a rule applies) part of this one's range
  /// space: its offsets start at the returned base, after this file and
  /// everything included before, so one SourceRange names a place in either
  /// and diagnostics name the right file. Const: including adds no text of
  /// this file's own.
  uint32_t include(std::shared_ptr<const SourceFile> file) const;
  /// The file holding global offset `offset` (this one or an included one),
  /// and the offset within it.
  std::pair<const SourceFile *, uint32_t> locate(uint32_t offset) const;
  /// The global offset of a position in the file named `name` (this one or
  /// an included one); nullopt-like UINT32_MAX when no such file.
  uint32_t offsetIn(const std::string &name, LineCol position) const;

private:
  std::string name_;
  std::string text_;
  std::vector<uint32_t> lineStarts_;
  struct Included {
    uint32_t base;
    std::shared_ptr<const SourceFile> file;
  };
  mutable std::vector<Included> included_;
};

} // namespace optdsl
