// State by name, its initial values from each group's hypers, its alignment,
// the memory report, hyper defaults, and groups added after steps.
#include "TestData.h"
#include "TestRules.h"

#include <algorithm>
#include <cstdint>

namespace optrt::test {
namespace {

constexpr uint32_t paramSeed = 11;
constexpr uint32_t gradSeed = 1100;

// Element counts of oddShape rounded up to 16 floats (64 bytes):
// 1→16, 70001→70016, 17→32, 7→16, 1000→1008.
constexpr size_t oddShapePaddedFloats = 16 + 70016 + 32 + 16 + 1008;
constexpr size_t oddShapeParams = 1 + 70001 + 17 + 7 + 1000;
constexpr size_t oddShapeTensors = 5;

TEST(StateAccess, InitialStateComesFromEachGroupsHypers) {
  Training run(lambLikeKernels(), {2, 333}, randomTensors(oddShape(), paramSeed),
               {{{"v0", 0.5}}, {}});
  for (size_t g = 0; g < oddShape().size(); ++g)
    for (size_t t = 0; t < oddShape()[g].size(); ++t) {
      int group = static_cast<int>(g);
      std::span<float> m = run.optimizer.state("m", group, t);
      std::span<float> v = run.optimizer.state("v", group, t);
      ASSERT_EQ(m.size(), oddShape()[g][t]);
      ASSERT_EQ(v.size(), oddShape()[g][t]);
      EXPECT_TRUE(std::all_of(m.begin(), m.end(), [](float x) { return x == 0.0f; }));
      float v0 = g == 0 ? 0.5f : 0.1f;
      EXPECT_TRUE(std::all_of(v.begin(), v.end(), [&](float x) { return x == v0; }));
      EXPECT_EQ(run.optimizer.scalarState("count", group, t), 0.0);
      EXPECT_EQ(run.optimizer.scalarState("lastNorm", group, t), 0.0);
    }
}

TEST(StateAccess, HypersAreDefaultsUnlessOverridden) {
  Training run(lambLikeKernels(), {1, 65536}, randomTensors(oddShape(), paramSeed),
               {{{"lr", 0.5}, {"eps", 1e-3}}, {}});
  EXPECT_EQ(run.optimizer.hyper("lr", 0), 0.5);
  EXPECT_EQ(run.optimizer.hyper("eps", 0), 1e-3);
  EXPECT_EQ(run.optimizer.hyper("beta1", 0), 0.9);
  EXPECT_EQ(run.optimizer.hyper("lr", 1), 0.01);
  EXPECT_EQ(run.optimizer.hyper("eps", 1), 1e-6);
  EXPECT_EQ(run.optimizer.numGroups(), 2);
  EXPECT_EQ(run.optimizer.numTensors(0), 3u);
  EXPECT_EQ(run.optimizer.numTensors(1), 2u);
}

TEST(StateAccess, EverySliceIs64ByteAlignedAndDisjoint) {
  Training run(lambLikeKernels(), {2, 333}, randomTensors(oddShape(), paramSeed));
  std::vector<std::pair<const float *, const float *>> slices;
  for (size_t g = 0; g < oddShape().size(); ++g)
    for (size_t t = 0; t < oddShape()[g].size(); ++t)
      for (const char *name : {"m", "v"}) {
        std::span<float> s = run.optimizer.state(name, static_cast<int>(g), t);
        EXPECT_EQ(reinterpret_cast<uintptr_t>(s.data()) % 64, 0u) << name << " " << g << " " << t;
        slices.emplace_back(s.data(), s.data() + s.size());
      }
  std::sort(slices.begin(), slices.end());
  for (size_t i = 1; i < slices.size(); ++i)
    EXPECT_LE(slices[i - 1].second, slices[i].first);
}

TEST(StateAccess, MemoryReportCountsArenaWithPaddingAndScalars) {
  Training sgd(sgdMomentumKernels(), {1, 65536}, randomTensors(oddShape(), paramSeed));
  EXPECT_EQ(sgd.optimizer.numParams(), oddShapeParams);
  EXPECT_EQ(sgd.optimizer.stateBytes(), oddShapePaddedFloats * 4);
  EXPECT_EQ(sgd.optimizer.stateBytes(), 284352u);
  EXPECT_DOUBLE_EQ(sgd.optimizer.stateBytesPerParam(), 284352.0 / 71026.0);

  // Two elementwise states, two f64 scalars per tensor.
  Training lamb(lambLikeKernels(), {1, 65536}, randomTensors(oddShape(), paramSeed));
  EXPECT_EQ(lamb.optimizer.stateBytes(), 2 * oddShapePaddedFloats * 4 + oddShapeTensors * 2 * 8);
  EXPECT_DOUBLE_EQ(lamb.optimizer.stateBytesPerParam(), 568784.0 / 71026.0);

  // No elementwise state at all: only the four scalars per tensor.
  Training stats(gradStatsKernels(), {1, 65536}, randomTensors(oddShape(), paramSeed));
  EXPECT_EQ(stats.optimizer.stateBytes(), oddShapeTensors * 4 * 8);

  Optimizer empty(sgdMomentumKernels(), {1, 65536});
  EXPECT_EQ(empty.stateBytes(), 0u);
  EXPECT_EQ(empty.numParams(), 0u);
  EXPECT_EQ(empty.stateBytesPerParam(), 0.0);
}

TEST(StateAccess, AddGroupAfterStepsKeepsEarlierState) {
  Shape first = {{1000, 17}};
  Shape second = {{70001, 3}};
  GroupedTensors params = randomTensors(first, paramSeed);
  GroupedTensors later = randomTensors(second, paramSeed + 1);
  Optimizer optimizer(lambLikeKernels(), {3, 333});
  optimizer.addGroup({params[0][0].data(), params[0][1].data()}, {1000, 17});
  for (int s = 0; s < 2; ++s)
    optimizer.step(pointersTo(randomTensors(first, gradSeed + s)));

  std::vector<std::vector<float>> mBefore, vBefore;
  for (size_t t = 0; t < 2; ++t) {
    std::span<float> m = optimizer.state("m", 0, t);
    std::span<float> v = optimizer.state("v", 0, t);
    mBefore.emplace_back(m.begin(), m.end());
    vBefore.emplace_back(v.begin(), v.end());
  }
  size_t bytesBefore = optimizer.stateBytes();

  EXPECT_EQ(optimizer.addGroup({later[0][0].data(), later[0][1].data()}, {70001, 3}, {{"v0", 2.0}}),
            1);
  for (size_t t = 0; t < 2; ++t) {
    EXPECT_TRUE(bitwiseEqual(optimizer.state("m", 0, t), mBefore[t]));
    EXPECT_TRUE(bitwiseEqual(optimizer.state("v", 0, t), vBefore[t]));
    EXPECT_EQ(optimizer.scalarState("count", 0, t), 2.0);
    EXPECT_EQ(optimizer.scalarState("count", 1, t), 0.0);
    std::span<float> v = optimizer.state("v", 1, t);
    EXPECT_TRUE(std::all_of(v.begin(), v.end(), [](float x) { return x == 2.0f; }));
  }
  EXPECT_EQ(optimizer.stateBytes(), bytesBefore + 2 * (70016 + 16) * 4 + 2 * 2 * 8);
  EXPECT_EQ(optimizer.stepCount(), 2);

  GroupedTensors grads = randomTensors(first, gradSeed + 2);
  GroupedTensors laterGrads = randomTensors(second, gradSeed + 3);
  optimizer.step({pointersTo(grads)[0], pointersTo(laterGrads)[0]});
  EXPECT_EQ(optimizer.stepCount(), 3);
  EXPECT_EQ(optimizer.scalarState("count", 0, 0), 3.0);
  EXPECT_EQ(optimizer.scalarState("count", 1, 0), 1.0);
}

TEST(StateAccess, StepCountStartsAtZeroAndKernelsSeeOneFirst) {
  Shape shape = {{10}};
  Training run(recorderKernels(), {1, 65536}, randomTensors(shape, paramSeed));
  takeRecordedCalls();
  EXPECT_EQ(run.optimizer.stepCount(), 0);
  run.step(randomTensors(shape, gradSeed));
  EXPECT_EQ(run.optimizer.stepCount(), 1);
  std::vector<KernelCall> calls = takeRecordedCalls();
  ASSERT_EQ(calls.size(), 1u);
  EXPECT_EQ(calls[0].step, 1.0f);
  run.step(randomTensors(shape, gradSeed));
  calls = takeRecordedCalls();
  ASSERT_EQ(calls.size(), 1u);
  EXPECT_EQ(calls[0].step, 2.0f);
  EXPECT_EQ(run.optimizer.stepCount(), 2);
}

} // namespace
} // namespace optrt::test
