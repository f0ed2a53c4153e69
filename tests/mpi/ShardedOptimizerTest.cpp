// A sharded optimizer (ZeRO stage 1 over MPI) against one process: every
// library rule, in f32, in bf16 params with an f32 master and q8 states, and
// (for some rules) with stochastic rounding; gradients averaged by the step
// or already reduced; loss scaling and clipping on some steps. After every
// step the params on every rank, the rank's part of every state and master,
// the scalar states and the gradient norm must be bitwise those of an
// optimizer in one process that got the same (averaged) gradients. ctest
// runs this with 1, 2, 3 and 4 ranks.
#include "MpiWorld.h"

#include "common/BranchHypers.h"
#include "common/JitKernels.h"
#include "common/RandomValues.h"

#include "optrt/Optimizer.h"
#include "optrt/Storage.h"

#include <gtest/gtest.h>

#include <deque>

#include <algorithm>
#include <bit>
#include <climits>
#include <cstring>
#include <random>

namespace optdsl::test {
namespace {

using optrt::Dtype;
using optrt::Layout;
using optrt::Optimizer;
using optrt::OptimizerOptions;
using optrt::ShardedGradients;
using optrt::StepOptions;
using optrt::StepResult;

const char *const kQ8Layout = "param=bf16,master=f32,state=q8";
const char *const kStochasticLayout = "param=bf16,state=bf16,rounding=stochastic";
const char *const kRemainderLayout = "param=bf16,master=remainder"; // apex's exact master in 2 bytes
const char *const kBf16GradsLayout = "param=bf16,grad=bf16,master=f32"; // gradients reduced in bf16
constexpr size_t kChunk = 4096;

// Group 0 lies in one flat buffer (one collective moves it); group 1's
// tensors are separate allocations (one collective each). Sizes cut chunks
// and shards mid-tensor; 1000 and 17 are below the q8 small-tensor size.
const std::vector<std::vector<size_t>> kGroupSizes = {{3 * kChunk + 300, 5000, 1000}, {9000, 17}};
// Their shapes for the rules that read tensors as matrices: chunks of whole
// rows (several per matrix: 341 rows of 12, 204 of 20 across a stack of two
// 125 x 20, 409 of 10; with q8 states whole q8 blocks), and vectors.
const std::vector<std::vector<std::vector<size_t>>> kGroupShapes = {{{1049, 12}, {2, 125, 20}, {1000}},
                                                                    {{900, 10}, {17}}};

// The params of both groups in one dtype: group 0 one buffer, group 1 one
// per tensor.
struct Params {
  explicit Params(Dtype dtype, uint32_t seed) : dtype(dtype) {
    std::mt19937 rng(seed);
    size_t flat = 0;
    for (size_t n : kGroupSizes[0])
      flat += n;
    group0.resize(optrt::elementBytes(dtype, flat));
    optrt::encodeF32(dtype, normalValues(flat, rng), group0.data(), nullptr);
    for (size_t n : kGroupSizes[1]) {
      group1.emplace_back(optrt::elementBytes(dtype, n));
      optrt::encodeF32(dtype, normalValues(n, rng), group1.back().data(), nullptr);
    }
  }
  std::vector<void *> pointers(size_t g) {
    std::vector<void *> result;
    if (g == 0) {
      size_t at = 0;
      for (size_t n : kGroupSizes[0]) {
        result.push_back(group0.data() + optrt::elementBytes(dtype, at));
        at += n;
      }
    } else {
      for (auto &tensor : group1)
        result.push_back(tensor.data());
    }
    return result;
  }
  bool operator==(const Params &other) const { return group0 == other.group0 && group1 == other.group1; }

