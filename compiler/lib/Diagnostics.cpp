#include "optdsl/Diagnostics.h"

#include <algorithm>
#include <ostream>

namespace optdsl {

void DiagnosticEngine::error(SourceRange range, std::string message) {
  diagnostics_.push_back({Severity::Error, range, std::move(message)});
  ++errors_;
}

void DiagnosticEngine::warning(SourceRange range, std::string message) {
  diagnostics_.push_back({Severity::Warning, range, std::move(message)});
  ++warnings_;
}

void DiagnosticEngine::note(SourceRange range, std::string message) {
  diagnostics_.push_back({Severity::Note, range, std::move(message)});
}

static const char *severityName(Severity severity) {
  switch (severity) {
  case Severity::Error: return "error";
  case Severity::Warning: return "warning";
  case Severity::Note: return "note";
  }
  return "error";
}

/// The most bytes of a source line a diagnostic shows.
static constexpr uint32_t kMaxShownLine = 256;

// Control bytes (binary input) would garble the terminal and shift the caret;
// each is shown as one '?' so columns still line up.
static char printable(char c) {
  unsigned char u = static_cast<unsigned char>(c);
  return (u < 0x20 && c != '\t') || u == 0x7f ? '?' : c;
}

std::string DiagnosticEngine::render(const Diagnostic &diagnostic) const {
  // The range in the file that holds it (a transform the rule applies, or the rule's own).
  auto [file, begin] = file_.locate(diagnostic.range.begin);
  SourceRange range{begin, begin + (std::max(diagnostic.range.end, diagnostic.range.begin) - diagnostic.range.begin)};
  LineCol start = file->lineCol(range.begin);
  std::string out = file->name() + ":" + std::to_string(start.line) + ":" +
                    std::to_string(start.column) + ": " + severityName(diagnostic.severity) +
                    ": " + diagnostic.message + "\n";
  std::string_view line = file->lineText(start.line);
  uint32_t caretAt = start.column - 1;
  // Of a very long line (generated or hostile input) only the part around
  // the caret is shown: every diagnostic repeats its line, and 20000 errors on
  // one 40 KB line would otherwise print 800 MB. Start on a character.
  if (line.size() > kMaxShownLine) {
    uint32_t from = caretAt > kMaxShownLine / 2 ? caretAt - kMaxShownLine / 2 : 0;
    from = std::min(from, static_cast<uint32_t>(line.size()) - kMaxShownLine);
    while (from < caretAt && (static_cast<unsigned char>(line[from]) & 0xC0) == 0x80)
      ++from;
    line = line.substr(from, kMaxShownLine);
    caretAt -= from;
  }
  std::string shown, marker;
  for (char c : line)
    shown += printable(c);
  // One column per character: UTF-8 continuation bytes take no column.
  for (uint32_t i = 0; i < caretAt && i < line.size(); ++i)
    if ((static_cast<unsigned char>(line[i]) & 0xC0) != 0x80)
      marker += line[i] == '\t' ? '\t' : ' ';
  marker += '^';
  // Tildes cover the rest of the range on this line only.
  uint32_t rangeEnd = std::max(range.end, range.begin + 1);
  uint32_t lineEndOffset = range.begin - caretAt + static_cast<uint32_t>(line.size());
  uint32_t last = std::min(rangeEnd, lineEndOffset);
  for (uint32_t i = range.begin + 1; i < last; ++i)
    marker += '~';
  out += shown + "\n" + marker + "\n";
  return out;
}

void DiagnosticEngine::print(std::ostream &out) const {
  // Parser and sema report in separate sweeps; show everything in source
  // order, each note still right after the diagnostic it belongs to.
  std::vector<std::pair<size_t, size_t>> groups; // [first, last) indices
  for (size_t i = 0; i < diagnostics_.size(); ++i) {
    if (diagnostics_[i].severity != Severity::Note || groups.empty())
      groups.push_back({i, i + 1});
    else
      groups.back().second = i + 1;
  }
  std::stable_sort(groups.begin(), groups.end(), [&](const auto &a, const auto &b) {
    return diagnostics_[a.first].range.begin < diagnostics_[b.first].range.begin;
  });
  for (const auto &[first, last] : groups)
    for (size_t i = first; i < last; ++i)
      out << render(diagnostics_[i]);
}

} // namespace optdsl
