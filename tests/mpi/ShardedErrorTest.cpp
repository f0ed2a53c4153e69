// Mistakes on one rank of a sharded optimizer: every rank throws an error
// that names the rank and the problem (no rank waits forever in a
// collective), nothing changes, and the ranks stay in step: a correct call
// afterwards works. Also: what a rank holds (ownedRange, the memory report)
// and the state calls that a sharded optimizer refuses.
#include "MpiWorld.h"

#include "common/JitKernels.h"
#include "common/RandomValues.h"

#include "optrt/Optimizer.h"

#include <gtest/gtest.h>

#include <numeric>
#include <random>
#include <sstream>
#include <stdexcept>

namespace optdsl::test {
namespace {

using optrt::Optimizer;
using optrt::OptimizerOptions;

constexpr size_t kChunk = 1024;
const std::vector<size_t> kSizes = {5 * kChunk + 10, 3000, 700};

int lastRank() { return worldSize() - 1; }

OptimizerOptions shardedOptions(const std::string &layout = "f32") {
  OptimizerOptions options;
  options.layout = layout;
  options.threads = 1;
  options.chunkElements = kChunk;
  options.communicator = worldCommunicator();
  return options;
}

std::shared_ptr<const optrt::RuleKernels> adamw() { return jitKernels("adamw", {"f32", "param=bf16,master=f32,state=q8"}); }

struct Model {
  Model() {
    std::mt19937 rng(5);
    for (size_t n : kSizes) {
      params.push_back(normalValues(n, rng));
      grads.push_back(normalValues(n, rng, 0.1f));
    }
  }
  std::vector<float *> paramPointers() {
    std::vector<float *> result;
    for (auto &p : params)
      result.push_back(p.data());
    return result;
  }
  std::vector<std::vector<const float *>> gradPointers() const {
    std::vector<const float *> group;
    for (const auto &g : grads)
      group.push_back(g.data());
    return {group};
  }
  std::vector<std::vector<float>> params, grads;
};


TEST(ShardedErrors, AWrongGradientCountOnOneRankFailsEveryRankAndChangesNothing) {
  Model model;
  Optimizer optimizer(adamw(), shardedOptions());
  optimizer.addGroup(model.paramPointers(), kSizes);
  auto before = model.params;
  auto grads = model.gradPointers();
  if (worldRank() == lastRank())
    grads[0].pop_back();
  std::string message = messageOf([&] { optimizer.step(grads); });
  EXPECT_TRUE(contains(message, "got 2 gradients for group 0")) << message;
  if (worldRank() != lastRank())
    EXPECT_TRUE(contains(message, "rank " + std::to_string(lastRank()) + " failed")) << message;
  EXPECT_EQ(model.params, before);
  EXPECT_EQ(optimizer.stepCount(), 0);
  // Still in step with each other: the next correct step works everywhere.
  optimizer.step(model.gradPointers());
  EXPECT_EQ(optimizer.stepCount(), 1);
  EXPECT_NE(model.params, before);
}

TEST(ShardedErrors, GroupSizesThatDifferAcrossRanksAreRefusedOnEveryRank) {
  if (worldSize() < 2)
    GTEST_SKIP() << "needs two ranks to differ";
  Model model;
  Optimizer optimizer(adamw(), shardedOptions());
  std::vector<size_t> sizes = kSizes;
  if (worldRank() == lastRank())
    sizes[1] -= 1;
  std::string message = messageOf([&] { optimizer.addGroup(model.paramPointers(), sizes); });
  EXPECT_TRUE(contains(message, "the ranks disagree on the new group")) << message;
  EXPECT_TRUE(contains(message, "rank " + std::to_string(lastRank()) + " has")) << message;
  EXPECT_EQ(optimizer.numGroups(), 0);
  optimizer.addGroup(model.paramPointers(), kSizes);
  EXPECT_EQ(optimizer.numGroups(), 1);
}

TEST(ShardedErrors, HypersThatDifferAcrossRanksAreRefusedOnEveryRank) {
  if (worldSize() < 2)
    GTEST_SKIP() << "needs two ranks to differ";
  Model model;
  Optimizer optimizer(adamw(), shardedOptions());
  double lr = worldRank() == lastRank() ? 2e-3 : 1e-3;
  std::string message = messageOf([&] { optimizer.addGroup(model.paramPointers(), kSizes, {{"lr", lr}}); });
  EXPECT_TRUE(contains(message, "the ranks disagree on the new group")) << message;
  EXPECT_EQ(optimizer.numGroups(), 0);
}

TEST(ShardedErrors, AnUnknownHyperOnOneRankNamesItOnEveryRank) {
  Model model;
  Optimizer optimizer(adamw(), shardedOptions());
  std::map<std::string, double> hypers = {{"lr", 1e-3}};
  if (worldRank() == lastRank())
    hypers = {{"lrr", 1e-3}};
  std::string message = messageOf([&] { optimizer.addGroup(model.paramPointers(), kSizes, hypers); });
  EXPECT_TRUE(contains(message, "lrr")) << message;
  EXPECT_EQ(optimizer.numGroups(), 0);
}

TEST(ShardedErrors, LayoutsThatDifferAcrossRanksAreRefusedAtConstruction) {
  if (worldSize() < 2)
    GTEST_SKIP() << "needs two ranks to differ";
  std::string layout = worldRank() == lastRank() ? "param=bf16,master=f32,state=q8" : "f32";
  std::string message = messageOf([&] { Optimizer optimizer(adamw(), shardedOptions(layout)); });
  EXPECT_TRUE(contains(message, "the ranks disagree on the rule and the optimizer's options")) << message;
  EXPECT_TRUE(contains(message, "layout")) << message;
}

TEST(ShardedErrors, ALayoutOneRanksRuleLacksFailsEveryRank) {
  std::string layout = worldRank() == lastRank() ? "state=bf16" : "f32";
  std::string message = messageOf([&] { Optimizer optimizer(adamw(), shardedOptions(layout)); });
  EXPECT_TRUE(contains(message, "state=bf16")) << message;
}

TEST(ShardedErrors, StepOptionsThatDifferAcrossRanksAreRefused) {
  if (worldSize() < 2)
    GTEST_SKIP() << "needs two ranks to differ";
  Model model;
  Optimizer optimizer(adamw(), shardedOptions());
  optimizer.addGroup(model.paramPointers(), kSizes);
  optrt::StepOptions options;
  if (worldRank() == lastRank())
    options.maxGradNorm = 1.0;
  auto before = model.params;
  std::string message = messageOf([&] { optimizer.step(model.gradPointers(), options); });
  EXPECT_TRUE(contains(message, "the ranks disagree on the step's arguments")) << message;
  EXPECT_EQ(model.params, before);
}

TEST(ShardedErrors, AHyperSetOnOneRankOnlyIsRefusedAtTheNextStep) {
  if (worldSize() < 2)
    GTEST_SKIP() << "needs two ranks to differ";
  Model model;
  Optimizer optimizer(adamw(), shardedOptions());
  optimizer.addGroup(model.paramPointers(), kSizes);
  if (worldRank() == lastRank())
    optimizer.setHyper("lr", 5e-4);
  auto before = model.params;
  std::string message = messageOf([&] { optimizer.step(model.gradPointers()); });
  EXPECT_TRUE(contains(message, "the ranks disagree on the step's arguments")) << message;
  EXPECT_TRUE(contains(message, "lr=")) << message;
  EXPECT_EQ(model.params, before);
  optimizer.setHyper("lr", 5e-4); // now on every rank
  optimizer.step(model.gradPointers());
  EXPECT_EQ(optimizer.stepCount(), 1);
}

TEST(ShardedErrors, StreamsAndSafetensorsOfAShardedOptimizerAreRefusedByName) {
  Model model;
  Optimizer optimizer(adamw(), shardedOptions());
  optimizer.addGroup(model.paramPointers(), kSizes);
  std::stringstream stream;
  EXPECT_TRUE(contains(messageOf([&] { optimizer.saveState(stream); }), "one file per rank"));
  EXPECT_TRUE(contains(messageOf([&] { optimizer.loadState(stream); }), "one file per rank"));
  EXPECT_THROW(optimizer.exportSafetensors("/tmp/never-written.safetensors"), std::logic_error);
  EXPECT_THROW(optimizer.importSafetensors("/tmp/never-written.safetensors"), std::logic_error);
}

// Inputs besides the gradient (Sophia's Hessian estimate) are refused by a
// sharded step on every rank, nothing changed; the steps without one run.
TEST(ShardedErrors, InputsGivenToSomeRanksOnlyAreRefusedOnEveryRank) {
  // Rank 0 passes Sophia's Hessian estimate, the others do not: the ranks
  // would move different values, so every rank refuses the step, naming the
  // disagreement, and nothing changes.
  Model model;
  Optimizer optimizer(jitKernels("sophia", {"f32"}), shardedOptions());
  optimizer.addGroup(model.paramPointers(), kSizes);
  auto before = model.params;
  optrt::StepOptions options;
  std::vector<const void *> estimates;
  for (const auto &g : model.grads)
    estimates.push_back(g.data());
  if (worldRank() == 0)
    options.inputs = {{"hessian_estimate", {estimates}}};
  if (worldSize() == 1) { // nothing to disagree with: the step runs
    optimizer.step(model.gradPointers(), options);
    EXPECT_EQ(optimizer.stepCount(), 1);
    return;
  }
  std::string message = messageOf([&] { optimizer.step(model.gradPointers(), options); });
  EXPECT_TRUE(contains(message, "the ranks disagree on the step's arguments")) << message;
  EXPECT_TRUE(contains(message, "input hessian_estimate for groups 0")) << message;
  EXPECT_EQ(model.params, before);
  EXPECT_EQ(optimizer.stepCount(), 0);
  optimizer.step(model.gradPointers());
  EXPECT_EQ(optimizer.stepCount(), 1);
}

TEST(ShardedState, AGroupAddedMidRunMatchesOneProcess) {
  // Params of two models, one stepped in one process and one sharded.
  Model one, sharded;
  Model laterOne, laterSharded; // a second group, added after 2 steps
  // Every rank passes the same gradients: as already reduced (averaging 3
  // equal normal values would round).
  OptimizerOptions reduced = shardedOptions(), single = shardedOptions();
  reduced.gradients = optrt::ShardedGradients::Reduced;
  single.communicator = nullptr;
  Optimizer alone(adamw(), single), ranks(adamw(), reduced);
  alone.addGroup(one.paramPointers(), kSizes);
  ranks.addGroup(sharded.paramPointers(), kSizes);
  for (int step = 0; step < 2; ++step) {
    alone.step(one.gradPointers());
    ranks.step(sharded.gradPointers());
  }
  alone.addGroup(laterOne.paramPointers(), kSizes, {{"lr", 2e-3}});
  ranks.addGroup(laterSharded.paramPointers(), kSizes, {{"lr", 2e-3}});
  for (int step = 0; step < 2; ++step) {
    alone.step({one.gradPointers()[0], laterOne.gradPointers()[0]});
    ranks.step({sharded.gradPointers()[0], laterSharded.gradPointers()[0]});
  }
  EXPECT_EQ(ranks.stepCount(1), 2);
  EXPECT_TRUE(sharded.params == one.params);
  EXPECT_TRUE(laterSharded.params == laterOne.params);
}

TEST(ShardedState, RanksOwnDisjointPartsThatCoverEveryTensor) {
  Model model;
  Optimizer optimizer(adamw(), shardedOptions());
  optimizer.addGroup(model.paramPointers(), kSizes);
  for (size_t t = 0; t < kSizes.size(); ++t) {
    auto range = optimizer.ownedRange(0, t);
    std::vector<std::pair<size_t, size_t>> all = gatherFromRanks(range);
    size_t covered = 0;
    for (int r = 0; r < worldSize(); ++r) {
      EXPECT_LE(all[r].first, all[r].second);
      if (all[r].first == all[r].second)
        continue;
      EXPECT_EQ(all[r].first, covered) << "rank " << r << " of tensor " << t;
      EXPECT_EQ(all[r].first % kChunk, 0u) << "a part starts mid-chunk";
      covered = all[r].second;
    }
    EXPECT_EQ(covered, kSizes[t]) << "tensor " << t;
    EXPECT_EQ(optimizer.state("exp_avg", 0, t).size(), range.second - range.first);
  }
}

TEST(ShardedState, StateBytesPerRankAddUpToOneProcesssAndSplitEvenly) {
  Model model;
  auto kernels = adamw();
  for (const char *layout : {"f32", "param=bf16,master=f32,state=q8"}) {
    SCOPED_TRACE(layout);
    OptimizerOptions single = shardedOptions(layout);
    single.communicator = nullptr;
    // Stored params: bf16 ones for the bf16 layout, the model's for f32.
    std::vector<std::vector<uint16_t>> bf16Params;
    std::vector<void *> pointers;
    for (size_t t = 0; t < kSizes.size(); ++t) {
      bf16Params.emplace_back(kSizes[t], 0x3F80); // bf16 1.0
      pointers.push_back(std::string(layout) == "f32" ? static_cast<void *>(model.params[t].data())
                                                      : static_cast<void *>(bf16Params.back().data()));
    }
    Optimizer one(kernels, single), sharded(kernels, shardedOptions(layout));
    one.addGroupStored(pointers, kSizes);
    sharded.addGroupStored(pointers, kSizes);
    optrt::MemoryReport whole = one.memoryReport(), mine = sharded.memoryReport();
    std::vector<double> states = gatherFromRanks(mine.state), masters = gatherFromRanks(mine.master);
    double stateSum = std::accumulate(states.begin(), states.end(), 0.0);
    double masterSum = std::accumulate(masters.begin(), masters.end(), 0.0);
    EXPECT_NEAR(stateSum, whole.state, 1e-12); // adamw has no scalar states, which every rank keeps
    EXPECT_NEAR(masterSum, whole.master, 1e-12);
    EXPECT_EQ(mine.param, whole.param); // params stay whole on every rank
    optrt::MemoryReport together = sharded.memoryReportAllRanks();
    EXPECT_EQ(together.state, whole.state);
    EXPECT_EQ(together.master, whole.master);
    // Each rank's share is within one chunk of state (one group here) of
    // 1/N: at most 4 bytes per state and element.
    double chunkShare = 4.0 * static_cast<double>(kernels->states.size() * kChunk) /
                        static_cast<double>(sharded.numParams());
    EXPECT_LE(std::abs(mine.state - whole.state / worldSize()), chunkShare);
  }
}

} // namespace
} // namespace optdsl::test
