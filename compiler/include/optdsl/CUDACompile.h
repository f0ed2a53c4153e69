// A rule → its CUDA kernels (optrt::CudaKernels): PTX per architecture from
// LLVM's NVPTX backend, and a cubin per architecture where ptxas is found.
// Needs libdevice from a CUDA toolkit (nvvm/libdevice/libdevice.10.bc) for
// the math functions; never needs a GPU or a driver.
#pragma once

#include "optdsl/MLIRGen.h"
#include "optdsl/Sema.h"
#include "optdsl/Transforms/Passes.h"
#include "optrt/CudaKernels.h"

#include <optional>
#include <string>
#include <vector>

namespace optdsl {

struct CudaCompileOptions {
  std::vector<std::string> archs = {"sm_80", "sm_90"};
  /// CUDA toolkit root; empty: $CUDA_HOME, $CUDA_PATH, then /usr/local/cuda.
  std::string toolkitPath;
  /// Assemble each PTX with ptxas into a cubin when ptxas is found.
  bool assemble = true;
  /// The storage layout (optrt/Layout.h's written form) the kernels read
  /// and write; refused by name when the rule cannot take it.
  std::string layout = "f32";
};

/// The toolkit root that holds libdevice, or nullopt.
std::optional<std::string> findCudaToolkit(const std::string &preferred = "");
/// ptxas: $OPTDSL_PTXAS, the toolkit's bin/, then PATH; nullopt if absent.
std::optional<std::string> findPtxas(const std::string &toolkitPath = "");
/// Runs ptxas on `ptx` for `arch`; returns the cubin. Throws
/// std::runtime_error with ptxas's own messages when it fails.
std::string assemblePtx(const std::string &ptxas, const std::string &ptx, const std::string &arch);

/// Throws std::runtime_error with the compiler's diagnostics on failure.
optrt::CudaKernels cudaCompile(const CheckedRule &rule, const FixedHypers &fixed = {},
                               const CudaCompileOptions &options = {});

/// The generated module at a stage, for optc: "gpu" (gpu.module before
/// lowering) or "nvvm" (after). Throws like cudaCompile.
std::string cudaModuleText(const CheckedRule &rule, const FixedHypers &fixed, const std::string &stage,
                           const std::string &layout = "f32");

} // namespace optdsl
