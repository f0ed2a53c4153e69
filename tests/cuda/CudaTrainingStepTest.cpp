// The training step on the GPU (CudaStepOptions; docs/training-step.md
// "CUDA"): the gradient read, the found-inf skip, loss scaling (fixed and
// the device's dynamic scaler), clipping, decided by the stepoptions kernel
// without the host. Skipped, with the reason, where there is no GPU.
#include "GpuTestSupport.h"
#include "common/BranchHypers.h"
#include "common/RandomValues.h"
#include "common/RuleLibrary.h"

#include "optdsl/CUDACompile.h"
#include "optdsl/JIT.h"
#include "optrt/CudaOptimizer.h"
#include "optrt/LossScaler.h"
#include "optrt/Optimizer.h"
#include "optrt/Storage.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <map>
#include <random>

namespace optdsl::gputest {
namespace {

/// adamw's host kernels for `layout` and the CUDA kernels of each of its
/// layouts, compiled once per process (JIT engines are never destroyed).
struct LayoutKernels {
  std::shared_ptr<const optrt::RuleKernels> host;
  std::vector<std::shared_ptr<const optrt::CudaKernels>> device;
};
const LayoutKernels &adamw(const std::string &layout) {
  static auto &cache = *new std::map<std::string, LayoutKernels>();
  auto it = cache.find(layout);
  if (it != cache.end())
    return it->second;
  CheckedRule rule = loadRuleFile(test::ruleLibraryDir() + "/adamw.opt");
  FixedHypers fixed = test::cudaFixedHypers("adamw");
  LayoutKernels k{jitCompile(rule, fixed, {layout}), {}};
  for (const optrt::LayoutKernels &l : k.host->layouts) {
    CudaCompileOptions options;
    options.layout = l.name;
    k.device.push_back(std::make_shared<optrt::CudaKernels>(cudaCompile(rule, fixed, options)));
  }
  return cache.emplace(layout, std::move(k)).first->second;
}

const std::vector<size_t> kSizes = {100, 5000, 70001}; // fallback, one partial q8 block, several chunks

/// One run: a CUDA optimizer over its own copy of the same initial params.
struct GpuRun {
  optrt::Layout layout;
  std::vector<StoredArray> params;
  optrt::CudaOptimizer optimizer;

