#include "common/BranchHypers.h"
#include "common/RuleLibrary.h"
#include "GpuTestSupport.h"

#include "optrt/Storage.h"

#include <cmath>
#include <dlfcn.h>
#include <type_traits>
#include <cstring>
#include <stdexcept>

namespace optdsl::gputest {

using namespace optrt::cuda;

const Driver *gpu(std::string &reason) {
  static std::string why;
  static const Driver *found = [] () -> const Driver * {
    try {
      const Driver &d = driver();
      int count = 0;
      d.check(d.cuDeviceGetCount(&count), "cuDeviceGetCount");
      if (count == 0) {
        why = "the CUDA driver sees no device";
        return nullptr;
      }
      CUdevice device = 0;
      CUcontext context = nullptr;
      d.check(d.cuDeviceGet(&device, 0), "cuDeviceGet");
      d.check(d.cuDevicePrimaryCtxRetain(&context, device), "cuDevicePrimaryCtxRetain");
      d.check(d.cuCtxPushCurrent_v2(context), "cuCtxPushCurrent_v2");
      return &d;
    } catch (const optrt::CudaError &e) {
      why = e.what();
      return nullptr;
    }
  }();
  reason = why;
  return found;
}

namespace {
const Driver &current() {
  std::string reason;
  const Driver *d = gpu(reason);
  if (!d)
    throw std::runtime_error("no GPU: " + reason);
  return *d;
}
CUcontext currentContext() {
  CUcontext context = nullptr;
  current().check(current().cuCtxGetCurrent(&context), "cuCtxGetCurrent");
  return context;
}
} // namespace

DeviceFloats::DeviceFloats(size_t n)
    : memory_(current(), currentContext(), std::max<size_t>(1, n) * sizeof(float), "test array") {}

void DeviceFloats::upload(size_t index, const float *data, size_t n) {
  const Driver &d = current();
  d.check(d.cuMemcpyHtoDAsync_v2(at(index), data, n * sizeof(float), nullptr), "cuMemcpyHtoDAsync_v2");
  d.check(d.cuCtxSynchronize(), "cuCtxSynchronize");
}

void DeviceFloats::download(size_t index, float *data, size_t n) const {
  const Driver &d = current();
  d.check(d.cuCtxSynchronize(), "cuCtxSynchronize");
  d.check(d.cuMemcpyDtoH_v2(data, at(index), n * sizeof(float)), "cuMemcpyDtoH_v2");
}

StoredArray::StoredArray(optrt::Dtype dtype, const std::vector<float> &values, bool misaligned)
    : host(optrt::elementBytes(dtype, values.size())), offset(misaligned ? optrt::elementBytes(dtype, 1) : 0),
      device((offset + host.size() + 3) / 4) {
  optrt::encodeF32(dtype, values, host.data(), nullptr);
  std::vector<float> words((offset + host.size() + 3) / 4);
  std::memcpy(reinterpret_cast<uint8_t *>(words.data()) + offset, host.data(), host.size());
  device.upload(0, words.data(), words.size());
}

std::vector<uint8_t> StoredArray::downloaded() const {
  std::vector<float> words((offset + host.size() + 3) / 4);
  device.download(0, words.data(), words.size());
  const uint8_t *from = reinterpret_cast<const uint8_t *>(words.data()) + offset;
  return {from, from + host.size()};
}

long firstDifference(const std::vector<float> &a, const std::vector<float> &b) {
  if (a.size() != b.size())
    return 0;
  for (size_t i = 0; i < a.size(); ++i) {
    uint32_t x, y;
    std::memcpy(&x, &a[i], 4);
    std::memcpy(&y, &b[i], 4);
    if (x != y && !(std::isnan(a[i]) && std::isnan(b[i])))
      return static_cast<long>(i);
  }
  return -1;
}

std::vector<float> decoded(optrt::Dtype dtype, const std::vector<uint8_t> &bytes, size_t n) {
  std::vector<float> values(n);
  optrt::decodeToF32(dtype, bytes.data(), nullptr, values);
  return values;
}

const GraphApi *GraphApi::get(std::string &reason) {
  static std::string why;
  static const GraphApi *api = []() -> const GraphApi * {
    void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
    if (!lib) {
      why = "libcuda.so.1 is not loaded";
      return nullptr;
    }
    static GraphApi found{};
    auto sym = [&](auto &fn, const char *name) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(lib, name));
      if (!fn)
        why += std::string(why.empty() ? "" : ", ") + name + " missing";
    };
    sym(found.streamCreate, "cuStreamCreate");
    sym(found.beginCapture, "cuStreamBeginCapture_v2");
    sym(found.endCapture, "cuStreamEndCapture");
    sym(found.instantiate, "cuGraphInstantiateWithFlags");
    sym(found.launch, "cuGraphLaunch");
    return why.empty() ? &found : nullptr;
  }();
  reason = why;
  return api;
}

const CompiledRule &compiledRule(const std::string &name) {
  // Never destroyed: JIT engines must not outlive LLVM's globals.
  static auto &cache = *new std::map<std::string, CompiledRule>();
  auto it = cache.find(name);
  if (it == cache.end()) {
    CheckedRule rule = loadRuleFile(optdsl::test::ruleLibraryDir() + "/" + name + ".opt");
    auto host = jitCompile(rule, test::cudaFixedHypers(name));
    auto device = std::make_shared<optrt::CudaKernels>(cudaCompile(rule, test::cudaFixedHypers(name)));
    it = cache.emplace(name, CompiledRule{std::move(rule), host, device}).first;
  }
  return it->second;
}

} // namespace optdsl::gputest