  Dtype dtype;
  std::vector<char> group0;
  std::vector<std::vector<char>> group1;
};

// Gradients laid out like the params (group 0 flat), f32.
struct Grads {
  std::vector<float> group0;
  std::vector<std::vector<float>> group1;
  std::vector<std::vector<const float *>> pointers() const {
    std::vector<std::vector<const float *>> result(2);
    size_t at = 0;
    for (size_t n : kGroupSizes[0]) {
      result[0].push_back(group0.data() + at);
      at += n;
    }
    for (const auto &tensor : group1)
      result[1].push_back(tensor.data());
    return result;
  }
  template <typename Fill> static Grads make(Fill &&fill) {
    Grads grads;
    size_t flat = 0;
    for (size_t n : kGroupSizes[0])
      flat += n;
    grads.group0 = fill(flat);
    for (size_t n : kGroupSizes[1])
      grads.group1.push_back(fill(n));
    return grads;
  }
};

// Grads in a layout's gradient storage (f32 copied, bf16 rounded to
// nearest even), as stepStored takes them.
struct StoredGrads {
  StoredGrads(const Grads &grads, Dtype dtype) {
    auto encode = [&](const std::vector<float> &values) {
      std::vector<char> stored(optrt::elementBytes(dtype, values.size()));
      optrt::encodeF32(dtype, values, stored.data(), nullptr);
      return stored;
    };
    group0 = encode(grads.group0);
    for (const auto &tensor : grads.group1)
      group1.push_back(encode(tensor));
    unit = optrt::elementBytes(dtype, 1);
  }
  std::vector<std::vector<const void *>> pointers() const {
    std::vector<std::vector<const void *>> result(2);
    size_t at = 0;
    for (size_t n : kGroupSizes[0]) {
      result[0].push_back(group0.data() + at * unit);
      at += n;
    }
    for (const auto &tensor : group1)
      result[1].push_back(tensor.data());
    return result;
  }
  std::vector<char> group0;
  std::vector<std::vector<char>> group1;
  size_t unit;
};

// Rank r's gradient of `step`: k / 1024 with |k| <= 64, so the sum over up
// to 4 ranks is exact in f32 and the mean one rounding, whatever order the
// engine adds in. The reference gets that mean.
// Inputs (Sophia's Hessian estimate) are drawn the same way, non-negative
// (`positive`), from other seeds (`stream`).
std::vector<float> rankGradient(size_t n, int rank, int step, size_t salt, bool positive = false) {
  std::mt19937 rng(1000 * step + 17 * rank + static_cast<uint32_t>(salt));
  std::uniform_int_distribution<int> k(positive ? 0 : -64, 64);
  std::vector<float> values(n);
  for (float &x : values)
    x = static_cast<float>(k(rng)) / 1024;
  return values;
}

constexpr int kInputStream = 500; // added to the step: an input's draws

Grads averagedGradients(int step, bool positive = false) {
  size_t salt = 0;
  return Grads::make([&](size_t n) {
    ++salt;
    std::vector<float> sum(n, 0.0f);
    for (int r = 0; r < worldSize(); ++r) {
      std::vector<float> mine = rankGradient(n, r, step, salt, positive);
      for (size_t i = 0; i < n; ++i)
        sum[i] += mine[i];
    }
    for (float &x : sum)
      x /= static_cast<float>(worldSize());
    return sum;
  });
}

Grads ownGradients(int step, bool positive = false) {
  size_t salt = 0;
  return Grads::make([&](size_t n) { return rankGradient(n, worldRank(), step, ++salt, positive); });
}

// The same on every rank: what a trainer's all-reduce would have produced.
Grads reducedGradients(int step) {
  std::mt19937 rng(77 + step);
  return Grads::make([&](size_t n) { return normalValues(n, rng, 0.1f); });
}

Grads scaled(Grads grads, float factor) {
  for (float &x : grads.group0)
    x *= factor;
  for (auto &tensor : grads.group1)
    for (float &x : tensor)
      x *= factor;
  return grads;
}

// Step 2 carries a loss scale of 1024 (the gradients scaled by it, exactly);
// step 3 clips by global norm; the others are plain.
StepOptions stepOptions(int step) {
  StepOptions options;
  if (step == 2)
    options.lossScale = 1024;
  if (step == 3)
    options.maxGradNorm = 0.05;
  return options;
}

std::map<std::string, double> groupHypers(const optrt::RuleKernels &rule, size_t g) {
  std::map<std::string, double> hypers = kBranchHypers.at(rule.name);
  if (g == 1)
    for (const optrt::HyperInfo &hyper : rule.hypers)
      if (hyper.name == "lr" && !hyper.fixed)
        hypers["lr"] = hyper.defaultValue / 2;
  return hypers;
}

void addGroups(Optimizer &optimizer, Params &params) {
  bool matrices = std::count(kMatrixRules.begin(), kMatrixRules.end(), optimizer.rule().name) > 0;
  for (size_t g = 0; g < 2; ++g)
    optimizer.addGroupStored(params.pointers(g), kGroupSizes[g], groupHypers(optimizer.rule(), g),
                             matrices ? kGroupShapes[g] : std::vector<std::vector<size_t>>{});
}

uint64_t bits(double x) { return std::bit_cast<uint64_t>(x); }

// Whether `part` holds the bits of the floats at `expected` (an empty part:
// no memcmp, whose pointers must not be null).
bool sameBits(const std::vector<float> &part, const float *expected) {
  return part.empty() || std::memcmp(part.data(), expected, part.size() * sizeof(float)) == 0;
}

struct Case {
  std::string rule;
  std::string layout;
  ShardedGradients gradients;
  // The MPI engine's largest count per call: small, every collective is
  // split (all-gathers into broadcasts, the reduce-scatter ring into windows).
  size_t maxCountPerCall = INT_MAX;
};

void PrintTo(const Case &c, std::ostream *out) {
  *out << c.rule << " in " << c.layout << (c.gradients == ShardedGradients::Average ? ", averaged" : ", reduced");
  if (c.maxCountPerCall != INT_MAX)
    *out << ", collectives split into pieces of " << c.maxCountPerCall;
}

std::string caseName(const testing::TestParamInfo<Case> &info) {
  std::string layout = info.param.layout == "f32"                ? "f32"
                       : info.param.layout == kQ8Layout          ? "bf16_q8"
                       : info.param.layout == kRemainderLayout   ? "bf16_remainder"
                       : info.param.layout == kBf16GradsLayout   ? "bf16_grads"
                                                                 : "bf16_stochastic";
  return info.param.rule + "_" + layout + (info.param.gradients == ShardedGradients::Average ? "_average" : "_reduced") +
         (info.param.maxCountPerCall != INT_MAX ? "_pieces" : "");
}

class ShardedMatchesOneProcess : public testing::TestWithParam<Case> {};

TEST_P(ShardedMatchesOneProcess, BitForBitAfterEveryStep) {
  const Case &c = GetParam();
  auto kernels = jitKernels(c.rule, {"f32", kQ8Layout, kStochasticLayout, kRemainderLayout, kBf16GradsLayout});
  OptimizerOptions options;
  options.layout = c.layout;
  options.threads = 1; // up to 4 ranks share 2 cores
  options.chunkElements = kChunk;
  options.seed = 7;
  Dtype paramDtype = Layout::parse(c.layout).param;
  Params referenceParams(paramDtype, 3), shardedParams(paramDtype, 3);
  Optimizer reference(kernels, options);
  options.communicator = worldCommunicator({c.maxCountPerCall});
  options.gradients = c.gradients;
  Optimizer sharded(kernels, options);
  addGroups(reference, referenceParams);
  addGroups(sharded, shardedParams);

  for (int step = 1; step <= 4; ++step) {
    SCOPED_TRACE("step " + std::to_string(step));
    StepOptions stepOpts = stepOptions(step);
    float factor = static_cast<float>(stepOpts.lossScale);
    Grads forReference = scaled(c.gradients == ShardedGradients::Average ? averagedGradients(step)
                                                                          : reducedGradients(step),
                                factor);
    Grads forRank = c.gradients == ShardedGradients::Average ? scaled(ownGradients(step), factor) : forReference;
    // 16-bit gradients: the k/1024 values and their sums over up to 4 ranks
    // are exact in bf16 as well, and the reference's mean, rounded to f32
    // then to bf16, is what the ranks' reduce-scatter computes.
    Dtype gradDtype = Layout::parse(c.layout).grad;
    StoredGrads referenceGrads(forReference, gradDtype), rankGrads(forRank, gradDtype);
    // A rule's inputs on steps 1 and 3 (not 2 and 4: each rank must leave
    // them out alike), each rank with its own values, averaged like the
    // gradients (or, reduced, the same on every rank).
    StepOptions referenceOpts = stepOpts, rankOpts = stepOpts;
    std::deque<StoredGrads> inputStorage; // stable addresses
    if (step % 2 == 1)
      for (const optrt::InputInfo &input : kernels->inputs) {
        int stream = step + kInputStream;
        Grads averaged = averagedGradients(stream, true);
        Grads mine = c.gradients == ShardedGradients::Average ? ownGradients(stream, true) : averaged;
        const StoredGrads &forReferenceInput = inputStorage.emplace_back(averaged, gradDtype);
        const StoredGrads &forRankInput = inputStorage.emplace_back(mine, gradDtype);
        referenceOpts.inputs.push_back({input.name, forReferenceInput.pointers()});
        rankOpts.inputs.push_back({input.name, forRankInput.pointers()});
      }
    StepResult expected = reference.stepStored(referenceGrads.pointers(), referenceOpts);
    StepResult got = sharded.stepStored(rankGrads.pointers(), rankOpts);
    ASSERT_FALSE(expected.skipped);
    EXPECT_EQ(got.skipped, expected.skipped);
    EXPECT_EQ(bits(got.gradNorm), bits(expected.gradNorm)) << got.gradNorm << " vs " << expected.gradNorm;
    EXPECT_EQ(bits(got.clipCoefficient), bits(expected.clipCoefficient));
    EXPECT_TRUE(shardedParams == referenceParams) << "params differ";

    for (int g = 0; g < 2; ++g)
      for (size_t t = 0; t < kGroupSizes[g].size(); ++t) {
        auto [begin, end] = sharded.ownedRange(g, t);
        SCOPED_TRACE("tensor " + std::to_string(t) + " of group " + std::to_string(g) + ", owned [" +
                     std::to_string(begin) + ", " + std::to_string(end) + ")");
        for (const optrt::StateInfo &state : kernels->states) {
          if (state.scalar) {
            EXPECT_EQ(bits(sharded.scalarState(state.name, g, t)), bits(reference.scalarState(state.name, g, t)))
                << state.name;
            continue;
          }
          if (state.span != optrt::StateSpan::Elements) {
            // Per row or column: every rank keeps the whole state.
            if (!state.scratch)
              EXPECT_TRUE(sharded.readState(state.name, g, t) == reference.readState(state.name, g, t))
                  << state.name;
            continue;
          }
          std::vector<float> all = reference.readState(state.name, g, t);
          std::vector<float> part = sharded.readState(state.name, g, t);
          // EXPECT, never ASSERT: a rank that left the test early would
          // leave the others waiting in the next step's collectives.
          EXPECT_EQ(part.size(), end - begin) << state.name;
          if (part.size() == end - begin)
            EXPECT_TRUE(sameBits(part, all.data() + begin)) << state.name;
        }
        if (Layout::parse(c.layout).master) {
          std::vector<float> all = reference.master(g, t), part = sharded.master(g, t);
          EXPECT_EQ(part.size(), end - begin);
          if (part.size() == end - begin)
            EXPECT_TRUE(sameBits(part, all.data() + begin)) << "master";
        }
      }
  }
  EXPECT_EQ(sharded.stepCount(), reference.stepCount());
}

std::vector<Case> allCases() {
  std::vector<Case> cases;
  for (const std::string &rule : kernelRules())
    for (const char *layout : {"f32", kQ8Layout})
      for (ShardedGradients gradients : {ShardedGradients::Average, ShardedGradients::Reduced})
        cases.push_back({rule, layout, gradients});
  // Stochastic rounding's bits depend on the element and the step only.
  for (const char *rule : {"adamw", "ademamix", "lion"})
    cases.push_back({rule, kStochasticLayout, ShardedGradients::Average});
  for (const char *rule : {"adamw", "lamb"})
    cases.push_back({rule, kRemainderLayout, ShardedGradients::Average});
  for (const char *rule : {"adamw", "ademamix", "lamb", "adamw_clip"})
    for (ShardedGradients gradients : {ShardedGradients::Average, ShardedGradients::Reduced})
      cases.push_back({rule, kBf16GradsLayout, gradients});
  for (const char *layout : {"f32", kQ8Layout})
    cases.push_back({"lamb", layout, ShardedGradients::Average, 1000});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Library, ShardedMatchesOneProcess, testing::ValuesIn(allCases()), caseName);

} // namespace
} // namespace optdsl::test