  GpuRun(const std::string &layoutText, const std::vector<std::vector<float>> &initial)
      : layout(optrt::Layout::parse(layoutText)), optimizer(make(layoutText)) {
    std::vector<optrt::DevicePtr> pointers;
    for (size_t k = 0; k < initial.size(); ++k) {
      params.emplace_back(layout.param, initial[k], /*misaligned=*/k == 1);
      pointers.push_back(params.back().address());
    }
    optimizer.addGroup(pointers, kSizes);
  }
  static optrt::CudaOptimizer make(const std::string &layout) {
    optrt::CudaOptimizerOptions options;
    options.layout = layout;
    options.seed = 7;
    return optrt::CudaOptimizer(adamw(layout).host, adamw(layout).device, options);
  }
  /// One step on gradients `grads` times `scale`, stored in the grad dtype.
  void step(const std::vector<std::vector<float>> &grads, float scale, const optrt::CudaStepOptions &options) {
    std::vector<StoredArray> stored;
    std::vector<optrt::DevicePtr> pointers;
    for (size_t k = 0; k < grads.size(); ++k) {
      std::vector<float> scaled = grads[k];
      for (float &x : scaled)
        x *= scale;
      stored.emplace_back(layout.grad, scaled, /*misaligned=*/k == 1);
      pointers.push_back(stored.back().address());
    }
    optimizer.step({pointers}, nullptr, options);
    optimizer.stepCount(); // waits for the step before `stored` goes
  }
};

/// Params, masters and states of two runs: the same bits (NaN as NaN).
void expectSameBits(const GpuRun &a, const GpuRun &b, const std::string &where) {
  const optrt::RuleKernels &rule = a.optimizer.rule();
  for (size_t k = 0; k < kSizes.size(); ++k) {
    std::string at = where + " tensor " + std::to_string(k);
    EXPECT_EQ(firstDifference(decoded(a.layout.param, a.params[k].downloaded(), kSizes[k]),
                              decoded(b.layout.param, b.params[k].downloaded(), kSizes[k])),
              -1)
        << at << ": params";
    bool hasMaster = false;
    for (const optrt::BufferDesc &buffer : rule.layouts[0].buffers)
      hasMaster |= buffer.role == optrt::BufferRole::Master;
    if (hasMaster)
      EXPECT_EQ(firstDifference(a.optimizer.master(0, k), b.optimizer.master(0, k)), -1) << at << ": master";
    for (const optrt::StateInfo &state : rule.states)
      if (!state.scalar)
        EXPECT_EQ(firstDifference(a.optimizer.readState(state.name, 0, k), b.optimizer.readState(state.name, 0, k)),
                  -1)
            << at << ": state " << state.name;
  }
}

std::vector<std::vector<float>> initialParams(std::mt19937 &rng) {
  std::vector<std::vector<float>> params;
  for (size_t n : kSizes)
    params.push_back(test::normalValues(n, rng, 1.0f));
  return params;
}

/// A step's gradients, of another magnitude in each tensor and step.
std::vector<std::vector<float>> draw(std::mt19937 &rng, int step) {
  std::vector<std::vector<float>> grads;
  for (size_t k = 0; k < kSizes.size(); ++k)
    grads.push_back(test::normalValues(kSizes[k], rng, std::pow(10.0f, static_cast<float>((k + step) % 4) - 2.0f)));
  return grads;
}

class CudaTrainingStep : public ::testing::TestWithParam<std::string> {};

// The gradients carry the device scaler's scale (a power of two: unscaling
// is exact, and bf16 has f32's exponent range). Run A gets a NaN at step 2
// and an Inf at step 5; run B only the clean steps. A's skipped steps must
// change nothing: both end with the same bits, the same step count; A's
// scale follows the CPU's DynamicLossScaler through backoffs and growths.
TEST_P(CudaTrainingStep, SkippedStepsLeaveEverythingAsTheRunWithoutThem) {
  OPTDSL_REQUIRE_GPU();
  const std::string layout = GetParam();
  uint32_t seed = std::random_device{}();
  SCOPED_TRACE("random seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  std::vector<std::vector<float>> initial = initialParams(rng);
  GpuRun a(layout, initial), b(layout, initial);
  optrt::LossScalerOptions scaler{1024.0, 2.0, 0.5, 2};
  a.optimizer.setLossScaler(scaler);
  b.optimizer.setLossScaler(scaler);
  optrt::DynamicLossScaler cpuScaler(scaler);
  optrt::CudaStepOptions options;
  options.dynamicLossScale = true;
  for (int step = 1; step <= 6; ++step) {
    std::vector<std::vector<float>> grads = draw(rng, step);
    bool poisoned = step == 2 || step == 5;
    std::vector<std::vector<float>> given = grads;
    if (step == 2)
      given[2][4321] = std::numeric_limits<float>::quiet_NaN();
    if (step == 5)
      given[0][7] = std::numeric_limits<float>::infinity();
    float scale = a.optimizer.lossScale();
    ASSERT_EQ(scale, cpuScaler.scale()) << "before step " << step;
    a.step(given, scale, options);
    optrt::StepResult result = a.optimizer.lastStepResult();
    EXPECT_EQ(result.skipped, poisoned) << "step " << step;
    EXPECT_EQ(std::isfinite(result.gradNorm), !poisoned) << "step " << step << ": norm " << result.gradNorm;
    cpuScaler.update(result.skipped);
    EXPECT_EQ(a.optimizer.lossScaleGrowthTracker(), cpuScaler.growthTracker()) << "after step " << step;
    if (!poisoned)
      b.step(grads, b.optimizer.lossScale(), options);
  }
  EXPECT_EQ(a.optimizer.lossScale(), cpuScaler.scale());
  EXPECT_EQ(a.optimizer.stepCount(), 4);
  EXPECT_EQ(a.optimizer.stepCount(0), 4);
  EXPECT_EQ(b.optimizer.stepCount(), 4);
  expectSameBits(a, b, layout);
}

INSTANTIATE_TEST_SUITE_P(Layouts, CudaTrainingStep,
                         ::testing::Values("f32", "param=bf16,master=f32,state=q8",
                                           "param=bf16,grad=bf16,master=remainder,state=q8"),
                         [](const ::testing::TestParamInfo<std::string> &info) {
                           std::string name = info.param;
                           for (char &ch : name)
                             if (!std::isalnum(static_cast<unsigned char>(ch)))
                               ch = '_';
                           return name;
                         });

/// The CPU optimizer over host copies of `initial` (f32 layout).
struct CpuRun {
  std::vector<std::vector<float>> params;
  optrt::Optimizer optimizer;
  explicit CpuRun(const std::vector<std::vector<float>> &initial)
      : params(initial), optimizer(adamw("f32").host, optrt::OptimizerOptions{}) {
    std::vector<float *> pointers;
    for (std::vector<float> &p : params)
      pointers.push_back(p.data());
    optimizer.addGroup(pointers, kSizes);
  }
  optrt::StepResult step(const std::vector<std::vector<float>> &grads, float scale, const optrt::StepOptions &options) {
    std::vector<std::vector<float>> scaled = grads;
    std::vector<const float *> pointers;
    for (std::vector<float> &g : scaled) {
      for (float &x : g)
        x *= scale;
      pointers.push_back(g.data());
    }
    return optimizer.step({pointers}, options);
  }
};

// A fixed loss scale with clipping by value, no norm: the GPU's step is the
// CPU kernels' bit for bit (adamw has no reduction). With clipping by norm
// the norms are sums in other orders: equal within the bound of those sums.
TEST(CudaTrainingStepCpu, LossScalingAndClippingFollowTheCpuOptimizer) {
  OPTDSL_REQUIRE_GPU();
  uint32_t seed = std::random_device{}();
  SCOPED_TRACE("random seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  std::vector<std::vector<float>> initial = initialParams(rng);
  GpuRun gpu("f32", initial);
  CpuRun cpu(initial);
  optrt::CudaStepOptions gpuOptions;
  gpuOptions.lossScale = 256;
  gpuOptions.clipValue = 0.02;
  optrt::StepOptions cpuOptions;
  cpuOptions.lossScale = 256;
  cpuOptions.clipValue = 0.02;
  for (int step = 1; step <= 3; ++step) {
    std::vector<std::vector<float>> grads = draw(rng, step);
    gpu.step(grads, 256.0f, gpuOptions);
    optrt::StepResult expected = cpu.step(grads, 256.0f, cpuOptions);
    optrt::StepResult got = gpu.optimizer.lastStepResult();
    EXPECT_FALSE(got.skipped);
    // Σ of n positive f64 terms in two orders: each within (n - 1) u of the
    // exact sum (u = 2^-53), so within 2 n u of each other; the square root
    // halves that.
    double bound = static_cast<double>(kSizes[2] + kSizes[1] + kSizes[0]) * std::ldexp(1.0, -53);
    EXPECT_NEAR(got.gradNorm, expected.gradNorm, bound * expected.gradNorm) << "step " << step;
    for (size_t k = 0; k < kSizes.size(); ++k) {
      std::vector<float> params = decoded(optrt::Dtype::F32, gpu.params[k].downloaded(), kSizes[k]);
      EXPECT_EQ(firstDifference(params, cpu.params[k]), -1) << "step " << step << " tensor " << k;
    }
  }
  // Clipping by norm: the coefficient is torch's formula of the device's norm.
  gpuOptions.maxGradNorm = 0.01;
  cpuOptions.maxGradNorm = 0.01;
  std::vector<std::vector<float>> grads = draw(rng, 4);
  gpu.step(grads, 256.0f, gpuOptions);
  optrt::StepResult expected = cpu.step(grads, 256.0f, cpuOptions);
  optrt::StepResult got = gpu.optimizer.lastStepResult();
  ASSERT_LT(got.clipCoefficient, 1.0) << "the case must clip";
  EXPECT_EQ(got.clipCoefficient, std::min(1.0, 0.01 / (got.gradNorm + 1e-6)));
  double bound = static_cast<double>(kSizes[2] + kSizes[1] + kSizes[0]) * std::ldexp(1.0, -53);
  EXPECT_NEAR(got.clipCoefficient, expected.clipCoefficient, 2 * bound * expected.clipCoefficient);
}

// torch's capturable: a step with the dynamic scaler captured once; replayed
// on a gradient holding a NaN it skips (params unchanged, scale halved) on
// the device, and the next replay on clean gradients steps.
TEST(CudaTrainingStepGraph, ACapturedStepSkipsOnTheDevice) {
  OPTDSL_REQUIRE_GPU();
  std::string why;
  const GraphApi *graphs = GraphApi::get(why);
  ASSERT_TRUE(graphs) << why;
  const optrt::cuda::Driver &d = *gpu(why);
  std::mt19937 rng(11);
  std::vector<std::vector<float>> initial = initialParams(rng);
  GpuRun run("f32", initial);
  std::vector<StoredArray> grads;
  std::vector<optrt::DevicePtr> pointers;
  std::vector<std::vector<float>> values = draw(rng, 1);
  for (size_t k = 0; k < kSizes.size(); ++k) {
    grads.emplace_back(optrt::Dtype::F32, values[k], /*misaligned=*/k == 1);
    pointers.push_back(grads.back().address());
  }
  optrt::CudaStepOptions options;
  options.dynamicLossScale = true;
  optrt::cuda::CUstream stream = nullptr;
  d.check(graphs->streamCreate(&stream, 1), "cuStreamCreate");
  run.optimizer.step({pointers}, stream, options); // uploads pointers and options outside the capture
  d.check(graphs->beginCapture(stream, 2 /* relaxed */), "cuStreamBeginCapture_v2");
  run.optimizer.step({pointers}, stream, options);
  void *graph = nullptr, *exec = nullptr;
  d.check(graphs->endCapture(stream, &graph), "cuStreamEndCapture");
  d.check(graphs->instantiate(&exec, graph, 0), "cuGraphInstantiateWithFlags");
  d.check(d.cuStreamSynchronize(stream), "cuStreamSynchronize");
  ASSERT_EQ(run.optimizer.stepCount(), 1);

  float scale = run.optimizer.lossScale();
  std::vector<uint8_t> before = run.params[2].downloaded();
  std::vector<float> poisoned = values[2];
  poisoned[99] = std::numeric_limits<float>::quiet_NaN();
  grads[2].device.upload(0, poisoned.data(), poisoned.size());
  d.check(graphs->launch(exec, stream), "cuGraphLaunch");
  d.check(d.cuStreamSynchronize(stream), "cuStreamSynchronize");
  EXPECT_TRUE(run.optimizer.lastStepResult().skipped);
  EXPECT_EQ(run.optimizer.stepCount(), 1);
  EXPECT_EQ(run.optimizer.lossScale(), scale * 0.5f);
  EXPECT_EQ(run.params[2].downloaded(), before);

  grads[2].device.upload(0, values[2].data(), values[2].size());
  d.check(graphs->launch(exec, stream), "cuGraphLaunch");
  d.check(d.cuStreamSynchronize(stream), "cuStreamSynchronize");
  EXPECT_FALSE(run.optimizer.lastStepResult().skipped);
  EXPECT_EQ(run.optimizer.stepCount(), 2);
  EXPECT_NE(run.params[2].downloaded(), before);
}

} // namespace
} // namespace optdsl::gputest
