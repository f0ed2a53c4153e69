#include "optdsl/KernelGen.h"

#include "mlir/Conversion/Passes.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Transforms/Passes.h"

namespace optdsl {

mlir::LogicalResult lowerToLLVMDialect(mlir::ModuleOp module) {
  // No fast-math anywhere: arith ops carry no fastmath flags, so LLVM keeps
  // every operation IEEE (no FMA contraction, correctly rounded sqrt and
  // division) and the kernels match the f32 semantics of the rule exactly.
  mlir::PassManager pm(module.getContext());
  pm.addPass(mlir::createCanonicalizerPass());
  pm.addPass(mlir::createCSEPass());
  pm.addPass(mlir::createConvertSCFToCFPass());
  pm.addPass(mlir::createConvertVectorToLLVMPass());
  pm.addPass(mlir::createConvertMathToLLVMPass());
  pm.addPass(mlir::createArithToLLVMConversionPass());
  pm.addPass(mlir::createConvertFuncToLLVMPass());
  pm.addPass(mlir::createConvertControlFlowToLLVMPass());
  pm.addPass(mlir::createReconcileUnrealizedCastsPass());
  return pm.run(module);
}

} // namespace optdsl
