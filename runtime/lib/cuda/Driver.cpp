#include "Driver.h"

#include <cstdlib>
#include <mutex>
#include <optional>

#include <dlfcn.h>

namespace optrt {

const char *cudaErrcName(CudaErrc code) {
  switch (code) {
  case CudaErrc::NoDriver: return "NoDriver";
  case CudaErrc::NoDevice: return "NoDevice";
  case CudaErrc::NoBinaryForGpu: return "NoBinaryForGpu";
  case CudaErrc::DriverTooOld: return "DriverTooOld";
  case CudaErrc::BadPointer: return "BadPointer";
  case CudaErrc::WrongContext: return "WrongContext";
  case CudaErrc::OutOfMemory: return "OutOfMemory";
  case CudaErrc::DriverCall: return "DriverCall";
  }
  return "unknown";
}

namespace cuda {

std::string Driver::errorName(CUresult result) const {
  const char *name = nullptr;
  if (cuGetErrorName && cuGetErrorName(result, &name) == CUDA_SUCCESS && name)
    return name;
  return "CUresult " + std::to_string(result);
}

void Driver::check(CUresult result, const char *call) const {
  if (result == CUDA_SUCCESS)
    return;
  std::string name = errorName(result);
  CudaErrc code = result == CUDA_ERROR_OUT_OF_MEMORY ? CudaErrc::OutOfMemory
                  : result == CUDA_ERROR_NO_DEVICE   ? CudaErrc::NoDevice
                                                     : CudaErrc::DriverCall;
  throw CudaError(code, std::string(call) + " failed: " + name + " (" + std::to_string(result) + ")",
                  call, result);
}

Driver loadDriver(const std::string &library) {
  // Never unloaded: the driver keeps threads and state for the process.
  void *handle = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    const char *why = dlerror();
    throw CudaError(CudaErrc::NoDriver, "no CUDA driver (" + library + " not found): " +
                                            (why ? why : "dlopen failed") +
                                            "; the CUDA backend needs an NVIDIA GPU and its driver");
  }
  Driver d{};
  auto resolve = [&](auto &fn, const char *name) {
    fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(handle, name));
    if (!fn)
      throw CudaError(CudaErrc::NoDriver, "CUDA driver " + library + " lacks " + name +
                                              " (a driver of CUDA 11.0 or later is needed)");
  };
#define OPTRT_RESOLVE(name) resolve(d.name, #name)
  OPTRT_RESOLVE(cuInit);
  OPTRT_RESOLVE(cuDriverGetVersion);
  OPTRT_RESOLVE(cuGetErrorName);
  OPTRT_RESOLVE(cuDeviceGetCount);
  OPTRT_RESOLVE(cuDeviceGet);
  OPTRT_RESOLVE(cuDeviceGetAttribute);
  OPTRT_RESOLVE(cuDevicePrimaryCtxRetain);
  OPTRT_RESOLVE(cuDevicePrimaryCtxRelease_v2);
  OPTRT_RESOLVE(cuCtxGetCurrent);
  OPTRT_RESOLVE(cuCtxGetDevice);
  OPTRT_RESOLVE(cuCtxPushCurrent_v2);
  OPTRT_RESOLVE(cuCtxPopCurrent_v2);
  OPTRT_RESOLVE(cuCtxSynchronize);
  OPTRT_RESOLVE(cuModuleLoadDataEx);
  OPTRT_RESOLVE(cuModuleUnload);
  OPTRT_RESOLVE(cuModuleGetFunction);
  OPTRT_RESOLVE(cuLaunchKernel);
  OPTRT_RESOLVE(cuMemAlloc_v2);
  OPTRT_RESOLVE(cuMemFree_v2);
  OPTRT_RESOLVE(cuMemcpyHtoDAsync_v2);
  OPTRT_RESOLVE(cuMemcpyDtoH_v2);
  OPTRT_RESOLVE(cuMemcpyDtoD_v2);
  OPTRT_RESOLVE(cuMemcpy2DAsync_v2);
  OPTRT_RESOLVE(cuMemsetD32_v2);
  OPTRT_RESOLVE(cuStreamSynchronize);
  OPTRT_RESOLVE(cuPointerGetAttribute);
  OPTRT_RESOLVE(cuOccupancyMaxActiveBlocksPerMultiprocessor);
#undef OPTRT_RESOLVE
  return d;
}

const Driver &driver() {
  static std::mutex mutex;
  static std::optional<Driver> loaded;
  std::lock_guard<std::mutex> lock(mutex);
  if (!loaded) {
    const char *override = std::getenv("OPTDSL_LIBCUDA");
    Driver d = loadDriver(override && *override ? override : "libcuda.so.1");
    CUresult result = d.cuInit(0);
    if (result == CUDA_ERROR_NO_DEVICE)
      throw CudaError(CudaErrc::NoDevice, "no CUDA GPU: cuInit failed: " + d.errorName(result),
                      "cuInit", result);
    d.check(result, "cuInit");
    loaded = d;
  }
  return *loaded;
}

} // namespace cuda
} // namespace optrt
