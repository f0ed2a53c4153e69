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
  // Each input's device buffers, one per tensor, refilled on the steps that give it.
  std::vector<std::vector<DeviceMemory>> inputBuffers(golden.inputs.size());
  for (size_t input = 0; input < golden.inputs.size(); ++input)
    for (size_t k = 0; k < golden.sizes.size(); ++k)
      inputBuffers[input].emplace_back(d, context, golden.sizes[k] * sizeof(float), "golden input");
  // The case's hypers are fixed into the kernels.
  optimizer.addGroup(paramPointers, golden.sizes, {}, golden.shapes);
  Trajectory trajectory;
  for (size_t t = 0; t < golden.steps; ++t) {
    for (size_t k = 0; k < golden.sizes.size(); ++k) {
      std::vector<float> g(golden.grads[t][k].begin(), golden.grads[t][k].end());
      d.check(d.cuMemcpyHtoDAsync_v2(grads[k].get(), g.data(), g.size() * sizeof(float), nullptr),
              "cuMemcpyHtoDAsync_v2");
    }
    std::vector<optrt::CudaStepInput> inputs;
    for (size_t input = 0; input < golden.inputs.size(); ++input) {
      const auto &[name, perStep] = golden.inputs[input];
      if (!perStep[t])
        continue; // not given this step
      std::vector<optrt::DevicePtr> &pointers = inputs.emplace_back(optrt::CudaStepInput{name, {{}}}).perGroup[0];
      for (size_t k = 0; k < golden.sizes.size(); ++k) {
        std::vector<float> values((*perStep[t])[k].begin(), (*perStep[t])[k].end());
        d.check(d.cuMemcpyHtoDAsync_v2(inputBuffers[input][k].get(), values.data(), values.size() * sizeof(float),
                                       nullptr),
                "cuMemcpyHtoDAsync_v2");
        pointers.push_back(inputBuffers[input][k].get());
      }
    }
    optimizer.step({gradPointers}, nullptr, inputs);
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
