// optc-opt: runs MLIR passes over opt-dialect IR, one at a time if asked,
// so that each pass can be lit-tested alone (as mlir-opt does upstream).
#include "optdsl/MLIRGen.h"
#include "optdsl/Transforms/Passes.h"

#include "mlir/Tools/mlir-opt/MlirOptMain.h"
#include "mlir/Transforms/Passes.h"

int main(int argc, char **argv) {
  mlir::registerTransformsPasses();
  optdsl::registerOptDSLPasses();
  mlir::DialectRegistry registry;
  optdsl::registerOptDSLDialects(registry);
  return mlir::asMainReturnCode(
      mlir::MlirOptMain(argc, argv, "OptDSL pass driver for the opt dialect\n", registry));
}
