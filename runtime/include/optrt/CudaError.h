// Errors of the CUDA runtime path. Every one names what went wrong in words
// a user can act on; those that come from a driver call also carry the
// call's name and its CUresult (number and name, e.g. CUDA_ERROR_NO_DEVICE).
#pragma once

#include <stdexcept>
#include <string>

namespace optrt {

enum class CudaErrc {
  NoDriver,       ///< libcuda.so.1 absent or missing a function
  NoDevice,       ///< the driver sees no GPU, or the requested ordinal does not exist
  NoBinaryForGpu, ///< no image (cubin or PTX) built for an architecture this GPU runs
  DriverTooOld,   ///< the driver cannot JIT the PTX (its ISA version is too new)
  BadPointer,     ///< not a device pointer, misaligned, or its allocation is too small
  WrongContext,   ///< a device pointer of another CUDA context than the optimizer's
  OutOfMemory,    ///< the state arena or tables do not fit on the device
  DriverCall,     ///< any other failing driver call
};

/// A short name for the code, e.g. "OutOfMemory".
const char *cudaErrcName(CudaErrc code);

/// A failed CUDA driver call or a missing driver or GPU, with its CudaErrc.
class CudaError : public std::runtime_error {
public:
  /// `message` names the problem; `call` the driver function and `result` its CUresult, when one failed.
  CudaError(CudaErrc code, const std::string &message, std::string call = {}, int result = 0)
      : std::runtime_error(message), code_(code), call_(std::move(call)), result_(result) {}

  /// What kind of failure it is (no driver, no device, a bad pointer...).
  CudaErrc code() const { return code_; }
  /// The driver function that failed ("cuMemAlloc_v2"), or empty.
  const std::string &call() const { return call_; }
  /// Its CUresult, or 0.
  int result() const { return result_; }

private:
  CudaErrc code_;
  std::string call_;
  int result_;
};

} // namespace optrt
