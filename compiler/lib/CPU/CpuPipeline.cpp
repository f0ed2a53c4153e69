#include "optdsl/CpuPipeline.h"

#include "optdsl/MLIRDiagnostics.h"
#include "optdsl/MLIRGen.h"
#include "optdsl/Transforms/Passes.h"

#include "mlir/Pass/PassManager.h"

#include <sstream>
#include <stdexcept>

namespace optdsl {

CpuKernelModule buildCpuKernelModule(mlir::MLIRContext &context, const CheckedRule &rule,
                                     const FixedHypers &fixed,
                                     const std::vector<std::string> &layouts, CpuVectorIsa isa) {
  DiagnosticEngine diags(*rule.source);
  MLIRDiagnosticBridge bridge(context, diags);
  auto fail = [&](const std::string &what) {
    std::ostringstream rendered;
    diags.print(rendered);
    return std::runtime_error("cannot compile rule '" + rule.name() + "': " + what + "\n" +
                              rendered.str());
  };
  checkFixedHypers(rule, fixed);
  mlir::OwningOpRef<mlir::ModuleOp> optModule = buildModule(context, rule);
  if (!optModule)
    throw fail("the opt module does not verify");
  mlir::PassManager prep(&context);
  buildKernelPrepPipeline(prep, fixed);
  if (mlir::failed(prep.run(*optModule)))
    throw fail("the opt passes failed");
  CpuKernelModule result;
  result.module = buildKernels(*optModule, result.signature, layouts, isa);
  if (!result.module)
    throw fail("kernel generation failed");
  if (mlir::failed(lowerToLLVMDialect(*result.module)))
    throw fail("lowering to the LLVM dialect failed");
  return result;
}

} // namespace optdsl
