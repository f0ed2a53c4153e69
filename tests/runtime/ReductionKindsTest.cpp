// Every reduction kind (sum, mean, norm, max) of the gradient, finished by the
// runtime and stored by scalarUpdate into scalar states, against sequential
// sums. The rule has no elementwise state, so this also covers an empty
// arena.
#include "TestData.h"
#include "TestRules.h"

#include <cfloat>
#include <cmath>
#include <limits>

namespace optrt::test {
namespace {

struct GradStats {
  double sum = 0.0, sumAbs = 0.0, sumSquares = 0.0;
  double max = -std::numeric_limits<double>::infinity();
};

GradStats sequentialStats(const std::vector<float> &grad) {
  GradStats stats;
  for (float g : grad) {
    stats.sum += g;
    stats.sumAbs += std::abs(static_cast<double>(g));
    stats.sumSquares += static_cast<double>(g) * g;
    stats.max = std::max(stats.max, static_cast<double>(g));
  }
  return stats;
}

constexpr uint32_t paramSeed = 3;
constexpr uint32_t gradSeed = 300;

TEST(ReductionKinds, OneChunkPerTensorEqualsSequentialSums) {
  Training run(gradStatsKernels(), {2, 70001}, randomTensors(oddShape(), paramSeed));
  GroupedTensors grads = randomTensors(oddShape(), gradSeed);
  run.step(grads);
  for (size_t g = 0; g < oddShape().size(); ++g)
    for (size_t t = 0; t < oddShape()[g].size(); ++t) {
      SCOPED_TRACE("tensor " + std::to_string(t) + " of group " + std::to_string(g));
      int group = static_cast<int>(g);
      GradStats expected = sequentialStats(grads[g][t]);
      double n = static_cast<double>(grads[g][t].size());
      EXPECT_EQ(run.optimizer.scalarState("gsum", group, t), expected.sum);
      EXPECT_EQ(run.optimizer.scalarState("gmean", group, t), expected.sum / n);
      EXPECT_EQ(run.optimizer.scalarState("gnorm", group, t), std::sqrt(expected.sumSquares));
      EXPECT_EQ(run.optimizer.scalarState("gmax", group, t), expected.max);
    }
}

TEST(ReductionKinds, SplitTensorsCombineWithinRoundingOfSequentialSums) {
  for (size_t chunkElements : {size_t(65536), size_t(333), size_t(1)}) {
    SCOPED_TRACE("chunkElements " + std::to_string(chunkElements));
    Training run(gradStatsKernels(), {3, chunkElements}, randomTensors(oddShape(), paramSeed));
    GroupedTensors grads = randomTensors(oddShape(), gradSeed);
    run.step(grads);
    for (size_t g = 0; g < oddShape().size(); ++g)
      for (size_t t = 0; t < oddShape()[g].size(); ++t) {
        SCOPED_TRACE("tensor " + std::to_string(t) + " of group " + std::to_string(g));
        int group = static_cast<int>(g);
        GradStats expected = sequentialStats(grads[g][t]);
        double n = static_cast<double>(grads[g][t].size());
        // Any summation order of n terms is within (n-1)·ε·Σ|x| of the
        // exact sum, so two orders differ by at most twice that.
        double sumBound = 2 * n * DBL_EPSILON * expected.sumAbs;
        double sum = run.optimizer.scalarState("gsum", group, t);
        EXPECT_NEAR(sum, expected.sum, sumBound);
        // Mean sums the same partials in the same order, then divides.
        EXPECT_EQ(run.optimizer.scalarState("gmean", group, t), sum / n);
        double norm = std::sqrt(expected.sumSquares);
        EXPECT_NEAR(run.optimizer.scalarState("gnorm", group, t), norm, n * DBL_EPSILON * norm);
        // max does not round: every order gives the same value.
        EXPECT_EQ(run.optimizer.scalarState("gmax", group, t), expected.max);
      }
  }
}

TEST(ReductionKinds, PartialsAreCombinedInChunkOrder) {
  // Chunk partials 1e30, -1e30, 1: in chunk order (1e30 - 1e30) + 1 = 1,
  // while any order that adds the 1 to a ±1e30 first loses it and gives 0.
  // (Sums of ordinary random floats are often exact in double, so they could
  // not tell orders apart.) Chunk order is what RuleKernels.h promises and
  // what every backend reproduces.
  Shape shape = {{999}};
  Training run(gradStatsKernels(), {3, 333}, randomTensors(shape, paramSeed));
  GroupedTensors grads = {{std::vector<float>(999, 0.0f)}};
  grads[0][0][5] = 1e30f;
  grads[0][0][333 + 7] = -1e30f;
  grads[0][0][666 + 9] = 1.0f;
  run.step(grads);
  EXPECT_EQ(run.optimizer.scalarState("gsum", 0, 0), 1.0);
  EXPECT_EQ(run.optimizer.scalarState("gmean", 0, 0), 1.0 / 999);
}

TEST(ReductionKinds, ParamsFollowPlainSgd) {
  Training run(gradStatsKernels(), {3, 333}, randomTensors(oddShape(), paramSeed),
               {{{"lr", 0.25}}, {}});
  GroupedTensors expected = randomTensors(oddShape(), paramSeed);
  GroupedTensors grads = randomTensors(oddShape(), gradSeed);
  run.step(grads);
  for (size_t g = 0; g < expected.size(); ++g) {
    float lr = g == 0 ? 0.25f : 0.1f;
    for (size_t t = 0; t < expected[g].size(); ++t)
      for (size_t i = 0; i < expected[g][t].size(); ++i)
        expected[g][t][i] = expected[g][t][i] - lr * grads[g][t][i];
  }
  EXPECT_TRUE(bitwiseEqual(run.params, expected));
}

TEST(ReductionKinds, NaNInOneChunkReachesMax) {
  // A NaN must not be dropped by combining: a max that skipped it would hide
  // a diverged gradient from the rule.
  Shape shape = {{1000}};
  Training run(gradStatsKernels(), {2, 100}, randomTensors(shape, paramSeed));
  GroupedTensors grads = randomTensors(shape, gradSeed);
  grads[0][0][450] = std::numeric_limits<float>::quiet_NaN();
  run.step(grads);
  EXPECT_TRUE(std::isnan(run.optimizer.scalarState("gmax", 0, 0)));
  EXPECT_TRUE(std::isnan(run.optimizer.scalarState("gsum", 0, 0)));
}

} // namespace
} // namespace optrt::test
