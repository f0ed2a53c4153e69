#include "DivideKernels.h"

#include "../cuda/DeviceMemory.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace optrt::nccl {

extern const char kDivideKernelsPtx[]; // DivideKernels.ptx, embedded by CMake

DivideKernels::DivideKernels(const cuda::Driver &d, cuda::CUcontext context) : d_(d), context_(context) {
  cuda::ContextScope scope(d, context);
  d.check(d.cuModuleLoadDataEx(&module_, kDivideKernelsPtx, 0, nullptr, nullptr),
          "cuModuleLoadDataEx (the NCCL engine's division kernels)");
  try {
    d.check(d.cuModuleGetFunction(&f32_, module_, "optrt_divide_f32"), "cuModuleGetFunction");
    d.check(d.cuModuleGetFunction(&bf16_, module_, "optrt_divide_bf16"), "cuModuleGetFunction");
    d.check(d.cuModuleGetFunction(&f16_, module_, "optrt_divide_f16"), "cuModuleGetFunction");
  } catch (...) {
    d.cuModuleUnload(module_);
    throw;
  }
}

DivideKernels::~DivideKernels() {
  if (d_.cuCtxPushCurrent_v2(context_) == cuda::CUDA_SUCCESS) {
    d_.cuModuleUnload(module_);
    cuda::CUcontext popped = nullptr;
    d_.cuCtxPopCurrent_v2(&popped);
  }
}

void DivideKernels::divide(cuda::CUdeviceptr data, size_t count, Dtype dtype, float divisor,
                           cuda::CUstream stream) const {
  if (count == 0)
    return;
  cuda::CUfunction function = dtype == Dtype::F32 ? f32_ : dtype == Dtype::BF16 ? bf16_ : dtype == Dtype::F16 ? f16_ : nullptr;
  if (!function)
    throw std::invalid_argument("optrt NCCL communicator: no division kernel for " + dtypeName(dtype));
  // A grid-stride loop: enough blocks to fill any GPU, no more than needed.
  constexpr size_t kBlock = 256, kMostBlocks = 4096;
  size_t blocks = std::min((count + kBlock - 1) / kBlock, kMostBlocks);
  unsigned long long elements = count;
  void *args[] = {&data, &elements, &divisor};
  d_.check(d_.cuLaunchKernel(function, static_cast<unsigned>(blocks), 1, 1, kBlock, 1, 1, 0, stream, args, nullptr),
           "cuLaunchKernel (the NCCL engine's division)");
}

} // namespace optrt::nccl
