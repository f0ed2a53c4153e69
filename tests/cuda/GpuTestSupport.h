// What the GPU tests share: the GPU (or why there is none, for GTEST_SKIP),
// device arrays, and the rules compiled for host and device.
#pragma once

#include "optdsl/CUDACompile.h"
#include "optdsl/JIT.h"
#include "optrt/CudaKernels.h"
#include "optrt/RuleKernels.h"

#include "cuda/DeviceMemory.h"
#include "cuda/Driver.h"

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace optdsl::gputest {

/// Device 0's primary context, current on the calling thread from the first
/// call on. Null when there is no GPU; `reason` then says why.
const optrt::cuda::Driver *gpu(std::string &reason);

/// Skips the current test, naming the reason, when there is no GPU.
#define OPTDSL_REQUIRE_GPU()                                                                    \
  do {                                                                                          \
    std::string why;                                                                            \
    if (!::optdsl::gputest::gpu(why))                                                           \
      GTEST_SKIP() << "no GPU: " << why;                                                        \
  } while (0)

/// n floats of device memory in the current context.
class DeviceFloats {
public:
  explicit DeviceFloats(size_t n);
  optrt::cuda::CUdeviceptr at(size_t index) const { return memory_.get() + index * sizeof(float); }
  void upload(size_t index, const float *data, size_t n);
  void download(size_t index, float *data, size_t n) const;

private:
  optrt::cuda::DeviceMemory memory_;
};

struct CompiledRule {
  CheckedRule rule;
  std::shared_ptr<const optrt::RuleKernels> host;
  std::shared_ptr<const optrt::CudaKernels> device;
};

/// dsl/<name>.opt, compiled once per process.
const CompiledRule &compiledRule(const std::string &name);

} // namespace optdsl::gputest
