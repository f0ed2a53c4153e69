// The kernel artifact: one shared library per rule exporting the C ABI of
// runtime/include/optrt/artifact_abi.h (`optc FILE --emit=so`). The kernels
// are compiled as for the JIT; a constant descriptor emitted next to them in
// LLVM IR tells a loader everything else. The object is linked into a shared
// library by the system's C compiler driver ($OPTDSL_LINKER, default cc).
#pragma once

#include "optdsl/KernelGen.h"
#include "optrt/CudaKernels.h"
#include "optdsl/Sema.h"
#include "optdsl/Transforms/Passes.h"

#include "llvm/IR/Module.h"
#include "llvm/Target/TargetMachine.h"

#include <map>
#include <memory>

#include <string>
#include <vector>

namespace optdsl {

/// The kernels of one CPU in a fat artifact: kernel p of layout L is
/// kernelFunctionName(rule, p, L) + suffix.
struct CpuVariant {
  std::string cpu;      // as written: "x86-64-v4+avx512vbmi+avx512bf16"
  std::string features; // requiredCpuFeatures of its target machine
  std::string suffix;   // "" for the baseline
};

/// The descriptor's contents beyond the kernels' signature.
struct ArtifactInfo {
  std::string cpu;          // the CPU name the code was compiled for (the baseline of a fat one)
  std::string cpuFeatures;  // requiredCpuFeatures of the target machine
  /// Best first, the baseline last; empty for a single-CPU artifact.
  std::vector<CpuVariant> variants;
  std::vector<std::string> layouts; // canonical layout names, each compiled in
  /// The CUDA kernels of each layout (by canonical name); empty without the
  /// CUDA target.
  std::map<std::string, std::shared_ptr<const optrt::CudaKernels>> cuda;
};

/// Adds the descriptor and the two exported functions (optdsl_abi_version,
/// optdsl_artifact_descriptor) to a module holding the kernels of `signature`, and
/// hides every other symbol. Throws std::logic_error when a kernel function
/// the signature promises is missing from the module.
void addArtifactDescriptor(llvm::Module &module, const KernelSignature &signature,
                           const ArtifactInfo &info);

/// Links an object file into a shared library at `output`. Throws
/// std::runtime_error naming the linker and its exit status.
void linkSharedLibrary(const std::string &objectPath, const std::string &output);

struct ArtifactOptions {
  /// "portable" (kernels for every x86-64 level, the loader picks: the
  /// default), "host", or one CPU (createCpuTargetMachine).
  std::string cpu = "portable";
  std::vector<std::string> layouts = {"f32"}; // written layouts (optrt/Layout.h)
  FixedHypers fixed;
  /// Also embed CUDA kernels (PTX for sm_80 and sm_90, cubins where ptxas
  /// is found): needs the CUDA toolkit's libdevice, never a GPU.
  bool cuda = false;
};

/// The artifact's code before it becomes an object: kernels plus
/// descriptor, optimised for the target machine.
struct ArtifactModule {
  std::unique_ptr<llvm::TargetMachine> machine;
  std::unique_ptr<llvm::Module> module;
};

/// Throws as buildArtifact.
ArtifactModule compileArtifactModule(const CheckedRule &rule, const ArtifactOptions &options,
                                     llvm::LLVMContext &llvmContext);

/// Checked rule → kernel artifact at `output`. Throws std::invalid_argument
/// for bad options (unknown CPU, a layout this compiler cannot build yet, a
/// fixed hyper the rule lacks) and std::runtime_error carrying the
/// diagnostics when compilation fails.
void buildArtifact(const CheckedRule &rule, const ArtifactOptions &options,
                   const std::string &output);

} // namespace optdsl
