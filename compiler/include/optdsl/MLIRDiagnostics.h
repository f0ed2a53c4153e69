// Sends MLIR's diagnostics (verifier, passes, kernel generation) through the
// project's DiagnosticEngine, so an error found in the IR prints like a
// parser or sema error: file:line:col, the source line, a caret.
#pragma once

#include "optdsl/Diagnostics.h"

#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"

namespace optdsl {

class MLIRDiagnosticBridge {
public:
  MLIRDiagnosticBridge(mlir::MLIRContext &context, DiagnosticEngine &diags);

private:
  void report(mlir::Diagnostic &diagnostic, bool isNote);

  DiagnosticEngine &diags_;
  mlir::ScopedDiagnosticHandler handler_;
};

} // namespace optdsl
