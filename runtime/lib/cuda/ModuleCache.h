// A rule's CUDA module loaded into one context, with its kernel handles.
// Loaded once per (context, CudaKernels) and shared by every optimizer that
// uses them; unloaded when the last one goes.
#pragma once

#include "Driver.h"
#include "optrt/CudaKernels.h"

#include <memory>
#include <string>
#include <vector>

namespace optrt::cuda {

struct LoadedModule {
  std::shared_ptr<const CudaKernels> kernels; // keeps the cache key alive
  const Driver *driver = nullptr;
  CUcontext context = nullptr;
  CUmodule module = nullptr;
  std::string image; // "cubin sm_90", "ptx sm_90 (JIT)"
  std::vector<CUfunction> uniforms, element, finish; // finish[p] null without reductions
  std::vector<int> elementBlocksPerSM; // resident blocks of element[p] per multiprocessor
  CUfunction scalars = nullptr, advance = nullptr;
  // The training step's gradient read and decision; null for a rule built
  // without the step hypers.
  CUfunction gradStats = nullptr, stepOptions = nullptr;
  int gradStatsBlocksPerSM = 1; // resident blocks of gradStats per multiprocessor
  ~LoadedModule();
};

/// Picks the image for a GPU of compute capability major.minor: a cubin of
/// the same major version and no newer minor (the highest such), else the
/// PTX of the highest arch not newer than the GPU. Returns the index into
/// kernels.images and whether it is the cubin; index -1 when none fits.
struct ImageChoice {
  int index = -1;
  bool cubin = false;
};
ImageChoice chooseImage(const CudaKernels &kernels, int major, int minor);

/// Throws CudaError: NoBinaryForGpu, DriverTooOld (with the PTX ISA version
/// and the driver's version), DriverCall with the JIT's log.
std::shared_ptr<const LoadedModule> loadModule(const Driver &d, CUcontext context, CUdevice device,
                                               std::shared_ptr<const CudaKernels> kernels);

} // namespace optrt::cuda
