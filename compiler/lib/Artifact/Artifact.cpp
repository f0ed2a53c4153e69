#include "optdsl/Artifact.h"

#include "optdsl/CUDACompile.h"
#include "optdsl/CpuPipeline.h"
#include "optdsl/NativeCode.h"

#include "mlir/Target/LLVMIR/Dialect/Builtin/BuiltinToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/LLVMIR/LLVMToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Export.h"
#include "llvm/IR/LLVMContext.h"
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

ArtifactModule compileArtifactModule(const CheckedRule &rule, const ArtifactOptions &options,
                                     llvm::LLVMContext &llvmContext) {
  ArtifactModule result;
  ArtifactInfo info;
  result.machine = createCpuTargetMachine(options.cpu);
  llvm::TargetMachine *machine = result.machine.get();
  info.cpu = machine->getTargetCPU().str();
  info.cpuFeatures = requiredCpuFeatures(*machine);

  mlir::MLIRContext context;
  // Layouts are parsed and checked against the rule by the kernel builder,
  // which also adds each q8 layout's small-tensor fallback.
  const llvm::MCSubtargetInfo &subtarget = *machine->getMCSubtargetInfo();
  CpuKernelModule kernels = buildCpuKernelModule(
      context, rule, options.fixed, options.layouts,
      {.avx512 = subtarget.checkFeatures("+avx512f"), .avx512vbmi = subtarget.checkFeatures("+avx512bw,+avx512vbmi"),
       .avx512bf16 = subtarget.checkFeatures("+avx512f,+avx512bf16")});
  for (const KernelSignature::Layout &layout : kernels.signature.layouts) {
    info.layouts.push_back(layout.name);
    // Each layout's CUDA kernels (small-tensor fallbacks included) are a
    // device module of their own.
    if (options.cuda) {
      CudaCompileOptions cudaOptions;
      cudaOptions.layout = layout.name;
      info.cuda[layout.name] = std::make_shared<const optrt::CudaKernels>(cudaCompile(rule, options.fixed, cudaOptions));
    }
  }
  mlir::registerBuiltinDialectTranslation(context);
  mlir::registerLLVMDialectTranslation(context);
  result.module = mlir::translateModuleToLLVMIR(*kernels.module, llvmContext);
  if (!result.module)
    throw std::runtime_error("cannot compile rule '" + rule.name() + "': translation to LLVM IR failed");
  addArtifactDescriptor(*result.module, kernels.signature, info);
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
