#include "optdsl/CpuPipeline.h"

#include "optdsl/MLIRDiagnostics.h"
#include "optdsl/MLIRGen.h"
#include "optdsl/Transforms/Passes.h"

#include "mlir/Pass/PassManager.h"

#include <sstream>
#include <stdexcept>

namespace optdsl {

CpuKernelModule buildCpuKernels(mlir::MLIRContext &context, const CheckedRule &rule, const FixedHypers &fixed,
                                const std::vector<std::string> &layouts, CpuVectorIsa isa) {
  DiagnosticEngine diags(*rule.source);
  MLIRDiagnosticBridge bridge(context, diags);
  auto fail = [&](const std::string &what) {
    std::ostringstream rendered;
    diags.print(rendered);
    return std::runtime_error("cannot compile rule '" + rule.name() + "': " + what + "\n" +
                              rendered.str());
  };
  std::string failure;
  mlir::OwningOpRef<mlir::ModuleOp> optModule = buildPreparedModule(context, rule, fixed, failure);
  if (!optModule)
    throw fail(failure);
  CpuKernelModule result;
  result.module = buildKernels(*optModule, result.signature, layouts, isa);
  if (!result.module)
    throw fail("kernel generation failed");
  return result;
}

CpuKernelModule buildCpuKernelModule(mlir::MLIRContext &context, const CheckedRule &rule,
                                     const FixedHypers &fixed,
                                     const std::vector<std::string> &layouts, CpuVectorIsa isa) {
  CpuKernelModule result = buildCpuKernels(context, rule, fixed, layouts, isa);
  // Lowering fails only on a bug of KernelGen (no located error to show).
  if (mlir::failed(lowerToLLVMDialect(*result.module)))
    throw std::runtime_error("cannot compile rule '" + rule.name() + "': lowering to the LLVM dialect failed");
  return result;
}

bool checkKernels(const CheckedRule &rule, const FixedHypers &fixed, const std::vector<std::string> &layouts,
                  std::ostream &errors) {
  mlir::MLIRContext context;
  DiagnosticEngine diags(*rule.source);
  MLIRDiagnosticBridge bridge(context, diags);
  std::string failure;
  try {
    mlir::OwningOpRef<mlir::ModuleOp> optModule = buildPreparedModule(context, rule, fixed, failure);
    KernelSignature signature;
    if (optModule && !buildKernels(*optModule, signature, layouts))
      failure = "kernel generation failed";
  } catch (const std::invalid_argument &e) {
    failure = e.what();
  }
  diags.print(errors);
  if (failure.empty())
    return true;
  if (diags.errorCount() == 0) // a failure without a located error: say what failed
    errors << "optc: error: cannot compile rule '" << rule.name() << "': " << failure << "\n";
  return false;
}

} // namespace optdsl
