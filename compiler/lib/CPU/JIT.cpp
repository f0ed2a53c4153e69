#include "optdsl/JIT.h"

#include "optdsl/KernelGen.h"
#include "optdsl/MLIRDiagnostics.h"
#include "optdsl/MLIRGen.h"
#include "optdsl/Transforms/Passes.h"

#include "mlir/ExecutionEngine/ExecutionEngine.h"
#include "mlir/ExecutionEngine/OptUtils.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Target/LLVMIR/Dialect/Builtin/BuiltinToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/LLVMIR/LLVMToLLVMIRTranslation.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/Support/raw_ostream.h"

#include <mutex>
#include <sstream>
#include <stdexcept>

namespace optdsl {
namespace {

/// The table plus what its function pointers live in.
struct JitRuleKernels : optrt::RuleKernels {
  std::unique_ptr<mlir::MLIRContext> context;
  std::unique_ptr<mlir::ExecutionEngine> engine;
};

void initializeNativeTarget() {
  static std::once_flag once;
  std::call_once(once, [] {
    llvm::InitializeNativeTarget();
    llvm::InitializeNativeTargetAsmPrinter();
  });
}

template <typename Fn> Fn lookup(mlir::ExecutionEngine &engine, const std::string &name) {
  auto symbol = engine.lookup(name);
  if (!symbol) {
    std::string message = llvm::toString(symbol.takeError());
    throw std::runtime_error("JIT: no symbol '" + name + "': " + message);
  }
  return reinterpret_cast<Fn>(*symbol);
}

} // namespace

std::shared_ptr<const optrt::RuleKernels> jitCompile(const CheckedRule &rule,
                                                      const FixedHypers &fixed) {
  checkFixedHypers(rule, fixed);
  initializeNativeTarget();
  auto result = std::make_shared<JitRuleKernels>();
  result->context = std::make_unique<mlir::MLIRContext>();
  mlir::MLIRContext &context = *result->context;
  DiagnosticEngine diags(*rule.source);
  MLIRDiagnosticBridge bridge(context, diags);
  auto fail = [&](const std::string &what) -> std::runtime_error {
    std::ostringstream rendered;
    diags.print(rendered);
    return std::runtime_error("cannot compile rule '" + rule.name() + "': " + what + "\n" +
                              rendered.str());
  };

  mlir::OwningOpRef<mlir::ModuleOp> optModule = buildModule(context, rule);
  if (!optModule)
    throw fail("the opt module does not verify");
  mlir::PassManager prep(&context);
  buildKernelPrepPipeline(prep, fixed);
  if (mlir::failed(prep.run(*optModule)))
    throw fail("the opt passes failed");
  KernelSignature signature;
  mlir::OwningOpRef<mlir::ModuleOp> kernels = buildKernels(*optModule, signature);
  if (!kernels)
    throw fail("kernel generation failed");
  if (mlir::failed(lowerToLLVMDialect(*kernels)))
    throw fail("lowering to the LLVM dialect failed");
  mlir::registerBuiltinDialectTranslation(context);
  mlir::registerLLVMDialectTranslation(context);

  mlir::ExecutionEngineOptions options;
  options.transformer = mlir::makeOptimizingTransformer(3, 0, nullptr);
  options.jitCodeGenOptLevel = llvm::CodeGenOptLevel::Aggressive;
  auto engine = mlir::ExecutionEngine::create(*kernels, options);
  if (!engine)
    throw fail("JIT: " + llvm::toString(engine.takeError()));
  result->engine = std::move(*engine);

  result->name = signature.rule;
  result->hypers = signature.hypers;
  result->states = signature.states;
  result->reductions = signature.reductions;
  result->numPhases = signature.numPhases;
  result->numUniforms = signature.numUniforms;
  mlir::ExecutionEngine &jit = *result->engine;
  result->init = lookup<optrt::InitFn>(jit, initFunctionName(signature.rule));
  for (int phase = 0; phase < signature.numPhases; ++phase) {
    result->uniforms.push_back(lookup<optrt::UniformsFn>(jit, uniformsFunctionName(signature.rule, phase)));
    result->kernels.push_back(lookup<optrt::KernelFn>(jit, kernelFunctionName(signature.rule, phase)));
  }
  result->scalarUpdate = lookup<optrt::ScalarUpdateFn>(jit, scalarUpdateFunctionName(signature.rule));
  return result;
}

std::shared_ptr<const optrt::RuleKernels> jitCompileFile(const std::string &path,
                                                          const FixedHypers &fixed) {
  return jitCompile(loadRuleFile(path), fixed);
}

} // namespace optdsl
