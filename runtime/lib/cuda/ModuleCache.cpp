#include "ModuleCache.h"

#include "DeviceMemory.h"

#include <algorithm>
#include <map>
#include <mutex>

namespace optrt::cuda {

LoadedModule::~LoadedModule() {
  if (module && driver && driver->cuCtxPushCurrent_v2(context) == CUDA_SUCCESS) {
    driver->cuModuleUnload(module);
    CUcontext popped = nullptr;
    driver->cuCtxPopCurrent_v2(&popped);
  }
}

namespace {

/// "sm_86" → 86; 0 when malformed.
int archNumber(const std::string &arch) {
  if (arch.rfind("sm_", 0) != 0)
    return 0;
  try {
    return std::stoi(arch.substr(3));
  } catch (...) {
    return 0;
  }
}

/// The CUDA version (as cuDriverGetVersion reports it) that introduced a
/// PTX ISA version: 7.0 → 11000, 7.8 → 11080, 8.x → 12.x.
int driverVersionForPtx(int ptxVersion) {
  if (ptxVersion >= 80)
    return 12000 + (ptxVersion - 80) * 10;
  return 11000 + (ptxVersion - 70) * 10;
}

std::string versionText(int cudaVersion) {
  return std::to_string(cudaVersion / 1000) + "." + std::to_string(cudaVersion % 1000 / 10);
}

CUfunction function(const Driver &d, CUmodule module, const std::string &name) {
  CUfunction f = nullptr;
  CUresult result = d.cuModuleGetFunction(&f, module, name.c_str());
  if (result != CUDA_SUCCESS)
    throw CudaError(CudaErrc::DriverCall, "cuModuleGetFunction(\"" + name + "\") failed: " +
                                              d.errorName(result), "cuModuleGetFunction", result);
  return f;
}

} // namespace

ImageChoice chooseImage(const CudaKernels &kernels, int major, int minor) {
  int gpu = major * 10 + minor;
  ImageChoice best;
  int bestCubin = -1, bestPtx = -1;
  for (size_t i = 0; i < kernels.images.size(); ++i) {
    int arch = archNumber(kernels.images[i].arch);
    if (arch == 0 || arch > gpu)
      continue;
    if (!kernels.images[i].cubin.empty() && arch / 10 == major && arch > bestCubin) {
      bestCubin = arch;
      best = {static_cast<int>(i), true};
    }
  }
  if (best.index >= 0)
    return best;
  for (size_t i = 0; i < kernels.images.size(); ++i) {
    int arch = archNumber(kernels.images[i].arch);
    if (arch != 0 && arch <= gpu && !kernels.images[i].ptx.empty() && arch > bestPtx) {
      bestPtx = arch;
      best = {static_cast<int>(i), false};
    }
  }
  return best;
}

std::shared_ptr<const LoadedModule> loadModule(const Driver &d, CUcontext context, CUdevice device,
                                               std::shared_ptr<const CudaKernels> kernels) {
  static std::mutex mutex;
  static std::map<std::pair<CUcontext, const CudaKernels *>, std::weak_ptr<const LoadedModule>> cache;
  std::lock_guard<std::mutex> lock(mutex);
  auto key = std::make_pair(context, kernels.get());
  if (auto cached = cache[key].lock())
    return cached;

  int major = 0, minor = 0;
  d.check(d.cuDeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, device),
          "cuDeviceGetAttribute");
  d.check(d.cuDeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, device),
          "cuDeviceGetAttribute");
  std::string gpuArch = "sm_" + std::to_string(major * 10 + minor);
  ImageChoice choice = chooseImage(*kernels, major, minor);
  if (choice.index < 0) {
    std::string built;
    for (const CudaImage &image : kernels->images)
      built += (built.empty() ? "" : ", ") + image.arch;
    throw CudaError(CudaErrc::NoBinaryForGpu, "rule '" + kernels->rule + "' has no CUDA code for this " +
                                                  gpuArch + " GPU (built for: " +
                                                  (built.empty() ? "nothing" : built) + ")");
  }

  auto loaded = std::make_shared<LoadedModule>();
  loaded->kernels = kernels;
  loaded->driver = &d;
  loaded->context = context;
  ContextScope scope(d, context);
  const CudaImage &image = kernels->images[choice.index];
  CUresult result = CUDA_ERROR_NO_BINARY_FOR_GPU;
  if (choice.cubin) {
    result = d.cuModuleLoadDataEx(&loaded->module, image.cubin.data(), 0, nullptr, nullptr);
    loaded->image = "cubin " + image.arch;
  }
  // A cubin the driver refuses (e.g. from a newer toolkit than the driver)
  // falls back to its PTX, which the driver compiles itself.
  std::string log(8192, '\0');
  if (result != CUDA_SUCCESS) {
    int options[] = {CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES};
    void *values[] = {log.data(), reinterpret_cast<void *>(static_cast<uintptr_t>(log.size()))};
    result = d.cuModuleLoadDataEx(&loaded->module, image.ptx.c_str(), 2, options, values);
    loaded->image = "ptx " + image.arch + " (JIT)";
  }
  if (result == CUDA_ERROR_UNSUPPORTED_PTX_VERSION) {
    int version = 0;
    d.cuDriverGetVersion(&version);
    throw CudaError(CudaErrc::DriverTooOld,
                    "the CUDA driver (CUDA " + versionText(version) + ") is too old for rule '" +
                        kernels->rule + "': its PTX is ISA " + std::to_string(image.ptxVersion / 10) +
                        "." + std::to_string(image.ptxVersion % 10) + ", which needs a driver of CUDA " +
                        versionText(driverVersionForPtx(image.ptxVersion)) +
                        " or later (cuModuleLoadDataEx: " + d.errorName(result) + ")",
                    "cuModuleLoadDataEx", result);
  }
  if (result != CUDA_SUCCESS) {
    log.resize(log.find('\0') == std::string::npos ? log.size() : log.find('\0'));
    throw CudaError(CudaErrc::DriverCall, "cuModuleLoadDataEx failed for rule '" + kernels->rule +
                                              "' (" + loaded->image + "): " + d.errorName(result) +
                                              (log.empty() ? "" : "\n" + log),
                    "cuModuleLoadDataEx", result);
  }
  for (size_t p = 0; p < kernels->elementEntries.size(); ++p) {
    loaded->uniforms.push_back(function(d, loaded->module, kernels->uniformsEntries[p]));
    loaded->element.push_back(function(d, loaded->module, kernels->elementEntries[p]));
    int blocks = 0;
    d.check(d.cuOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, loaded->element.back(), kernels->blockSize, 0),
            "cuOccupancyMaxActiveBlocksPerMultiprocessor");
    loaded->elementBlocksPerSM.push_back(std::max(1, blocks));
    loaded->finish.push_back(kernels->finishEntries[p].empty()
                                 ? nullptr
                                 : function(d, loaded->module, kernels->finishEntries[p]));
  }
  if (!kernels->scalarsEntry.empty())
    loaded->scalars = function(d, loaded->module, kernels->scalarsEntry);
  loaded->advance = function(d, loaded->module, kernels->advanceEntry);
  if (!kernels->gradStatsEntry.empty()) {
    loaded->gradStats = function(d, loaded->module, kernels->gradStatsEntry);
    loaded->stepOptions = function(d, loaded->module, kernels->stepOptionsEntry);
    int blocks = 0;
    d.check(d.cuOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, loaded->gradStats, kernels->blockSize, 0),
            "cuOccupancyMaxActiveBlocksPerMultiprocessor");
    loaded->gradStatsBlocksPerSM = std::max(1, blocks);
  }
  cache[key] = loaded;
  return loaded;
}

} // namespace optrt::cuda
