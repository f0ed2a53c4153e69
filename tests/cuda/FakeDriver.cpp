// A stand-in for libcuda.so.1 that runs no kernels (but the step counters'
// bookkeeping of `advance` and the NCCL engine's division): device memory
// is host memory, launches are recorded by name and shape, and each failure
// a test
// needs (no device, an old driver, a refused cubin, a full device, a pointer
// of another context) is switched on through fake_cuda_set. It lets the
// runtime's host side (driver loading, error naming, pointer checks, tables,
// the launch sequence, state left untouched on failure) be tested on
// machines without a GPU. Loaded by the runtime through OPTDSL_LIBCUDA.
#include "cuda/Driver.h" // the driver's types the runtime declares (CUDA_MEMCPY2D)

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

namespace {

using CUresult = int;
using CUdeviceptr = unsigned long long;

struct Allocation {
  size_t size;
  void *context; // null: virtual-memory-API memory, owned by a device
  int device;
  void *memory; // the host memory behind the address (keeps it reachable for LeakSanitizer)
};

struct State {
  std::map<std::string, long long> settings;
  std::map<CUdeviceptr, Allocation> allocations;
  std::vector<std::string> launches;
  std::vector<unsigned> launchGrids;
  std::string lastModuleKind;
  size_t liveBytes = 0;
};

int contextTag, foreignContextTag; // their addresses are the fake contexts

// The driver is thread-safe; so is the fake: every entry point that reads
// or writes the state holds this lock (recursive: some call others).
std::recursive_mutex &stateMutex() {
  static std::recursive_mutex &mutex = *new std::recursive_mutex();
  return mutex;
}
#define FAKE_LOCKED std::lock_guard<std::recursive_mutex> fakeLock(stateMutex())

State &state() {
  // Never destroyed: the allocations stay reachable until the leak check.
  static State &s = *new State();
  return s;
}

long long setting(const char *key, long long fallback) {
  auto it = state().settings.find(key);
  return it == state().settings.end() ? fallback : it->second;
}

const Allocation *find(CUdeviceptr p, CUdeviceptr *start) {
  auto &allocations = state().allocations;
  auto it = allocations.upper_bound(p);
  if (it == allocations.begin())
    return nullptr;
  --it;
  if (p >= it->first + it->second.size)
    return nullptr;
  *start = it->first;
  return &it->second;
}

CUdeviceptr allocate(size_t bytes, void *context, int device = 0) {
  FAKE_LOCKED;
  void *p = std::aligned_alloc(256, (bytes + 255) / 256 * 256);
  std::memset(p, 0xA5, bytes); // like device memory: not zero
  auto address = reinterpret_cast<CUdeviceptr>(p);
  state().allocations[address] = {bytes, context, device, p};
  state().liveBytes += bytes;
  return address;
}

} // namespace

