// Every CUDA precision layout against the CPU kernels of the same layout,
// bit for bit (but for the payload of NaNs the arithmetic makes): the same
// rule, the same stored params (bf16/f16/f32) and gradients (with NaN and
// +-Inf inside one q8 block), the same seed; after each of four steps the
// stored params, the masters and every state (decoded from bf16/f16/q8) must
// be the CPU's bits. Rules without reductions only (a reduction sums in
// another order on the GPU). Tensors of 100 (the small-tensor fallback), 5000
// (a partial q8 block; its param and grad one element off alignment: the
// one-element path) and 70001 elements (several chunks). Skipped, with the
// reason, where there is no GPU.
#include "common/BranchHypers.h"
#include "GpuTestSupport.h"
#include "common/RandomValues.h"
#include "common/RuleLibrary.h"

#include "optdsl/CUDACompile.h"
#include "optdsl/JIT.h"
#include "optrt/CudaOptimizer.h"
#include "optrt/Layout.h"
#include "optrt/Optimizer.h"
#include "optrt/Storage.h"

#include <gtest/gtest.h>

#include <cctype>
#include <cmath>
#include <cstring>
#include <limits>
#include <ostream>
#include <random>

namespace optdsl::gputest {
namespace {

struct Case {
  std::string rule;
  std::string layout;
};

/// How gtest names a case in its output.
void PrintTo(const Case &c, std::ostream *out) { *out << c.rule << " [" << c.layout << "]"; }

std::vector<Case> cases() {
  const std::vector<std::string> every = {
      "f32", "param=bf16", "param=bf16,master=f32", "param=f16,grad=f16", "param=f16,master=f32", "grad=bf16",
      "state=bf16", "state=f16", "state=q8", "param=bf16,master=f32,state=q8", "param=bf16,master=remainder",
      "param=bf16,grad=bf16,master=remainder,state=q8", "param=bf16,state=bf16,rounding=stochastic",
      "param=f16,grad=f16,state=f16,rounding=stochastic",
      "param=bf16,grad=bf16,master=remainder,state=q8,rounding=stochastic"};
  std::vector<Case> result;
  for (const std::string &rule : {"adamw", "ademamix"})
    for (const std::string &layout : every)
      result.push_back({rule, layout});
  result.push_back({"ademamix", "m1=q8,m2=bf16,nu=f32"});
  for (const std::string &rule : {"sgd", "lion", "rmsprop", "nadam", "adagrad", "adam", "radam"})
    for (const std::string &layout : {"state=bf16", "param=bf16,master=f32,state=q8"})
      result.push_back({rule, layout});
  return result;
}

class CudaLayoutTest : public ::testing::TestWithParam<Case> {};

TEST_P(CudaLayoutTest, MatchesTheCpuKernelsBitForBit) {
  OPTDSL_REQUIRE_GPU();
  const Case &c = GetParam();
  CheckedRule rule = loadRuleFile(optdsl::test::ruleLibraryDir() + "/" + c.rule + ".opt");
  FixedHypers fixed = test::cudaFixedHypers(c.rule);
  auto host = jitCompile(rule, fixed, {c.layout});
  ASSERT_TRUE(host->reductions.empty()) << c.rule << " has reductions: not a bit-for-bit case";
  std::vector<std::shared_ptr<const optrt::CudaKernels>> device;
  for (const optrt::LayoutKernels &layout : host->layouts) {
    CudaCompileOptions options;
    options.layout = layout.name;
    device.push_back(std::make_shared<optrt::CudaKernels>(cudaCompile(rule, fixed, options)));
  }
  optrt::Layout layout = optrt::Layout::parse(c.layout);
  const std::vector<size_t> sizes = {100, 5000, 70001};
  bool hasMaster = false;
  for (const optrt::BufferDesc &b : host->layouts[0].buffers)
    hasMaster |= b.role == optrt::BufferRole::Master;
  uint32_t seed = std::random_device{}();
  SCOPED_TRACE("random seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  std::vector<StoredArray> params;
  for (size_t n : sizes)
    params.emplace_back(layout.param, test::normalValues(n, rng, 1.0f), /*misaligned=*/n == sizes[1]);

  optrt::OptimizerOptions cpuOptions;
  cpuOptions.layout = c.layout;
  cpuOptions.seed = static_cast<uint32_t>(rng());
  cpuOptions.threads = 1;
  optrt::Optimizer cpu(host, cpuOptions);
  std::vector<void *> cpuParams;
  for (StoredArray &p : params)
    cpuParams.push_back(p.host.data());
  cpu.addGroupStored(cpuParams, sizes);
  optrt::CudaOptimizerOptions gpuOptions;
  gpuOptions.layout = c.layout;
  gpuOptions.seed = cpuOptions.seed;
  optrt::CudaOptimizer gpu(host, device, gpuOptions);
  std::vector<optrt::DevicePtr> gpuParams;
  for (StoredArray &p : params)
    gpuParams.push_back(p.address());
  gpu.addGroup(gpuParams, sizes);

  for (int step = 1; step <= 4; ++step) {
    std::vector<StoredArray> grads;
    for (size_t k = 0; k < sizes.size(); ++k) {
      std::vector<float> g = test::normalValues(sizes[k], rng, std::pow(10.0f, static_cast<float>((k + step) % 5) - 3.0f));
      if (k == 1 && step == 2) {
        // Non-finite gradients inside one q8 block: they must not change
        // how the block's other elements are stored.
        g[300] = std::numeric_limits<float>::quiet_NaN();
        g[301] = std::numeric_limits<float>::infinity();
        g[302] = -std::numeric_limits<float>::infinity();
      }
      grads.emplace_back(layout.grad, g, /*misaligned=*/k == 1);
    }
    std::vector<const void *> cpuGrads;
    std::vector<optrt::DevicePtr> gpuGrads;
    for (StoredArray &g : grads) {
      cpuGrads.push_back(g.host.data());
      gpuGrads.push_back(g.address());
    }
    cpu.stepStored({cpuGrads});
    gpu.step({gpuGrads});
    for (size_t k = 0; k < sizes.size(); ++k) {
      std::string where = c.rule + " [" + c.layout + "] step " + std::to_string(step) + " tensor " +
                          std::to_string(k) + " (" + gpu.tensorLayout(0, k) + ")";
      ASSERT_EQ(gpu.tensorLayout(0, k), cpu.tensorLayout(0, k)) << where;
      long param = firstDifference(decoded(layout.param, params[k].downloaded(), sizes[k]),
                                   decoded(layout.param, params[k].host, sizes[k]));
      ASSERT_EQ(param, -1) << where << ": stored params first differ at element " << param;
      if (hasMaster)
        ASSERT_EQ(firstDifference(gpu.master(0, k), cpu.master(0, k)), -1) << where << ": master";
      for (const optrt::StateInfo &state : host->states) {
        if (state.scalar)
          continue;
        long at = firstDifference(gpu.readState(state.name, 0, k), cpu.readState(state.name, 0, k));
        ASSERT_EQ(at, -1) << where << ": state " << state.name << " first differs at element " << at;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Layouts, CudaLayoutTest, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<Case> &info) {
                           std::string name = info.param.rule + "_" + info.param.layout;
                           for (char &ch : name)
                             if (!std::isalnum(static_cast<unsigned char>(ch)))
                               ch = '_';
                           return name;
                         });

} // namespace
} // namespace optdsl::gputest
