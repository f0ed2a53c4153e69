#include "common/BranchHypers.h"
#include "common/RuleLibrary.h"
#include "GpuTestSupport.h"

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
