// SGD with momentum, one phase and no reductions: every element's result is
// fixed by its own inputs, so the optimizer must match a plain loop bit for
// bit, whatever the chunking and thread count, with each group's own lr and
// with hypers changed between steps.
#include "TestData.h"
#include "TestRules.h"

namespace optrt::test {
namespace {

struct SgdReference {
  SgdReference(GroupedTensors initialParams, std::vector<double> lr, std::vector<double> momentum)
      : params(std::move(initialParams)), lr(std::move(lr)), momentum(std::move(momentum)) {
    for (const Tensors &group : params) {
      Tensors &out = buf.emplace_back();
      for (const std::vector<float> &tensor : group)
        out.emplace_back(tensor.size(), 0.0f);
    }
  }

  void step(const GroupedTensors &grads) {
    for (size_t g = 0; g < params.size(); ++g) {
      // The runtime hands kernels f32 uniforms; so does the reference.
      float lrF = static_cast<float>(lr[g]);
      float momentumF = static_cast<float>(momentum[g]);
      for (size_t t = 0; t < params[g].size(); ++t)
        for (size_t i = 0; i < params[g][t].size(); ++i) {
          float &m = buf[g][t][i];
          m = momentumF * m + grads[g][t][i];
          params[g][t][i] = params[g][t][i] - lrF * m;
        }
    }
  }

  GroupedTensors params;
  GroupedTensors buf;
  std::vector<double> lr;
  std::vector<double> momentum;
};

constexpr int numSteps = 3;
constexpr uint32_t paramSeed = 1;
constexpr uint32_t gradSeed = 100;

const HyperOverrides &groupLr() {
  static const HyperOverrides overrides = {{{"lr", 0.05}}, {{"lr", 0.2}}};
  return overrides;
}

GroupedTensors momentumOf(Optimizer &optimizer, const Shape &shape) {
  GroupedTensors out;
  for (size_t g = 0; g < shape.size(); ++g) {
    Tensors &group = out.emplace_back();
    for (size_t t = 0; t < shape[g].size(); ++t) {
      std::span<float> state = optimizer.state("momentum_buf", static_cast<int>(g), t);
      group.emplace_back(state.begin(), state.end());
    }
  }
  return out;
}

TEST(SgdMomentum, MatchesReferenceForEveryChunkingAndThreadCount) {
  for (size_t chunkElements : {size_t(65536), size_t(333), size_t(1)}) {
    for (unsigned threads : {1u, 2u, 3u}) {
      SCOPED_TRACE("chunkElements " + std::to_string(chunkElements) + ", threads " +
                   std::to_string(threads));
      Training run(sgdMomentumKernels(), {threads, chunkElements},
                   randomTensors(oddShape(), paramSeed), groupLr());
      SgdReference reference(randomTensors(oddShape(), paramSeed), {0.05, 0.2}, {0.9, 0.9});
      for (int s = 0; s < numSteps; ++s) {
        GroupedTensors grads = randomTensors(oddShape(), gradSeed + s);
        run.step(grads);
        reference.step(grads);
      }
      EXPECT_TRUE(bitwiseEqual(run.params, reference.params));
      EXPECT_TRUE(bitwiseEqual(momentumOf(run.optimizer, oddShape()), reference.buf));
      EXPECT_EQ(run.optimizer.stepCount(), numSteps);
    }
  }
}

TEST(SgdMomentum, SetHyperTakesEffectFromTheNextStep) {
  Training run(sgdMomentumKernels(), {2, 1000}, randomTensors(oddShape(), paramSeed), groupLr());
  SgdReference reference(randomTensors(oddShape(), paramSeed), {0.05, 0.2}, {0.9, 0.9});
  auto stepBoth = [&](int s) {
    GroupedTensors grads = randomTensors(oddShape(), gradSeed + s);
    run.step(grads);
    reference.step(grads);
  };

  stepBoth(0);
  // Every group, as an LR schedule would.
  run.optimizer.setHyper("lr", 0.5);
  reference.lr = {0.5, 0.5};
  EXPECT_EQ(run.optimizer.hyper("lr", 0), 0.5);
  EXPECT_EQ(run.optimizer.hyper("lr", 1), 0.5);
  stepBoth(1);
  EXPECT_TRUE(bitwiseEqual(run.params, reference.params));

  // One group at a time; the other keeps its value.
  run.optimizer.setHyper("lr", 0.01, 1);
  run.optimizer.setHyper("momentum", 0.5, 0);
  reference.lr[1] = 0.01;
  reference.momentum[0] = 0.5;
  EXPECT_EQ(run.optimizer.hyper("lr", 0), 0.5);
  EXPECT_EQ(run.optimizer.hyper("lr", 1), 0.01);
  EXPECT_EQ(run.optimizer.hyper("momentum", 0), 0.5);
  EXPECT_EQ(run.optimizer.hyper("momentum", 1), 0.9);
  stepBoth(2);
  EXPECT_TRUE(bitwiseEqual(run.params, reference.params));
  EXPECT_TRUE(bitwiseEqual(momentumOf(run.optimizer, oddShape()), reference.buf));
}

TEST(SgdMomentum, OverridesChangeTheTrajectory) {
  // Guards the test above against a schedule too small to show: the same
  // run without setHyper must land elsewhere.
  Training scheduled(sgdMomentumKernels(), {1, 65536}, randomTensors(oddShape(), paramSeed));
  Training constant(sgdMomentumKernels(), {1, 65536}, randomTensors(oddShape(), paramSeed));
  GroupedTensors grads = randomTensors(oddShape(), gradSeed);
  scheduled.optimizer.setHyper("lr", 0.5, 1);
  scheduled.step(grads);
  constant.step(grads);
  EXPECT_TRUE(
      bitwiseEqual(GroupedTensors{scheduled.params[0]}, GroupedTensors{constant.params[0]}));
  EXPECT_FALSE(
      bitwiseEqual(GroupedTensors{scheduled.params[1]}, GroupedTensors{constant.params[1]}));
}

TEST(SgdMomentum, WrittenStateIsWhatTheNextStepReads) {
  Training run(sgdMomentumKernels(), {3, 333}, randomTensors(oddShape(), paramSeed), groupLr());
  SgdReference reference(randomTensors(oddShape(), paramSeed), {0.05, 0.2}, {0.9, 0.9});
  GroupedTensors grads = randomTensors(oddShape(), gradSeed);
  run.step(grads);
  reference.step(grads);
  // A restart of momentum on one tensor, written through the span.
  std::span<float> buf = run.optimizer.state("momentum_buf", 0, 1);
  std::fill(buf.begin(), buf.end(), 0.0f);
  std::fill(reference.buf[0][1].begin(), reference.buf[0][1].end(), 0.0f);
  grads = randomTensors(oddShape(), gradSeed + 1);
  run.step(grads);
  reference.step(grads);
  EXPECT_TRUE(bitwiseEqual(run.params, reference.params));
}

} // namespace
} // namespace optrt::test
