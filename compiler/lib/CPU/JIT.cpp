#include "optdsl/JIT.h"

#include "ParallelObjects.h"
#include "optdsl/CpuPipeline.h"

#include "mlir/IR/MLIRContext.h"
#include "mlir/Target/LLVMIR/Dialect/Builtin/BuiltinToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/LLVMIR/LLVMToLLVMIRTranslation.h"
#include "llvm/ExecutionEngine/Orc/ExecutionUtils.h"
#include "llvm/ExecutionEngine/Orc/LLJIT.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/TargetParser/Host.h"
#include "llvm/Support/raw_ostream.h"

#include <mutex>
#include <stdexcept>
#include <thread>

namespace optdsl {
namespace {

/// The table plus what its function pointers live in.
struct JitRuleKernels : optrt::RuleKernels {
  std::unique_ptr<mlir::MLIRContext> context;
  std::unique_ptr<llvm::orc::LLJIT> jit;
};

void initializeNativeTarget() {
  static std::once_flag once;
  std::call_once(once, [] {
    llvm::InitializeNativeTarget();
    llvm::InitializeNativeTargetAsmPrinter();
  });
}

template <typename Fn> Fn lookup(llvm::orc::LLJIT &jit, const std::string &name) {
  auto symbol = jit.lookup(name);
  if (!symbol) {
    std::string message = llvm::toString(symbol.takeError());
    throw std::runtime_error("JIT: no symbol '" + name + "': " + message);
  }
  return symbol->toPtr<Fn>();
}

/// Throws std::runtime_error naming the rule for a failed LLVM step.
template <typename T> T orThrow(llvm::Expected<T> value, const std::string &rule, const char *what) {
  if (!value)
    throw std::runtime_error("cannot compile rule '" + rule + "': JIT: " + what + ": " +
                             llvm::toString(value.takeError()));
  return std::move(*value);
}

/// The host's cores, for code generation (a rule has a handful of kernels).
unsigned codegenThreads() { return std::max(1u, std::min(8u, std::thread::hardware_concurrency())); }

} // namespace

std::shared_ptr<const optrt::RuleKernels> jitCompile(const CheckedRule &rule,
                                                      const FixedHypers &fixed,
                                                      const std::vector<std::string> &layouts) {
  initializeNativeTarget();
  auto result = std::make_shared<JitRuleKernels>();
  result->context = std::make_unique<mlir::MLIRContext>();
  mlir::MLIRContext &context = *result->context;
  // The ExecutionEngine compiles for this host with its features.
  llvm::StringMap<bool> host = llvm::sys::getHostCPUFeatures();
  CpuKernelModule kernels = buildCpuKernels(
      context, rule, fixed, layouts,
      {.avx512 = host.lookup("avx512f"), .avx512vbmi = host.lookup("avx512bw") && host.lookup("avx512vbmi"),
       .avx512bf16 = host.lookup("avx512f") && host.lookup("avx512bf16")});
  mlir::registerBuiltinDialectTranslation(context);
  mlir::registerLLVMDialectTranslation(context);

  // For this host, with its features, as mlir::ExecutionEngine did.
  llvm::orc::JITTargetMachineBuilder target =
      orThrow(llvm::orc::JITTargetMachineBuilder::detectHost(), rule.name(), "detecting the host");
  target.setCodeGenOptLevel(llvm::CodeGenOptLevel::Aggressive);
  llvm::DataLayout dataLayout = orThrow(target.getDefaultDataLayoutForTarget(), rule.name(), "the data layout");
  // The kernels lowered, optimised and compiled in parts on the host's
  // cores (ParallelObjects.h), then linked. Artifacts, compiled once, keep
  // one module and O3 (NativeCode.cpp).
  std::vector<std::unique_ptr<llvm::MemoryBuffer>> objects;
  try {
    objects = compileInParallel(*kernels.module, target, dataLayout, codegenThreads());
  } catch (const std::runtime_error &e) {
    throw std::runtime_error("cannot compile rule '" + rule.name() + "': " + e.what());
  }
  result->jit = orThrow(llvm::orc::LLJITBuilder().setJITTargetMachineBuilder(target).create(), rule.name(),
                        "creating the JIT");
  llvm::orc::LLJIT &jit = *result->jit;
  // libm and the C runtime (expf, memset, ...) from this process.
  jit.getMainJITDylib().addGenerator(orThrow(
      llvm::orc::DynamicLibrarySearchGenerator::GetForCurrentProcess(dataLayout.getGlobalPrefix()), rule.name(),
      "finding the process's symbols"));
  for (std::unique_ptr<llvm::MemoryBuffer> &object : objects)
    if (llvm::Error error = jit.addObjectFile(std::move(object)))
      throw std::runtime_error("cannot compile rule '" + rule.name() + "': JIT: " + llvm::toString(std::move(error)));

  const KernelSignature &signature = kernels.signature;
  result->name = signature.rule;
  result->hypers = signature.hypers;
  result->states = signature.states;
  result->reductions = signature.reductions;
  result->inputs = signature.inputs;
  result->phaseDomains = signature.phaseDomains;
  result->axisReductions = signature.axisReductions;
  result->columnSlots = signature.columnSlots;
  result->usesRandom = signature.usesRandom;
  result->numPhases = signature.numPhases;
  result->numUniforms = signature.numUniforms;
  result->init = lookup<optrt::InitFn>(jit, initFunctionName(signature.rule));
  for (int phase = 0; phase < signature.numPhases; ++phase)
    result->uniforms.push_back(lookup<optrt::UniformsFn>(jit, uniformsFunctionName(signature.rule, phase)));
  for (const KernelSignature::Layout &layout : signature.layouts) {
    optrt::LayoutKernels kernels{layout.name, layout.buffers, {}, nullptr}; // the JIT makes no CUDA kernels
    for (int phase = 0; phase < signature.numPhases; ++phase)
      kernels.kernels.push_back(lookup<optrt::KernelFn>(jit, kernelFunctionName(signature.rule, phase, layout.name)));
    result->layouts.push_back(std::move(kernels));
  }
  result->scalarUpdate = lookup<optrt::ScalarUpdateFn>(jit, scalarUpdateFunctionName(signature.rule));
  return result;
}

std::shared_ptr<const optrt::RuleKernels> jitCompileFile(const std::string &path,
                                                          const FixedHypers &fixed,
                                                          const std::vector<std::string> &layouts) {
  return jitCompile(loadRuleFile(path), fixed, layouts);
}

} // namespace optdsl
