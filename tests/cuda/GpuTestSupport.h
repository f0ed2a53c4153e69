// What the GPU tests share: the GPU (or why there is none, for GTEST_SKIP),
// device arrays, and the rules compiled for host and device.
#pragma once

#include "optdsl/CUDACompile.h"
#include "optdsl/JIT.h"
#include "optrt/CudaKernels.h"
#include "optrt/CudaOptimizer.h"
#include "optrt/Layout.h"
#include "optrt/RuleKernels.h"

#include "cuda/DeviceMemory.h"
#include "cuda/Driver.h"

#include <cstdint>
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

/// n elements of dtype as raw bytes on the host and on the device; on the
/// device one element past a 256-byte boundary when `misaligned` (the
/// kernels' one-element path, as for a tensor of a flat parameter store).
struct StoredArray {
  std::vector<uint8_t> host;
  size_t offset;
  DeviceFloats device;
  StoredArray(optrt::Dtype dtype, const std::vector<float> &values, bool misaligned);
  optrt::DevicePtr address() const { return device.at(0) + offset; }
  std::vector<uint8_t> downloaded() const;
};

/// The first element whose bits differ, or -1. NaN matches any NaN: x86
/// propagates an operand's payload where PTX arithmetic returns the
/// canonical NaN, so a NaN the update produces (from a NaN or Inf gradient)
/// has other bits on each side, in f32 and in bf16/f16 storage alike.
long firstDifference(const std::vector<float> &a, const std::vector<float> &b);

/// Stored values decoded (exact, one f32 per bf16/f16/f32 pattern).
std::vector<float> decoded(optrt::Dtype dtype, const std::vector<uint8_t> &bytes, size_t n);

/// The driver's graph-capture entry points (not part of optrt's Driver: the
/// runtime never captures; a trainer does), looked up in the loaded libcuda.
struct GraphApi {
  optrt::cuda::CUresult (*streamCreate)(optrt::cuda::CUstream *, unsigned);
  optrt::cuda::CUresult (*beginCapture)(optrt::cuda::CUstream, int);
  optrt::cuda::CUresult (*endCapture)(optrt::cuda::CUstream, void **);
  optrt::cuda::CUresult (*instantiate)(void **, void *, unsigned long long);
  optrt::cuda::CUresult (*launch)(void *, optrt::cuda::CUstream);
  /// Null (with `reason`) when an entry point is missing.
  static const GraphApi *get(std::string &reason);
};

struct CompiledRule {
  CheckedRule rule;
  std::shared_ptr<const optrt::RuleKernels> host;
  std::shared_ptr<const optrt::CudaKernels> device;
};

/// dsl/<name>.opt, compiled once per process.
const CompiledRule &compiledRule(const std::string &name);

} // namespace optdsl::gputest
