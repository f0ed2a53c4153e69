#include "optdsl/Artifact.h"

#include "optdsl/CUDACompile.h"
#include "optdsl/CpuPipeline.h"
#include "optdsl/NativeCode.h"

#include "mlir/Target/LLVMIR/Dialect/Builtin/BuiltinToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/LLVMIR/LLVMToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Export.h"
#include "llvm/IR/LLVMContext.h"
#include "llvm/Linker/Linker.h"
#include "llvm/MC/MCSubtargetInfo.h"

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <set>
#include <stdexcept>

extern char **environ;

namespace optdsl {

namespace {

/// Runs argv[0] from PATH and waits; returns its exit status, or throws when
/// it cannot be started.
int runProgram(const std::vector<std::string> &args) {
  std::vector<char *> argv;
  for (const std::string &arg : args)
    argv.push_back(const_cast<char *>(arg.c_str()));
  argv.push_back(nullptr);
  pid_t pid;
  int error = posix_spawnp(&pid, argv[0], nullptr, nullptr, argv.data(), environ);
  if (error != 0)
    throw std::runtime_error("cannot run the linker '" + args[0] + "': " + std::strerror(error) +
                             " (set OPTDSL_LINKER to a C compiler driver, e.g. cc or clang)");
  int status = 0;
  while (waitpid(pid, &status, 0) < 0)
    if (errno != EINTR)
      throw std::runtime_error("waiting for the linker failed: " + std::string(std::strerror(errno)));
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

void writeFile(const std::string &path, const std::vector<char> &bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out)
    throw std::runtime_error("cannot write '" + path + "': " + std::strerror(errno));
}

} // namespace

void linkSharedLibrary(const std::string &objectPath, const std::string &output) {
  const char *linker = std::getenv("OPTDSL_LINKER");
  std::string driver = linker && *linker ? linker : "cc";
  // -lm: the uniform functions call pow/exp/log from the C math library.
  int status = runProgram({driver, "-shared", "-o", output, objectPath, "-lm"});
  if (status != 0)
    throw std::runtime_error("linking '" + output + "' failed: '" + driver + "' exited with status " +
                             std::to_string(status));
}

namespace {

CpuVectorIsa isaOf(const llvm::TargetMachine &machine) {
  const llvm::MCSubtargetInfo &subtarget = *machine.getMCSubtargetInfo();
  return {.avx512 = subtarget.checkFeatures("+avx512f"),
          .avx512vbmi = subtarget.checkFeatures("+avx512bw,+avx512vbmi"),
          .avx512bf16 = subtarget.checkFeatures("+avx512f,+avx512bf16")};
}

/// The CPU kernels of `rule` for `machine`, as an LLVM module.
std::unique_ptr<llvm::Module> kernelModule(const CheckedRule &rule, const ArtifactOptions &options,
                                           const llvm::TargetMachine &machine, llvm::LLVMContext &llvmContext,
                                           KernelSignature &signature) {
  mlir::MLIRContext context;
  // Layouts are parsed and checked against the rule by the kernel builder,
  // which also adds each q8 layout's small-tensor fallback.
  CpuKernelModule kernels = buildCpuKernelModule(context, rule, options.fixed, options.layouts, isaOf(machine));
  mlir::registerBuiltinDialectTranslation(context);
  mlir::registerLLVMDialectTranslation(context);
  std::unique_ptr<llvm::Module> module = mlir::translateModuleToLLVMIR(*kernels.module, llvmContext);
  if (!module)
    throw std::runtime_error("cannot compile rule '" + rule.name() + "': translation to LLVM IR failed");
  module->setTargetTriple(machine.getTargetTriple().str());
  module->setDataLayout(machine.createDataLayout());
  signature = std::move(kernels.signature);
  return module;
}

/// Makes `variant`'s module ready to link beside the baseline's: every
/// function it defines renamed with the variant's suffix and compiled for
/// its CPU (per-function target attributes, which LLVM's optimiser and code
/// generator honour), the host functions (the baseline's serve) dropped.
void prepareVariant(llvm::Module &module, const llvm::TargetMachine &machine, const CpuVariant &variant,
                    const KernelSignature &signature) {
  std::set<std::string> kernels;
  for (const KernelSignature::Layout &layout : signature.layouts)
    for (int phase = 0; phase < signature.numPhases; ++phase)
      kernels.insert(kernelFunctionName(signature.rule, phase, layout.name));
  std::vector<llvm::Function *> unused;
  for (llvm::Function &fn : module) {
    if (fn.isDeclaration())
      continue;
    if (!kernels.count(fn.getName().str())) {
      fn.setLinkage(llvm::GlobalValue::InternalLinkage); // kept only if a kernel calls it
      if (fn.use_empty())
        unused.push_back(&fn);
    }
    fn.setName(fn.getName() + variant.suffix);
    fn.addFnAttr("target-cpu", machine.getTargetCPU());
    fn.addFnAttr("target-features", machine.getTargetFeatureString());
  }
  for (llvm::Function *fn : unused)
    fn->eraseFromParent();
  for (llvm::GlobalVariable &global : module.globals())
    if (!global.isDeclaration())
      global.setLinkage(llvm::GlobalValue::InternalLinkage);
}

} // namespace

ArtifactModule compileArtifactModule(const CheckedRule &rule, const ArtifactOptions &options,
                                     llvm::LLVMContext &llvmContext) {
  ArtifactModule result;
  ArtifactInfo info;
  std::vector<std::string> cpus = options.cpu == kPortableCpu ? portableCpus() : std::vector<std::string>{options.cpu};
  // The baseline (the last CPU) holds the host functions and the descriptor.
  result.machine = createCpuTargetMachine(cpus.back());
  llvm::TargetMachine *machine = result.machine.get();
  info.cpu = machine->getTargetCPU().str();
  info.cpuFeatures = requiredCpuFeatures(*machine);
  KernelSignature signature;
  result.module = kernelModule(rule, options, *machine, llvmContext, signature);
  if (cpus.size() > 1) {
    for (size_t v = 0; v + 1 < cpus.size(); ++v) {
      std::unique_ptr<llvm::TargetMachine> variantMachine = createCpuTargetMachine(cpus[v]);
      CpuVariant variant{cpus[v], requiredCpuFeatures(*variantMachine), "__cpu" + std::to_string(v)};
      KernelSignature variantSignature;
      std::unique_ptr<llvm::Module> module =
          kernelModule(rule, options, *variantMachine, llvmContext, variantSignature);
      prepareVariant(*module, *variantMachine, variant, variantSignature);
      if (llvm::Linker::linkModules(*result.module, std::move(module)))
        throw std::runtime_error("cannot compile rule '" + rule.name() + "': linking the " + cpus[v] +
                                 " kernels failed");
      info.variants.push_back(variant);
    }
    info.variants.push_back({cpus.back(), info.cpuFeatures, ""});
  }
  for (const KernelSignature::Layout &layout : signature.layouts) {
    info.layouts.push_back(layout.name);
    // Each layout's CUDA kernels (small-tensor fallbacks included) are a
    // device module of their own.
    if (options.cuda) {
      CudaCompileOptions cudaOptions;
      cudaOptions.layout = layout.name;
      info.cuda[layout.name] = std::make_shared<const optrt::CudaKernels>(cudaCompile(rule, options.fixed, cudaOptions));
    }
  }
  addArtifactDescriptor(*result.module, signature, info);
  optimizeForTarget(*result.module, *machine);
  return result;
}

void buildArtifact(const CheckedRule &rule, const ArtifactOptions &options, const std::string &output) {
  llvm::LLVMContext llvmContext;
  ArtifactModule compiled = compileArtifactModule(rule, options, llvmContext);
  std::vector<char> object = emitNativeCode(*compiled.module, *compiled.machine, NativeFileKind::Object);

  // Link from a private temporary next to the output, then rename: a build
  // that fails or is interrupted never leaves a half-written library behind.
  std::string objectPath = output + ".o." + std::to_string(getpid());
  std::string libraryPath = output + ".tmp." + std::to_string(getpid());
  try {
    writeFile(objectPath, object);
    linkSharedLibrary(objectPath, libraryPath);
  } catch (...) {
    std::remove(objectPath.c_str());
    std::remove(libraryPath.c_str());
    throw;
  }
  std::remove(objectPath.c_str());
  if (std::rename(libraryPath.c_str(), output.c_str()) != 0) {
    int error = errno;
    std::remove(libraryPath.c_str());
    throw std::runtime_error("cannot write '" + output + "': " + std::strerror(error));
  }
}

} // namespace optdsl
