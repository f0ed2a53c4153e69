// CudaOptimizer's host side for rules that read tensors as matrices
// (adafactor, came), against the fake driver: the launch sequence (a
// finish kernel for every pass that sums columns), the states per row and
// column in device memory (lengths, misuse named), checkpoints shared with
// the CPU optimizer bit for bit, and the memory report. What the kernels
// compute is tested on a GPU (CudaKernelTest.cpp, MatchesInterpreterOnMatrices).
#include "common/BranchHypers.h"
#include "common/RandomValues.h"
#include "common/RuleLibrary.h"
#include "optdsl/CUDACompile.h"
#include "optdsl/JIT.h"
#include "optrt/CudaOptimizer.h"
#include "optrt/Optimizer.h"

#include "cuda/FakeDriverControl.h"

#include <gtest/gtest.h>

#include <algorithm>

#include <cstring>
#include <random>
#include <sstream>

namespace {

using optdsl::test::Fake;
using optrt::DevicePtr;

struct Rule {
  std::shared_ptr<const optrt::RuleKernels> host;
  std::shared_ptr<const optrt::CudaKernels> device;
};

const Rule &compiled(const std::string &name) {
  // Never destroyed: JIT engines must not outlive LLVM's globals.
  static auto &cache = *new std::map<std::string, Rule>();
  auto it = cache.find(name);
  if (it == cache.end()) {
    optdsl::CheckedRule rule = optdsl::loadRuleFile(optdsl::test::ruleLibraryDir() + "/" + name + ".opt");
    it = cache
             .emplace(name, Rule{optdsl::jitCompile(rule, {}),
                                 std::make_shared<optrt::CudaKernels>(optdsl::cudaCompile(rule, {}))})
             .first;
  }
  return it->second;
}

// 40 x 700 and 300 x 17 in several chunks of whole rows, a stack of three
// 5 x 7 in one, a vector (one row).
const std::vector<std::vector<size_t>> kShapes = {{40, 700}, {300, 17}, {3, 5, 7}, {33}};
const std::vector<size_t> kSizes = {28000, 5100, 105, 33};

class FakeDriverMatrix : public optdsl::test::FakeDriverFixture<::testing::TestWithParam<std::string>> {
protected:
  const Rule &rule() { return compiled(GetParam()); }

