// The two-phase LAMB-like rule: reductions of phase 0 (norm of param, max of
// grad) feed phase 1's uniforms, scalar states carry a counter and the last
// norm. With one chunk per tensor the runtime sums partials in the same order
// as the reference loop, so they agree bit for bit; with split tensors they
// agree within the rounding of a reordered sum, and every thread count gives
// identical bits.
#include "TestData.h"
#include "TestRules.h"

#include <cfloat>
#include <cmath>
#include <limits>

namespace optrt::test {
namespace {

struct LambHypers {
  double lr = 0.01, beta1 = 0.9, eps = 1e-6, v0 = 0.1;
};

struct LambReference {
  LambReference(GroupedTensors initialParams, std::vector<LambHypers> hypers)
      : params(std::move(initialParams)), hypers(std::move(hypers)) {
    for (size_t g = 0; g < params.size(); ++g) {
      Tensors &mGroup = m.emplace_back();
      Tensors &vGroup = v.emplace_back();
      for (const std::vector<float> &tensor : params[g]) {
        mGroup.emplace_back(tensor.size(), 0.0f);
        vGroup.emplace_back(tensor.size(), static_cast<float>(this->hypers[g].v0));
      }
      count.emplace_back(params[g].size(), 0.0);
      lastNorm.emplace_back(params[g].size(), 0.0);
    }
  }

  void step(const GroupedTensors &grads) {
    ++stepNumber;
    for (size_t g = 0; g < params.size(); ++g) {
      const LambHypers &h = hypers[g];
      for (size_t t = 0; t < params[g].size(); ++t) {
        std::vector<float> &p = params[g][t];
        const std::vector<float> &grad = grads[g][t];
        std::vector<float> &mt = m[g][t];
        std::vector<float> &vt = v[g][t];
        float beta1F = static_cast<float>(h.beta1);
        float oneMinusBeta1F = static_cast<float>(1.0 - h.beta1);
        double sumSquares = 0.0;
        double gradMax = -std::numeric_limits<double>::infinity();
        for (size_t i = 0; i < p.size(); ++i) {
          mt[i] = beta1F * mt[i] + oneMinusBeta1F * grad[i];
          sumSquares += static_cast<double>(p[i]) * p[i];
          gradMax = std::max(gradMax, static_cast<double>(grad[i]));
        }
        double pnorm = std::sqrt(sumSquares);
        double biasCorrection = 1.0 - std::pow(h.beta1, static_cast<double>(stepNumber));
        float scale = static_cast<float>(h.lr * (pnorm / (1.0 + count[g][t])) / biasCorrection);
        float gradScale = static_cast<float>(1.0 / (std::abs(gradMax) + 1.0));
        float epsF = static_cast<float>(h.eps);
        for (size_t i = 0; i < p.size(); ++i) {
          vt[i] = vt[i] + mt[i] * mt[i];
          p[i] = p[i] - scale * (mt[i] * gradScale) / (std::sqrt(vt[i]) + epsF);
        }
        count[g][t] += 1.0;
        lastNorm[g][t] = pnorm;
      }
    }
  }

