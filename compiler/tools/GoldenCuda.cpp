#include "GoldenCuda.h"

#include "optdsl/CUDACompile.h"
#include "optdsl/JIT.h"
#include "optrt/CudaOptimizer.h"

#include "cuda/DeviceMemory.h"
#include "cuda/Driver.h"

#include <map>
#include <stdexcept>

namespace optdsl {

using namespace optrt::cuda;

Trajectory runOnCuda(const GoldenCase &golden, const CheckedRule &rule) {
  FixedHypers fixed(golden.hypers.begin(), golden.hypers.end());
  std::shared_ptr<const optrt::RuleKernels> host = jitCompile(rule, fixed);
  if (golden.maxGradNorm)
    throw NotOnCudaYet("the CUDA optimizer has no fused clipping yet (docs/training-step.md)");
  if (!host->inputs.empty())
    throw NotOnCudaYet("the CUDA optimizer takes no inputs yet (rule '" + rule.name() + "', input '" +
                       host->inputs[0].name + "')");
  const Driver &d = driver();
  // Device 0's primary context, current for the rest of the process.
  static CUcontext context = [&] {
    CUdevice device = 0;
    CUcontext primary = nullptr;
    d.check(d.cuDeviceGet(&device, 0), "cuDeviceGet");
    d.check(d.cuDevicePrimaryCtxRetain(&primary, device), "cuDevicePrimaryCtxRetain");
    d.check(d.cuCtxPushCurrent_v2(primary), "cuCtxPushCurrent_v2");
    return primary;
  }();
  auto device = std::make_shared<optrt::CudaKernels>(cudaCompile(rule, fixed));
  optrt::CudaOptimizer optimizer(host, device);

  std::vector<DeviceMemory> params, grads;
  std::vector<optrt::DevicePtr> paramPointers, gradPointers;
  for (size_t k = 0; k < golden.sizes.size(); ++k) {
    size_t bytes = golden.sizes[k] * sizeof(float);
    params.emplace_back(d, context, bytes, "golden param");
    grads.emplace_back(d, context, bytes, "golden grad");
    std::vector<float> init(golden.init[k].begin(), golden.init[k].end());
    d.check(d.cuMemcpyHtoDAsync_v2(params.back().get(), init.data(), bytes, nullptr), "cuMemcpyHtoDAsync_v2");
    paramPointers.push_back(params.back().get());
    gradPointers.push_back(grads.back().get());
  }
  // The case's hypers are fixed into the kernels.
  optimizer.addGroup(paramPointers, golden.sizes, {}, golden.shapes);
  Trajectory trajectory;
  for (size_t t = 0; t < golden.steps; ++t) {
    for (size_t k = 0; k < golden.sizes.size(); ++k) {
      std::vector<float> g(golden.grads[t][k].begin(), golden.grads[t][k].end());
      d.check(d.cuMemcpyHtoDAsync_v2(grads[k].get(), g.data(), g.size() * sizeof(float), nullptr),
              "cuMemcpyHtoDAsync_v2");
    }
    optimizer.step({gradPointers});
    d.check(d.cuCtxSynchronize(), "cuCtxSynchronize");
    auto &after = trajectory.emplace_back();
    for (size_t k = 0; k < golden.sizes.size(); ++k) {
      std::vector<float> p(golden.sizes[k]);
      d.check(d.cuMemcpyDtoH_v2(p.data(), params[k].get(), p.size() * sizeof(float)), "cuMemcpyDtoH_v2");
      after.emplace_back(p.begin(), p.end());
    }
  }
  return trajectory;
}

} // namespace optdsl