  /// Device params (fake: host memory) holding `values`.
  std::vector<DevicePtr> deviceParams(const std::vector<std::vector<float>> &values) {
    std::vector<DevicePtr> params;
    for (const std::vector<float> &v : values) {
      params.push_back(fake().alloc(v.size() * sizeof(float)));
      std::memcpy(reinterpret_cast<void *>(params.back()), v.data(), v.size() * sizeof(float));
    }
    return params;
  }
  std::vector<std::vector<float>> randomParams(std::mt19937 &rng) {
    std::vector<std::vector<float>> values;
    for (size_t n : kSizes)
      values.push_back(optdsl::test::normalValues(n, rng));
    return values;
  }
};

TEST_P(FakeDriverMatrix, EveryPassThatSumsColumnsIsFinished) {
  std::shared_ptr<const optrt::CudaKernels> device = rule().device;
  // adafactor and came sum columns in a pass over the elements: that pass
  // has a finish kernel, whether or not it also reduces over the tensor.
  bool someColumnSums = false;
  for (int p = 0; p < rule().host->numPhases; ++p) {
    bool reduces = false;
    for (const optrt::ReductionInfo &r : rule().host->reductions)
      reduces |= r.phase == p;
    bool sumsColumns = false;
    for (const optrt::AxisReductionInfo &a : rule().host->axisReductions)
      sumsColumns |= a.phase == p && !a.alongRows && rule().host->phaseDomains[p] == optrt::PhaseDomain::Elements;
    EXPECT_EQ(!device->finishEntries[p].empty(), reduces || sumsColumns) << "phase " << p;
    someColumnSums |= sumsColumns;
  }
  EXPECT_TRUE(someColumnSums);
  // The chunks' column-partial pointers take one more partials slot.
  EXPECT_GE(device->partialStride, 2);

  std::mt19937 rng(3);
  optrt::CudaOptimizer optimizer(rule().host, device, {-1, 4096});
  optimizer.addGroup(deviceParams(randomParams(rng)), kSizes, {}, kShapes);
  std::vector<DevicePtr> grads;
  for (size_t n : kSizes)
    grads.push_back(fake().alloc(n * sizeof(float)));
  fake().reset();
  optimizer.step({grads});
  EXPECT_EQ(optdsl::test::launchedKernels(), optdsl::test::stepLaunches(*device));
}

TEST_P(FakeDriverMatrix, StatesPerRowAndColumnAreAsLongAsTheMatricesSay) {
  std::mt19937 rng(5);
  optrt::CudaOptimizer optimizer(rule().host, rule().device, {-1, 4096});
  optimizer.addGroup(deviceParams(randomParams(rng)), kSizes, {}, kShapes);
  // matrices x rows, matrices x cols; a vector is one row.
  const std::vector<std::pair<size_t, size_t>> lengths = {{40, 700}, {300, 17}, {15, 21}, {1, 33}};
  for (size_t t = 0; t < kSizes.size(); ++t) {
    EXPECT_EQ(optimizer.readState("exp_avg_sq_row", 0, t), std::vector<float>(lengths[t].first, 0.0f)) << t;
    EXPECT_EQ(optimizer.readState("exp_avg_sq_col", 0, t), std::vector<float>(lengths[t].second, 0.0f)) << t;
    EXPECT_EQ(optimizer.readState("exp_avg", 0, t).size(), kSizes[t]);
  }
  std::vector<float> rows = optdsl::test::normalValues(300, rng);
  optimizer.writeState("exp_avg_sq_row", 0, 1, rows);
  EXPECT_EQ(optimizer.readState("exp_avg_sq_row", 0, 1), rows);
  EXPECT_EQ(optimizer.readState("exp_avg_sq_row", 0, 0), std::vector<float>(40, 0.0f)); // its neighbour untouched
  try {
    optimizer.writeState("exp_avg_sq_col", 0, 1, std::vector<float>(300, 1.0f));
    ADD_FAILURE() << "300 values for 17 columns were accepted";
  } catch (const std::invalid_argument &e) {
    EXPECT_EQ(std::string(e.what()), "optrt::CudaOptimizer::writeState: 300 values for state 'exp_avg_sq_col' of "
                                     "tensor 1 of group 0, which holds 17 (one per row or column of its matrices)");
  }
  EXPECT_EQ(optimizer.readState("exp_avg_sq_col", 0, 1), std::vector<float>(17, 0.0f));
}

/// A checkpoint of the CPU optimizer after three steps loads into the CUDA
/// optimizer (the states per row and column included) and saves back the
/// same bytes; tensors of other shapes refuse it by name, unchanged.
TEST_P(FakeDriverMatrix, CheckpointsMoveBetweenTheCpuAndTheGpuBitForBit) {
  std::mt19937 rng(7);
  std::vector<std::vector<float>> params = randomParams(rng);
  std::vector<std::vector<float>> cpuParams = params;
  optrt::Optimizer cpu(rule().host, {2, 4096});
  std::vector<float *> pointers;
  for (std::vector<float> &p : cpuParams)
    pointers.push_back(p.data());
  cpu.addGroup(pointers, kSizes, {}, kShapes);
  for (int step = 0; step < 3; ++step) {
    std::vector<std::vector<float>> grads;
    std::vector<const float *> gradPointers;
    for (size_t n : kSizes)
      grads.push_back(optdsl::test::normalValues(n, rng, 0.1f));
    for (const std::vector<float> &g : grads)
      gradPointers.push_back(g.data());
    cpu.step({gradPointers});
  }
  std::stringstream saved;
  cpu.saveState(saved);

  optrt::CudaOptimizer gpu(rule().host, rule().device, {-1, 4096});
  gpu.addGroup(deviceParams(cpuParams), kSizes, {}, kShapes);
  gpu.loadState(saved);
  EXPECT_EQ(gpu.stepCount(), 3);
  for (size_t t = 0; t < kSizes.size(); ++t)
    for (const optrt::StateInfo &state : rule().host->states)
      if (!state.scalar && !state.scratch)
        EXPECT_EQ(gpu.readState(state.name, 0, t), cpu.readState(state.name, 0, t)) << state.name << " of " << t;
  EXPECT_NE(gpu.readState("exp_avg_sq_row", 0, 0), std::vector<float>(40, 0.0f)); // the steps reached it
  std::stringstream back;
  gpu.saveState(back);
  EXPECT_TRUE(back.str() == saved.str()) << "the GPU optimizer saved another stream";

  std::vector<std::vector<size_t>> otherShapes = {{700, 40}, {300, 17}, {3, 5, 7}, {33}};
  optrt::CudaOptimizer other(rule().host, rule().device, {-1, 4096});
  other.addGroup(deviceParams(params), kSizes, {}, otherShapes);
  std::vector<float> before = other.readState("exp_avg_sq_col", 0, 0);
  std::stringstream again(saved.str());
  try {
    other.loadState(again);
    ADD_FAILURE() << "a stream of 40 x 700 matrices loaded into 700 x 40";
  } catch (const std::invalid_argument &e) {
    EXPECT_NE(std::string(e.what()).find("the tensor's shape differs"), std::string::npos) << e.what();
  }
  EXPECT_EQ(other.readState("exp_avg_sq_col", 0, 0), before);
  EXPECT_EQ(other.stepCount(), 0);
}

TEST_P(FakeDriverMatrix, MemoryReportCountsTheFactoredStatesAsTheCpuDoes) {
  std::mt19937 rng(9);
  std::vector<std::vector<float>> params = randomParams(rng);
  optrt::Optimizer cpu(rule().host);
  std::vector<float *> pointers;
  for (std::vector<float> &p : params)
    pointers.push_back(p.data());
  cpu.addGroup(pointers, kSizes, {}, kShapes);
  optrt::CudaOptimizer gpu(rule().host, rule().device);
  gpu.addGroup(deviceParams(params), kSizes, {}, kShapes);
  optrt::MemoryReport a = cpu.memoryReport(), b = gpu.memoryReport();
  EXPECT_EQ(a.state, b.state);
  EXPECT_EQ(a.total(), b.total());
  ASSERT_EQ(a.states.size(), b.states.size());
  for (size_t s = 0; s < a.states.size(); ++s)
    EXPECT_EQ(a.states[s].bytesPerParam, b.states[s].bytesPerParam) << a.states[s].name;
}

// q8 states: the CUDA kernels quantise each row's q8 blocks as they go, so
// a tensor in the q8 layout needs rows of whole blocks; one without is
// refused by name with nothing added, one with them (and a small tensor in
// the f32 fallback) steps both runs and reports the CPU's memory.
TEST_P(FakeDriverMatrix, Q8StatesNeedRowsOfWholeBlocks) {
  const std::string layout = "state=q8";
  optdsl::test::LayoutRule kernels = optdsl::test::compileLayouts(GetParam(), {layout});
  ASSERT_EQ(kernels.device.size(), 2u) << "the layout and its f32 fallback";
  optrt::CudaOptimizer optimizer(kernels.host, kernels.device, {.layout = layout});
  try {
    optimizer.addGroup({fake().alloc(28000 * sizeof(float))}, {28000}, {}, {{40, 700}});
    ADD_FAILURE() << "rows of 700 columns accepted";
  } catch (const std::invalid_argument &e) {
    std::string what = e.what();
    EXPECT_NE(what.find("rows of 700 columns"), std::string::npos) << what;
    EXPECT_NE(what.find("a multiple of 256 columns"), std::string::npos) << what;
    EXPECT_NE(what.find("smallTensorElements above 28000"), std::string::npos) << what;
  }
  EXPECT_EQ(optimizer.numGroups(), 0);

  const std::vector<std::vector<size_t>> shapes = {{64, 512}, {3, 40, 256}, {33}};
  const std::vector<size_t> sizes = {32768, 30720, 33};
  std::vector<DevicePtr> params, grads;
  for (size_t n : sizes) {
    params.push_back(fake().alloc(n * sizeof(float)));
    grads.push_back(fake().alloc(n * sizeof(float)));
  }
  optimizer.addGroup(params, sizes, {}, shapes);
  EXPECT_EQ(optimizer.tensorLayout(0, 0), layout);
  EXPECT_EQ(optimizer.tensorLayout(0, 1), layout);
  EXPECT_EQ(optimizer.tensorLayout(0, 2), kernels.device[1]->layout);
  fake().reset();
  optimizer.step({grads});
  std::vector<std::string> launched = optdsl::test::launchedKernels();
  for (const auto &device : kernels.device)
    EXPECT_NE(std::find(launched.begin(), launched.end(), device->elementEntries[0]), launched.end())
        << device->elementEntries[0] << " not launched";
  optrt::Optimizer cpu(kernels.host, {.layout = layout});
  std::vector<std::vector<float>> host;
  std::vector<float *> hostPointers;
  for (size_t n : sizes) {
    host.emplace_back(n, 0.5f);
    hostPointers.push_back(host.back().data());
  }
  cpu.addGroup(hostPointers, sizes, {}, shapes);
  optrt::MemoryReport gpuReport = optimizer.memoryReport(), cpuReport = cpu.memoryReport();
  EXPECT_EQ(gpuReport.state, cpuReport.state);
  EXPECT_EQ(gpuReport.master, cpuReport.master);
}

INSTANTIATE_TEST_SUITE_P(Rules, FakeDriverMatrix, ::testing::ValuesIn(optdsl::test::kMatrixRules),
                         [](const auto &info) { return info.param; });

} // namespace
