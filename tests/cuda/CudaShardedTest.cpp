// A sharded CudaOptimizer on one GPU: 2 and 3 ranks as threads of this
// process (tests/common/ThreadWorld.h, an engine of host memory: the
// optimizer stages its collectives through the host), each with its own
// copy of the params, against one CudaOptimizer given the mean gradient.
// Params bit for bit on every rank and each rank's part of every state and
// master, after steps with and without clipping by global norm (the
// statistics gathered), for rules with per-tensor reductions (lamb: the
// partials gathered) and without, with an input (sophia's Hessian estimate,
// averaged like the gradients), reading matrices (adafactor, came: row sums
// and column partials gathered, the passes over rows and columns on every
// rank), in f32 and bf16 + f32 master + q8.
// Every library rule. Skipped, with the reason, where there is no GPU.
#include "GpuTestSupport.h"
#include "common/BranchHypers.h"
#include "common/RuleLibrary.h"
#include "common/ThreadWorld.h"

#include "optdsl/CUDACompile.h"
#include "optdsl/JIT.h"
#include "optrt/CudaOptimizer.h"
#include "optrt/Storage.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <mutex>

namespace optdsl::gputest {
namespace {

struct RuleLayoutKernels {
  std::shared_ptr<const optrt::RuleKernels> host;
  std::vector<std::shared_ptr<const optrt::CudaKernels>> device;
};

/// Rule `name`'s host kernels for `layout` and the CUDA kernels of each of
/// its layouts, compiled once per process.
const RuleLayoutKernels &kernelsOf(const std::string &name, const std::string &layout) {
  static std::mutex mutex;
  static auto &cache = *new std::map<std::pair<std::string, std::string>, RuleLayoutKernels>();
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find({name, layout});
  if (it != cache.end())
    return it->second;
  CheckedRule rule = loadRuleFile(test::ruleLibraryDir() + "/" + name + ".opt");
  FixedHypers fixed = test::cudaFixedHypers(name);
  RuleLayoutKernels k{jitCompile(rule, fixed, {layout}), {}};
  for (const optrt::LayoutKernels &l : k.host->layouts) {
    CudaCompileOptions options;
    options.layout = l.name;
    k.device.push_back(std::make_shared<optrt::CudaKernels>(cudaCompile(rule, fixed, options)));
  }
  return cache.emplace(std::make_pair(name, layout), std::move(k)).first->second;
}

constexpr size_t kChunk = 4096;
constexpr int kSteps = 3;

// Flat rules: several chunks, a q8 fallback tensor, one whole q8 block
// short of a chunk.
const std::vector<size_t> kFlatSizes = {9 * kChunk + 300, 1000, 3 * kChunk - 256};
// Rules that read matrices: chunks of 64 whole rows (ChunkTable's least;
// rows of 1024 and 512 are whole q8 blocks): 4 chunks, the last of 8 rows; a
// rank-1 tensor (the fallback); a stack of 3 matrices of 50 rows whose
// chunks start inside the second and third.
const std::vector<size_t> kMatrixSizes = {200 * 1024, 1000, 3 * 50 * 512};
const std::vector<std::vector<size_t>> kMatrixShapes = {{200, 1024}, {1000}, {3, 50, 512}};

// The tensors of the test being run (set by each test before use).
std::vector<size_t> tensorSizes;

float initial(size_t t, size_t i) { return static_cast<float>(static_cast<int>((i * 37 + t * 11) % 199) - 99) / 128; }

// Rank r's gradient: multiples of 1/4096 times r^2 + 1, whose sums over 2
// or 3 ranks are exact (so the mean is one rounding in every engine) and
// not multiples of 3.
float gradient(int rank, size_t t, size_t i, int step) {
  return static_cast<float>(static_cast<int>((i * 13 + t * 5 + static_cast<size_t>(step) * 7) % 83) - 41) *
         static_cast<float>(rank * rank + 1) / 4096;
}

// Rank r's value of a rule's input (Sophia's Hessian estimate): as the
// gradients, another pattern.
float inputValue(int rank, size_t t, size_t i, int step) { return std::abs(gradient(rank, t, i + 17, step + 3)); }

optrt::CudaStepOptions optionsOf(int step) {
  optrt::CudaStepOptions options;
  if (step == 1)
    options.maxGradNorm = 0.5; // clips: the gradients' norm is larger
  return options;
}

/// One step's values of every tensor, stored in `dtype`, and their pointers.
struct StepValues {
  std::vector<StoredArray> arrays;
  std::vector<optrt::DevicePtr> pointers;
  StepValues(optrt::Dtype dtype, const std::function<float(size_t, size_t)> &value);
};

std::vector<float> values(size_t t, const std::function<float(size_t)> &at) {
  std::vector<float> v(tensorSizes[t]);
  for (size_t i = 0; i < v.size(); ++i)
    v[i] = at(i);
  return v;
}

std::vector<float> values(size_t t, const std::function<float(size_t)> &at);

StepValues::StepValues(optrt::Dtype dtype, const std::function<float(size_t, size_t)> &value) {
  arrays.reserve(tensorSizes.size());
  for (size_t t = 0; t < tensorSizes.size(); ++t) {
    arrays.emplace_back(dtype, values(t, [&](size_t i) { return value(t, i); }), false);
    pointers.push_back(arrays.back().address());
  }
}

/// The step's options, with the rule's input given on even steps: averaged
/// over `ranks` (rank -1: one process's mean) or this rank's.
optrt::CudaStepOptions stepOptions(const optrt::RuleKernels &rule, int step, int rank, int ranks,
                                   optrt::Dtype dtype, std::vector<StepValues> &keep) {
  optrt::CudaStepOptions options = optionsOf(step);
  if (rule.inputs.empty() || step % 2 != 0)
    return options;
  keep.emplace_back(dtype, [&](size_t t, size_t i) {
    if (rank >= 0)
      return inputValue(rank, t, i, step);
    float sum = 0;
    for (int r = 0; r < ranks; ++r)
      sum += inputValue(r, t, i, step);
    return sum / static_cast<float>(ranks);
  });
  options.inputs.push_back({rule.inputs[0].name, {keep.back().pointers}});
  return options;
}

class CudaSharded : public testing::TestWithParam<std::tuple<std::string, const char *, int>> {};

TEST_P(CudaSharded, RanksOnOneGpuStepAsOneProcess) {
  OPTDSL_REQUIRE_GPU();
  auto [name, layoutText, ranks] = GetParam();
  bool matrices = std::find(test::kMatrixRules.begin(), test::kMatrixRules.end(), name) != test::kMatrixRules.end();
  tensorSizes = matrices ? kMatrixSizes : kFlatSizes;
  std::vector<std::vector<size_t>> shapes = matrices ? kMatrixShapes : std::vector<std::vector<size_t>>{};
  const RuleLayoutKernels &k = kernelsOf(name, layoutText);
  optrt::Layout layout = optrt::Layout::parse(layoutText);
  optrt::CudaOptimizerOptions options;
  options.layout = layoutText;
  options.chunkElements = kChunk;
  options.smallTensorElements = 2048;

  // One process, given the mean of the ranks' gradients.
  StepValues reference(layout.param, initial);
  optrt::CudaOptimizer one(k.host, k.device, options);
  one.addGroup(reference.pointers, tensorSizes, {}, shapes);
  for (int step = 0; step < kSteps; ++step) {
    StepValues grads(layout.grad, [&](size_t t, size_t i) {
      float sum = 0;
      for (int r = 0; r < ranks; ++r)
        sum += gradient(r, t, i, step);
      return sum / static_cast<float>(ranks);
    });
    std::vector<StepValues> inputs;
    one.step({grads.pointers}, nullptr, stepOptions(one.rule(), step, -1, ranks, layout.grad, inputs));
    one.stepCount(); // waits before `grads` goes
  }

  test::ThreadWorld world(ranks);
  std::mutex reportMutex;
  world.run([&](int rank) {
    optrt::CudaOptimizerOptions sharded = options;
    sharded.communicator = world.communicator(rank);
    StepValues params(layout.param, initial);
    optrt::CudaOptimizer optimizer(k.host, k.device, sharded);
    optimizer.addGroup(params.pointers, tensorSizes, {}, shapes);
    for (int step = 0; step < kSteps; ++step) {
      StepValues grads(layout.grad, [&](size_t t, size_t i) { return gradient(rank, t, i, step); });
      std::vector<StepValues> inputs;
      optimizer.step({grads.pointers}, nullptr, stepOptions(optimizer.rule(), step, rank, ranks, layout.grad, inputs));
      optimizer.stepCount();
    }
    std::lock_guard<std::mutex> lock(reportMutex); // gtest's assertions from one thread at a time
    for (size_t t = 0; t < tensorSizes.size(); ++t) {
      std::string at = "rank " + std::to_string(rank) + " tensor " + std::to_string(t);
      EXPECT_EQ(firstDifference(decoded(layout.param, params.arrays[t].downloaded(), tensorSizes[t]),
                                decoded(layout.param, reference.arrays[t].downloaded(), tensorSizes[t])),
                -1)
          << at << ": params";
      auto [begin, end] = optimizer.ownedRange(0, t);
      for (const optrt::StateInfo &state : optimizer.rule().states) {
        if (state.scalar)
          continue;
        std::vector<float> whole = one.readState(state.name, 0, t);
        // Elementwise states: the rank's part; per row or column: whole on every rank.
        if (state.span == optrt::StateSpan::Elements)
          whole = std::vector<float>(whole.begin() + static_cast<long>(begin), whole.begin() + static_cast<long>(end));
        EXPECT_EQ(firstDifference(optimizer.readState(state.name, 0, t), whole), -1) << at << ": state " << state.name;
      }
      if (layout.master) {
        std::vector<float> whole = one.master(0, t);
        EXPECT_EQ(firstDifference(optimizer.master(0, t),
                                  std::vector<float>(whole.begin() + static_cast<long>(begin),
                                                     whole.begin() + static_cast<long>(end))),
                  -1)
            << at << ": master";
      }
    }
  });
}

// Every library rule with 3 ranks (uneven parts), a few with 2.
INSTANTIATE_TEST_SUITE_P(Library, CudaSharded,
                         testing::Combine(testing::ValuesIn(test::libraryRules()),
                                          testing::Values("f32", "param=bf16,master=f32,state=q8"), testing::Values(3)));
INSTANTIATE_TEST_SUITE_P(TwoRanks, CudaSharded,
                         testing::Combine(testing::Values("adamw", "lamb", "adafactor"),
                                          testing::Values("f32", "param=bf16,master=f32,state=q8"), testing::Values(2)));

} // namespace
} // namespace optdsl::gputest