  GroupedTensors params, m, v;
  std::vector<std::vector<double>> count, lastNorm;
  std::vector<LambHypers> hypers;
  int64_t stepNumber = 0;
};

constexpr int numSteps = 3;
constexpr uint32_t paramSeed = 7;
constexpr uint32_t gradSeed = 700;

const HyperOverrides &groupOverrides() {
  static const HyperOverrides overrides = {{{"lr", 0.02}, {"v0", 0.5}}, {{"lr", 0.003}}};
  return overrides;
}

std::vector<LambHypers> referenceHypers() {
  LambHypers first, second;
  first.lr = 0.02;
  first.v0 = 0.5;
  second.lr = 0.003;
  return {first, second};
}

struct Outcome {
  GroupedTensors params, m, v;
  std::vector<std::vector<double>> count, lastNorm;
};

Outcome train(OptimizerOptions options) {
  Training run(lambLikeKernels(), options, randomTensors(oddShape(), paramSeed), groupOverrides());
  for (int s = 0; s < numSteps; ++s)
    run.step(randomTensors(oddShape(), gradSeed + s));
  Outcome out;
  out.params = run.params;
  for (size_t g = 0; g < oddShape().size(); ++g) {
    int group = static_cast<int>(g);
    out.m.emplace_back();
    out.v.emplace_back();
    out.count.emplace_back();
    out.lastNorm.emplace_back();
    for (size_t t = 0; t < oddShape()[g].size(); ++t) {
      std::span<float> m = run.optimizer.state("m", group, t);
      std::span<float> v = run.optimizer.state("v", group, t);
      out.m[g].emplace_back(m.begin(), m.end());
      out.v[g].emplace_back(v.begin(), v.end());
      out.count[g].push_back(run.optimizer.scalarState("count", group, t));
      out.lastNorm[g].push_back(run.optimizer.scalarState("lastNorm", group, t));
    }
  }
  return out;
}

LambReference referenceRun() {
  LambReference reference(randomTensors(oddShape(), paramSeed), referenceHypers());
  for (int s = 0; s < numSteps; ++s)
    reference.step(randomTensors(oddShape(), gradSeed + s));
  return reference;
}

TEST(LambLike, OneChunkPerTensorMatchesReferenceBitwise) {
  // Chunks as large as the largest tensor: each partial is the reference's
  // own sequential sum.
  Outcome out = train({2, 70001});
  LambReference reference = referenceRun();
  EXPECT_TRUE(bitwiseEqual(out.params, reference.params));
  EXPECT_TRUE(bitwiseEqual(out.m, reference.m));
  EXPECT_TRUE(bitwiseEqual(out.v, reference.v));
  EXPECT_EQ(out.count, reference.count);
  EXPECT_EQ(out.lastNorm, reference.lastNorm);
  for (const std::vector<double> &group : out.count)
    for (double count : group)
      EXPECT_EQ(count, numSteps);
}

TEST(LambLike, SplitTensorsStayWithinRoundingOfReference) {
  LambReference reference = referenceRun();
  for (size_t chunkElements : {size_t(65536), size_t(333)}) {
    SCOPED_TRACE("chunkElements " + std::to_string(chunkElements));
    Outcome out = train({3, chunkElements});
    for (size_t g = 0; g < oddShape().size(); ++g)
      for (size_t t = 0; t < oddShape()[g].size(); ++t) {
        SCOPED_TRACE("tensor " + std::to_string(t) + " of group " + std::to_string(g));
        size_t n = oddShape()[g][t];
        // A sum of n non-negative terms in any order is within (n-1)·ε
        // relative of the exact sum; the square root halves that.
        double normBound = static_cast<double>(n) * DBL_EPSILON * reference.lastNorm[g][t];
        EXPECT_NEAR(out.lastNorm[g][t], reference.lastNorm[g][t], normBound);
        EXPECT_EQ(out.count[g][t], numSteps);
        // That difference can move a rounded f32 uniform by one ulp, which
        // moves an update of size ≤ |param| by at most one ulp of the param
        // per step, plus the final rounding.
        for (size_t i = 0; i < n; ++i) {
          float expected = reference.params[g][t][i];
          float ulp = std::nextafter(std::abs(expected), INFINITY) - std::abs(expected);
          ASSERT_NEAR(out.params[g][t][i], expected, (numSteps + 1) * ulp) << "element " << i;
        }
      }
    // m never depends on a reduction; it must still be exact.
    EXPECT_TRUE(bitwiseEqual(out.m, reference.m));
  }
}

TEST(LambLike, BitwiseIdenticalForOneTwoAndThreeThreads) {
  for (size_t chunkElements : {size_t(65536), size_t(333), size_t(7)}) {
    SCOPED_TRACE("chunkElements " + std::to_string(chunkElements));
    Outcome one = train({1, chunkElements});
    for (unsigned threads : {2u, 3u}) {
      SCOPED_TRACE("threads " + std::to_string(threads));
      Outcome many = train({threads, chunkElements});
      EXPECT_TRUE(bitwiseEqual(many.params, one.params));
      EXPECT_TRUE(bitwiseEqual(many.m, one.m));
      EXPECT_TRUE(bitwiseEqual(many.v, one.v));
      EXPECT_EQ(many.count, one.count);
      EXPECT_EQ(many.lastNorm, one.lastNorm);
    }
  }
}

} // namespace
} // namespace optrt::test
