#include "optdsl/Version.h"

#include "mlir/IR/BuiltinDialect.h"
#include "mlir/IR/MLIRContext.h"
#include "llvm/Config/llvm-config.h"
#include "llvm/TargetParser/Host.h"

namespace optdsl {

std::string versionString() {
  // Asking the linked libraries themselves (rather than a header macro)
  // proves at run time that libMLIR and libLLVM are the ones loaded.
  mlir::MLIRContext context;
  bool mlirWorks = context.getOrLoadDialect<mlir::BuiltinDialect>() != nullptr;
  return std::string("OptDSL 0.1.0 (MLIR/LLVM ") + LLVM_VERSION_STRING +
         (mlirWorks ? "" : ", MLIR context failed") + "; host CPU " +
         llvm::sys::getHostCPUName().str() + ")";
}

} // namespace optdsl
