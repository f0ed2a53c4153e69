// q8 states of the rules that read tensors as matrices (Adafactor, CAME) on
// the GPU, as MatrixRule.Q8StatesAreTheReferenceEncodingOfTheF32Step checks
// them on the CPU: before each step the f32 optimizer is given exactly what
// the q8 one holds; after it, every state the q8 optimizer quantised must
// be the bitsandbytes encoding (optrt::quantizeBlockwise) of the f32 step's,
// the states per row and column the f32 step's bits, and Adafactor's params
// (which do not read the momentum) the f32 step's. Both run the same chunks
// and threads, so their row and column sums are the same bits. Skipped, with
// the reason, where there is no GPU.
#include "GpuTestSupport.h"
#include "common/BranchHypers.h"
#include "common/RandomValues.h"
#include "common/RuleLibrary.h"

#include "optdsl/CUDACompile.h"
#include "optdsl/JIT.h"
#include "optrt/CudaOptimizer.h"
#include "optrt/Storage.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

namespace optdsl::gputest {
namespace {

// Rows of whole q8 blocks (512 and 256 columns) and a vector under the
// small-tensor threshold (its states stay f32 in both runs).
const std::vector<std::vector<size_t>> kShapes = {{64, 512}, {3, 40, 256}, {33}};
const std::vector<size_t> kSizes = {32768, 30720, 33};

class CudaMatrixQ8 : public ::testing::TestWithParam<std::string> {};

TEST_P(CudaMatrixQ8, StatesAreTheReferenceEncodingOfTheF32Step) {
  OPTDSL_REQUIRE_GPU();
  const std::string name = GetParam();
  CheckedRule rule = loadRuleFile(test::ruleLibraryDir() + "/" + name + ".opt");
  auto compile = [&](const std::string &layout) {
    std::vector<std::shared_ptr<const optrt::CudaKernels>> device;
    auto host = jitCompile(rule, {}, {layout});
    for (const optrt::LayoutKernels &l : host->layouts) {
      CudaCompileOptions options;
      options.layout = l.name;
      device.push_back(std::make_shared<optrt::CudaKernels>(cudaCompile(rule, {}, options)));
    }
    optrt::CudaOptimizerOptions options;
    options.layout = layout;
    return optrt::CudaOptimizer(host, device, options);
  };
  optrt::CudaOptimizer q8 = compile("state=q8"), f32 = compile("f32");
  uint32_t seed = std::random_device{}();
  SCOPED_TRACE("random seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  std::vector<DeviceFloats> q8Params, f32Params;
  std::vector<optrt::DevicePtr> q8Pointers, f32Pointers;
  for (size_t n : kSizes) {
    std::vector<float> values = test::normalValues(n, rng, 1.0f);
    q8Params.emplace_back(n);
    f32Params.emplace_back(n);
    q8Params.back().upload(0, values.data(), n);
    q8Pointers.push_back(q8Params.back().at(0));
    f32Pointers.push_back(f32Params.back().at(0));
  }
  std::map<std::string, double> hypers = test::kBranchHypers.at(name);
  q8.addGroup(q8Pointers, kSizes, hypers, kShapes);
  f32.addGroup(f32Pointers, kSizes, hypers, kShapes);
  ASSERT_EQ(q8.tensorLayout(0, 0), "state=q8");
  ASSERT_EQ(q8.tensorLayout(0, 2), "f32");
  const optrt::RuleKernels &kernels = q8.rule();
  for (int step = 1; step <= 4; ++step) {
    SCOPED_TRACE("step " + std::to_string(step));
    for (size_t t = 0; t < kSizes.size(); ++t) {
      std::vector<float> params(kSizes[t]);
      q8Params[t].download(0, params.data(), params.size());
      f32Params[t].upload(0, params.data(), params.size());
      for (const optrt::StateInfo &state : kernels.states)
        if (!state.scalar && !state.scratch)
          f32.writeState(state.name, 0, t, q8.readState(state.name, 0, t));
    }
    std::vector<DeviceFloats> grads;
    std::vector<optrt::DevicePtr> gradPointers;
    for (size_t n : kSizes) {
      std::vector<float> g = test::normalValues(n, rng, std::pow(10.0f, static_cast<float>(step % 3) - 2.0f));
      grads.emplace_back(n);
      grads.back().upload(0, g.data(), n);
      gradPointers.push_back(grads.back().at(0));
    }
    q8.step({gradPointers});
    f32.step({gradPointers});
    for (size_t t = 0; t < kSizes.size(); ++t) {
      SCOPED_TRACE("tensor " + std::to_string(t));
      std::vector<float> q8After(kSizes[t]), f32After(kSizes[t]);
      q8Params[t].download(0, q8After.data(), q8After.size());
      f32Params[t].download(0, f32After.data(), f32After.size());
      for (float x : q8After)
        ASSERT_TRUE(std::isfinite(x));
      if (name == "adafactor")
        EXPECT_EQ(firstDifference(q8After, f32After), -1) << "params";
      for (const optrt::StateInfo &state : kernels.states) {
        if (state.scalar || state.scratch)
          continue;
        std::vector<float> exact = f32.readState(state.name, 0, t), ours = q8.readState(state.name, 0, t);
        std::vector<float> reference = exact;
        bool quantised = state.span == optrt::StateSpan::Elements && q8.tensorLayout(0, t) == "state=q8";
        if (quantised) {
          // exp_avg takes either sign: the signed map.
          std::vector<uint8_t> codes(exact.size());
          std::vector<float> absmax(optrt::q8Blocks(exact.size()));
          optrt::quantizeBlockwise(optrt::q8MapFor(optrt::Dtype::Q8Signed), exact, codes, absmax);
          optrt::dequantizeBlockwise(optrt::q8MapFor(optrt::Dtype::Q8Signed), codes, absmax, reference);
        }
        EXPECT_EQ(firstDifference(ours, reference), -1)
            << state.name << (quantised ? " (q8) differs from the q8 encoding of" : " differs from") << " the f32 step";
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Rules, CudaMatrixQ8, ::testing::Values("adafactor", "came"),
                         [](const auto &info) { return info.param; });

} // namespace
} // namespace optdsl::gputest
