// One diagnostic engine for the parser, sema and (later) the MLIR verifier.
// Diagnostics print like clang: `file:line:col: error: message`, the source
// line, and a caret with tildes under the range; notes follow their error.
#pragma once

#include "optdsl/Source.h"

#include <iosfwd>
#include <string>
#include <vector>

namespace optdsl {

enum class Severity { Error, Warning, Note };

struct Diagnostic {
  Severity severity;
  SourceRange range;
  std::string message;
};

class DiagnosticEngine {
public:
  explicit DiagnosticEngine(const SourceFile &file) : file_(file) {}

  void error(SourceRange range, std::string message);
  void warning(SourceRange range, std::string message);
  /// Attaches to the diagnostic reported just before.
  void note(SourceRange range, std::string message);

  unsigned errorCount() const { return errors_; }
  unsigned warningCount() const { return warnings_; }
  bool hasErrors() const { return errors_ != 0; }
  const std::vector<Diagnostic> &diagnostics() const { return diagnostics_; }
  const SourceFile &file() const { return file_; }

  /// Renders one diagnostic with its source line and caret.
  std::string render(const Diagnostic &diagnostic) const;
  void print(std::ostream &out) const;

private:
  const SourceFile &file_;
  std::vector<Diagnostic> diagnostics_;
  unsigned errors_ = 0;
  unsigned warnings_ = 0;
};

} // namespace optdsl
