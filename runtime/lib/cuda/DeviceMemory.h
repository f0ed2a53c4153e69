// RAII for the driver's context stack and device allocations, so that an
// exception between two driver calls neither leaks memory nor leaves the
// optimizer's context current on the caller's thread.
#pragma once

#include "Driver.h"

#include <utility>

namespace optrt::cuda {

/// Makes `context` current for a scope (push/pop, so the caller's current
/// context, if any, comes back).
class ContextScope {
public:
  ContextScope(const Driver &d, CUcontext context) : d_(d) {
    d_.check(d_.cuCtxPushCurrent_v2(context), "cuCtxPushCurrent_v2");
  }
  ~ContextScope() {
    CUcontext popped = nullptr;
    d_.cuCtxPopCurrent_v2(&popped); // nothing useful to do on failure in a destructor
  }
  ContextScope(const ContextScope &) = delete;
  ContextScope &operator=(const ContextScope &) = delete;

private:
  const Driver &d_;
};

/// One cuMemAlloc'ed block; freed with its context current.
class DeviceMemory {
public:
  DeviceMemory() = default;
  /// Throws CudaError(OutOfMemory) naming `what` when the device is full.
  DeviceMemory(const Driver &d, CUcontext context, size_t bytes, const char *what)
      : d_(&d), context_(context), bytes_(bytes) {
    if (bytes == 0)
      return;
    CUresult result = d.cuMemAlloc_v2(&ptr_, bytes);
    if (result == CUDA_ERROR_OUT_OF_MEMORY)
      throw CudaError(CudaErrc::OutOfMemory,
                      std::string("out of device memory for the ") + what + " (" +
                          std::to_string(bytes) + " bytes): cuMemAlloc_v2 failed: " +
                          d.errorName(result) + "; the optimizer's state is unchanged",
                      "cuMemAlloc_v2", result);
    d.check(result, "cuMemAlloc_v2");
  }
  ~DeviceMemory() { reset(); }
  DeviceMemory(DeviceMemory &&other) noexcept { swap(other); }
  DeviceMemory &operator=(DeviceMemory &&other) noexcept {
    DeviceMemory(std::move(other)).swap(*this);
    return *this;
  }

  CUdeviceptr get() const { return ptr_; }
  size_t bytes() const { return bytes_; }
  void swap(DeviceMemory &other) noexcept {
    std::swap(d_, other.d_);
    std::swap(context_, other.context_);
    std::swap(ptr_, other.ptr_);
    std::swap(bytes_, other.bytes_);
  }

private:
  void reset() {
    if (d_ && ptr_) {
      CUcontext popped = nullptr;
      if (d_->cuCtxPushCurrent_v2(context_) == CUDA_SUCCESS) {
        d_->cuMemFree_v2(ptr_);
        d_->cuCtxPopCurrent_v2(&popped);
      }
    }
    ptr_ = 0;
    bytes_ = 0;
  }

  const Driver *d_ = nullptr;
  CUcontext context_ = nullptr;
  CUdeviceptr ptr_ = 0;
  size_t bytes_ = 0;
};

} // namespace optrt::cuda
