// The NCCL engine's mean: the rank's own part of a summed reduce-scatter
// divided by the number of ranks on the device (DivideKernels.ptx), because
// NCCL's own average multiplies by 1/N before adding (NcclCommunicator.h).
#pragma once

#include "../cuda/Driver.h"
#include "optrt/Layout.h"

namespace optrt::nccl {

/// DivideKernels.ptx loaded into one context.
class DivideKernels {
public:
  /// Loads the module into `context` (made current for the call). Throws
  /// CudaError when the driver refuses it.
  DivideKernels(const cuda::Driver &d, cuda::CUcontext context);
  ~DivideKernels();
  DivideKernels(const DivideKernels &) = delete;
  DivideKernels &operator=(const DivideKernels &) = delete;

  /// Enqueues data[i] = data[i] / divisor for i < count on `stream`, in
  /// `dtype` (F32, BF16 or F16; one division in f32, then rounded to nearest
  /// even in the dtype), with the context current. Nothing for count 0.
  void divide(cuda::CUdeviceptr data, size_t count, Dtype dtype, float divisor, cuda::CUstream stream) const;

private:
  const cuda::Driver &d_;
  cuda::CUcontext context_;
  cuda::CUmodule module_ = nullptr;
  cuda::CUfunction f32_ = nullptr, bf16_ = nullptr, f16_ = nullptr;
};

} // namespace optrt::nccl
