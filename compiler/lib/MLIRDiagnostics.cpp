#include "optdsl/MLIRDiagnostics.h"

#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/Location.h"
#include "llvm/Support/raw_ostream.h"

namespace optdsl {

MLIRDiagnosticBridge::MLIRDiagnosticBridge(mlir::MLIRContext &context, DiagnosticEngine &diags)
    : diags_(diags), handler_(&context, [this](mlir::Diagnostic &diagnostic) {
        report(diagnostic, false);
        for (mlir::Diagnostic &note : diagnostic.getNotes())
          report(note, true);
        return mlir::success();
      }) {
  // The source line and caret say where; a dump of the operation would not help a user.
  context.printOpOnDiagnostic(false);
}

void MLIRDiagnosticBridge::report(mlir::Diagnostic &diagnostic, bool isNote) {
  std::string message = diagnostic.str();
  SourceRange range{0, 0};
  auto fileLoc = diagnostic.getLocation()->findInstanceOf<mlir::FileLineColLoc>();
  uint32_t offset = fileLoc ? diags_.file().offsetIn(fileLoc.getFilename().str(), {fileLoc.getLine(), fileLoc.getColumn()})
                            : UINT32_MAX;
  if (offset != UINT32_MAX) {
    range = {offset, offset + 1};
  } else {
    // Not in the user's file (an internal location): say where it came from.
    std::string where;
    llvm::raw_string_ostream stream(where);
    stream << diagnostic.getLocation();
    message += " [at " + where + "]";
  }
  if (isNote || diagnostic.getSeverity() == mlir::DiagnosticSeverity::Note ||
      diagnostic.getSeverity() == mlir::DiagnosticSeverity::Remark)
    diags_.note(range, message);
  else if (diagnostic.getSeverity() == mlir::DiagnosticSeverity::Warning)
    diags_.warning(range, message);
  else
    diags_.error(range, message);
}

} // namespace optdsl