extern "C" {

// --- control, for the tests -------------------------------------------------
void fake_cuda_reset() {
  FAKE_LOCKED;
  State &s = state();
  s.settings.clear();
  s.launches.clear();
  s.launchGrids.clear();
}
void fake_cuda_set(const char *key, long long value) {
  FAKE_LOCKED;
  state().settings[key] = value;
}
size_t fake_cuda_num_launches() {
  FAKE_LOCKED;
  return state().launches.size();
}
const char *fake_cuda_launch(size_t i) {
  FAKE_LOCKED;
  return state().launches.at(i).c_str();
}
unsigned fake_cuda_launch_grid(size_t i) {
  FAKE_LOCKED;
  return state().launchGrids.at(i);
}
size_t fake_cuda_live_bytes() {
  FAKE_LOCKED;
  return state().liveBytes;
}
const char *fake_cuda_last_module_kind() {
  FAKE_LOCKED;
  return state().lastModuleKind.c_str();
}
/// Device memory of another context.
CUdeviceptr fake_cuda_alloc_foreign(size_t bytes) {
  FAKE_LOCKED;
  return allocate(bytes, &foreignContextTag);
}
/// Memory mapped with the virtual memory API on `device`: no context.
CUdeviceptr fake_cuda_alloc_mapped(size_t bytes, int device) {
  FAKE_LOCKED;
  return allocate(bytes, nullptr, device);
}
/// Device memory of the optimizer's context, as a framework would allocate.
CUdeviceptr fake_cuda_alloc(size_t bytes) {
  FAKE_LOCKED;
  return allocate(bytes, &contextTag);
}

// --- the driver API subset the runtime resolves ------------------------------
CUresult cuInit(unsigned) {
  FAKE_LOCKED;
  return static_cast<CUresult>(setting("init_result", 0));
}
CUresult cuDriverGetVersion(int *v) {
  FAKE_LOCKED;
  *v = static_cast<int>(setting("driver_version", 12040));
  return 0;
}
CUresult cuGetErrorName(CUresult r, const char **name) {
  FAKE_LOCKED;
  static const std::map<int, const char *> names = {
      {0, "CUDA_SUCCESS"}, {1, "CUDA_ERROR_INVALID_VALUE"}, {2, "CUDA_ERROR_OUT_OF_MEMORY"},
      {100, "CUDA_ERROR_NO_DEVICE"}, {209, "CUDA_ERROR_NO_BINARY_FOR_GPU"},
      {218, "CUDA_ERROR_INVALID_PTX"}, {222, "CUDA_ERROR_UNSUPPORTED_PTX_VERSION"}};
  auto it = names.find(r);
  if (it == names.end())
    return 1;
  *name = it->second;
  return 0;
}
CUresult cuDeviceGetCount(int *n) {
  FAKE_LOCKED;
  *n = static_cast<int>(setting("device_count", 1));
  return 0;
}
CUresult cuDeviceGet(int *d, int ordinal) {
  FAKE_LOCKED;
  *d = ordinal;
  return 0;
}
CUresult cuDeviceGetAttribute(int *value, int attribute, int) {
  FAKE_LOCKED;
  switch (attribute) {
  case 16: *value = static_cast<int>(setting("multiprocessors", 4)); return 0;
  case 75: *value = static_cast<int>(setting("cc_major", 9)); return 0;
  case 76: *value = static_cast<int>(setting("cc_minor", 0)); return 0;
  }
  return 1;
}
CUresult cuDevicePrimaryCtxRetain(void **context, int) {
  FAKE_LOCKED;
  *context = &contextTag;
  return 0;
}
CUresult cuDevicePrimaryCtxRelease_v2(int) {
  FAKE_LOCKED;
  return 0;
}
CUresult cuCtxGetCurrent(void **context) {
  FAKE_LOCKED;
  *context = nullptr;
  return 0;
}
CUresult cuCtxGetDevice(int *d) {
  FAKE_LOCKED;
  *d = 0;
  return 0;
}
CUresult cuCtxPushCurrent_v2(void *) {
  FAKE_LOCKED;
  return 0;
}
CUresult cuCtxPopCurrent_v2(void **) {
  FAKE_LOCKED;
  return 0;
}
CUresult cuCtxSynchronize() {
  FAKE_LOCKED;
  return 0;
}
CUresult cuModuleLoadDataEx(void **module, const void *image, unsigned, int *, void **) {
  FAKE_LOCKED;
  bool cubin = std::memcmp(image, "\x7f" "ELF", 4) == 0;
  state().lastModuleKind = cubin ? "cubin" : "ptx";
  CUresult r = static_cast<CUresult>(setting(cubin ? "cubin_result" : "ptx_result", 0));
  if (r == 0)
    *module = &contextTag;
  return r;
}
CUresult cuModuleUnload(void *) {
  FAKE_LOCKED;
  return 0;
}
CUresult cuModuleGetFunction(void **f, void *, const char *name) {
  FAKE_LOCKED;
  // The handle is the name, kept for the process (reachable: no leak).
  static std::set<std::string> &names = *new std::set<std::string>();
  *f = const_cast<char *>(names.insert(name).first->c_str());
  return 0;
}
/// The advance kernel's bookkeeping (optrt/CudaKernels.h: counter segment
/// {steps, seed, skip flag}, then each group's steps), so that the host's
/// reads of the device's counters (stepCount, checkpoints) see steps. No
/// other kernel runs; a GPU test checks the real advance.
void advanceCounters(void **args) {
  auto *counter = reinterpret_cast<double *>(*static_cast<CUdeviceptr *>(args[0]));
  long long groups = *static_cast<long long *>(args[1]);
  auto *skip = reinterpret_cast<unsigned *>(counter) + 3;
  if (*skip != 0) {
    *skip = 0;
    return;
  }
  for (long long i = 0; i <= groups; ++i)
    counter[i == 0 ? 0 : i + 1] += 1.0;
}

/// The NCCL engine's division kernels (runtime/lib/nccl/DivideKernels.ptx):
/// data[i] / divisor in f32, 16-bit values rounded to nearest even, as the
/// PTX does (a GPU test checks the PTX itself), so that the engine's means
/// can be tested without a GPU.
void divideInPlace(const std::string &name, void **args) {
  auto *data = reinterpret_cast<char *>(*static_cast<CUdeviceptr *>(args[0]));
  unsigned long long count = *static_cast<unsigned long long *>(args[1]);
  float divisor = *static_cast<float *>(args[2]);
  bool f32 = name == "optrt_divide_f32", f16 = name == "optrt_divide_f16";
  for (unsigned long long i = 0; i < count; ++i) {
    if (f32) {
      float x;
      std::memcpy(&x, data + 4 * i, 4);
      x /= divisor;
      std::memcpy(data + 4 * i, &x, 4);
      continue;
    }
    uint16_t h;
    std::memcpy(&h, data + 2 * i, 2);
    float x;
    if (f16) {
      _Float16 v;
      std::memcpy(&v, &h, 2);
      x = static_cast<float>(v) / divisor;
      v = static_cast<_Float16>(x);
      std::memcpy(&h, &v, 2);
    } else {
      uint32_t bits = static_cast<uint32_t>(h) << 16;
      std::memcpy(&x, &bits, 4);
      x /= divisor;
      std::memcpy(&bits, &x, 4);
      h = static_cast<uint16_t>((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16);
    }
    std::memcpy(data + 2 * i, &h, 2);
  }
}

CUresult cuLaunchKernel(void *f, unsigned gx, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                        void *, void **args, void **) {
  FAKE_LOCKED;
  std::string name = static_cast<const char *>(f);
  state().launches.push_back(name);
  state().launchGrids.push_back(gx);
  if (name.find("_cuda_advance") != std::string::npos)
    advanceCounters(args);
  if (name.rfind("optrt_divide_", 0) == 0)
    divideInPlace(name, args);
  return 0;
}
CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t bytes) {
  FAKE_LOCKED;
  long long limit = setting("memory_limit", -1);
  if (limit >= 0 && state().liveBytes + bytes > static_cast<size_t>(limit))
    return 2;
  *p = allocate(bytes, &contextTag);
  return 0;
}
CUresult cuMemFree_v2(CUdeviceptr p) {
  FAKE_LOCKED;
  auto it = state().allocations.find(p);
  if (it == state().allocations.end())
    return 1;
  state().liveBytes -= it->second.size;
  std::free(reinterpret_cast<void *>(p));
  state().allocations.erase(it);
  return 0;
}
CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr to, const void *from, size_t bytes, void *) {
  FAKE_LOCKED;
  if (bytes == 0) // as the driver: nothing to copy (and no pointer to check)
    return 0;
  std::memcpy(reinterpret_cast<void *>(to), from, bytes);
  return 0;
}
CUresult cuMemcpyDtoH_v2(void *to, CUdeviceptr from, size_t bytes) {
  FAKE_LOCKED;
  if (bytes == 0) // as the driver: nothing to copy (and no pointer to check)
    return 0;
  std::memcpy(to, reinterpret_cast<const void *>(from), bytes);
  return 0;
}
CUresult cuMemcpyDtoD_v2(CUdeviceptr to, CUdeviceptr from, size_t bytes) {
  FAKE_LOCKED;
  if (bytes == 0) // as the driver: nothing to copy (and no pointer to check)
    return 0;
  std::memcpy(reinterpret_cast<void *>(to), reinterpret_cast<const void *>(from), bytes);
  return 0;
}
// Host or device memory: both are host memory here.
CUresult cuMemcpy2DAsync_v2(const optrt::cuda::CUDA_MEMCPY2D *copy, void *) {
  FAKE_LOCKED;
  auto base = [](unsigned type, const void *host, CUdeviceptr device) {
    return type == 1 ? static_cast<const char *>(host) : reinterpret_cast<const char *>(device);
  };
  const char *from = base(copy->srcMemoryType, copy->srcHost, copy->srcDevice) + copy->srcXInBytes +
                     copy->srcY * copy->srcPitch;
  char *to = const_cast<char *>(base(copy->dstMemoryType, copy->dstHost, copy->dstDevice)) + copy->dstXInBytes +
             copy->dstY * copy->dstPitch;
  for (size_t row = 0; row < copy->Height; ++row)
    std::memcpy(to + row * copy->dstPitch, from + row * copy->srcPitch, copy->WidthInBytes);
  return 0;
}
CUresult cuMemsetD32_v2(CUdeviceptr p, unsigned value, size_t n) {
  FAKE_LOCKED;
  auto *words = reinterpret_cast<unsigned *>(p);
  for (size_t i = 0; i < n; ++i)
    words[i] = value;
  return 0;
}
CUresult cuStreamSynchronize(void *) {
  FAKE_LOCKED;
  return 0;
}
CUresult cuOccupancyMaxActiveBlocksPerMultiprocessor(int *blocks, void *, int, size_t) {
  FAKE_LOCKED;
  *blocks = static_cast<int>(setting("blocks_per_sm", 8));
  return 0;
}
CUresult cuPointerGetAttribute(void *data, int attribute, CUdeviceptr p) {
  FAKE_LOCKED;
  CUdeviceptr start = 0;
  const Allocation *a = find(p, &start);
  if (!a)
    return 1;
  switch (attribute) {
  case 1: *static_cast<void **>(data) = a->context; return 0;
  case 9: *static_cast<int *>(data) = a->device; return 0;
  case 11: *static_cast<CUdeviceptr *>(data) = start; return 0;
  case 12: *static_cast<size_t *>(data) = a->size; return 0;
  }
  return 1;
}

} // extern "C"
