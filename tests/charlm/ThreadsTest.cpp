// The float model against the double one, and across thread counts.
#include "Gemm.h"
#include "Model.h"
#include "Rng.h"

#include <gtest/gtest.h>

#include <cmath>

namespace charlm {
namespace {

// The blocked float kernel against the plain double loop, on shapes that hit
// every path: full 64-column panels, 48/32/16-column rests, a rest below 16,
// row counts that are not multiples of 4, and accumulation into C.
TEST(Gemm, BlockedFloatKernelMatchesDoubleLoop) {
  Rng rng(3);
  for (size_t m : {1u, 5u, 8u})
    for (size_t n : {7u, 16u, 40u, 64u, 117u, 176u})
      for (size_t k : {1u, 9u, 33u})
        for (bool accumulate : {false, true}) {
          std::vector<float> a(m * k), b(k * n), c(m * n);
          std::vector<double> ad(m * k), bd(k * n), cd(m * n);
          for (size_t i = 0; i < a.size(); ++i)
            ad[i] = a[i] = static_cast<float>(rng.normal());
          for (size_t i = 0; i < b.size(); ++i)
            bd[i] = b[i] = static_cast<float>(rng.normal());
          for (size_t i = 0; i < c.size(); ++i)
            cd[i] = c[i] = static_cast<float>(rng.normal());
          gemmRows(0, m, n, k, a.data(), k, b.data(), n, c.data(), n, accumulate);
          gemmRows(0, m, n, k, ad.data(), k, bd.data(), n, cd.data(), n, accumulate);
          for (size_t i = 0; i < c.size(); ++i)
            ASSERT_NEAR(c[i], cd[i], 1e-5 * (k + 1)) << m << "x" << n << "x" << k << " element " << i;
        }
}

// Rows split over threads change nothing: every output is summed in the
// same order by whichever thread owns it.
TEST(Model, LossAndGradientsAreBitwiseEqualForAnyThreadCount) {
  ModelConfig config;
  config.vocab = 50;
  config.context = 8;
  config.embed = 8;
  config.hidden = {96, 80};
  Rng rng(5);
  const size_t batch = 67;
  std::vector<uint8_t> contexts(batch * config.context), targets(batch);
  for (auto &id : contexts)
    id = static_cast<uint8_t>(rng.below(config.vocab));
  for (auto &id : targets)
    id = static_cast<uint8_t>(rng.below(config.vocab));

  Model<float> single(config, 11);
  ThreadPool one(1);
  double expected = single.forward(contexts.data(), targets.data(), batch, one);
  single.backward(one);
  for (unsigned threads : {2u, 3u}) {
    Model<float> model(config, 11);
    ThreadPool pool(threads);
    EXPECT_EQ(model.forward(contexts.data(), targets.data(), batch, pool), expected) << threads;
    model.backward(pool);
    for (size_t t = 0; t < model.tensors().size(); ++t)
      EXPECT_EQ(model.tensors()[t].grad, single.tensors()[t].grad) << model.tensors()[t].name << ", " << threads;
  }
}

} // namespace
} // namespace charlm

namespace charlm {
namespace {

// The float model's tanh against the library's, over the whole range where
// it changes and beyond (saturation), on a fine grid: within 5 float ulps of
// 1 (3e-7) everywhere, odd and bounded by 1. (Not monotone to the last ulp
// where it saturates: p/q rounds up and down by one ulp there.)
TEST(Activation, FastTanhMatchesStdTanh) {
  double worst = 0;
  for (int i = -200000; i <= 200000; ++i) {
    float x = i * 1e-4f;
    float y = fastTanh(x);
    worst = std::max(worst, std::abs(double(y) - std::tanh(double(x))));
    ASSERT_LE(std::abs(y), 1.0f) << x;
    ASSERT_EQ(fastTanh(-x), -y) << x;
  }
  EXPECT_LE(worst, 5 * 0x1p-24);
  EXPECT_NEAR(fastTanh(100.0f), 1.0f, 5 * 0x1p-24);
}

} // namespace
} // namespace charlm
