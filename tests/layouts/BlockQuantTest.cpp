// q8 block-wise quantisation: nearest-entry search against brute force,
// the non-finite policy, absmax 0, denormals, the partial last block, and
// the documented error bounds on fresh random data.
#include "optrt/Storage.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <random>
#include <vector>

namespace {

using namespace optrt;

// Brute force over all 256 entries in double; ties to the lower index.
uint8_t bruteNearest(const Q8Map &map, float n) {
  size_t best = 0;
  for (size_t i = 1; i < 256; ++i)
    if (std::fabs(static_cast<double>(n) - map.values()[i]) <
        std::fabs(static_cast<double>(n) - map.values()[best]))
      best = i;
  return static_cast<uint8_t>(best);
}

TEST(BlockQuant, MapShape) {
  const Q8Map &s = q8Map(true), &u = q8Map(false);
  EXPECT_EQ(s.values()[255], 1.0f);
  EXPECT_EQ(u.values()[255], 1.0f);
  EXPECT_FLOAT_EQ(s.values()[0], -0.99296875f); // -(1 + (1 - 0.9/64)) / 2
  EXPECT_EQ(u.values()[0], 0.0f);
  EXPECT_EQ(s.values()[s.zeroCode()], 0.0f);
  EXPECT_EQ(s.zeroCode(), 127);
  EXPECT_EQ(u.zeroCode(), 0);
  for (const Q8Map *m : {&s, &u})
    for (size_t i = 0; i < 255; ++i)
      EXPECT_LT(m->values()[i], m->values()[i + 1]) << i; // strictly ascending
}

TEST(BlockQuant, NearestMatchesBruteForce) {
  std::mt19937 rng(21);
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  std::uniform_real_distribution<double> expo(-9, 0);
  for (bool isSigned : {true, false}) {
    const Q8Map &map = q8Map(isSigned);
    std::vector<float> probes;
    // Every entry, and the f32 values around every midpoint (ties included).
    for (size_t i = 0; i < 256; ++i)
      probes.push_back(map.values()[i]);
    for (size_t i = 0; i < 255; ++i) {
      float mid = static_cast<float>((static_cast<double>(map.values()[i]) + map.values()[i + 1]) / 2);
      for (float p : {std::nextafter(mid, -2.0f), mid, std::nextafter(mid, 2.0f)})
        probes.push_back(p);
    }
    for (int i = 0; i < 300000; ++i) {
      float v = uni(rng);
      probes.push_back(isSigned ? v : std::fabs(v));
      float small = static_cast<float>(std::pow(10.0, expo(rng)));
      probes.push_back(isSigned && (rng() & 1) ? -small : small);
    }
    probes.push_back(-1.0f);
    size_t ties = 0;
    for (float p : probes) {
      ASSERT_EQ(map.nearest(p), bruteNearest(map, p)) << "signed=" << isSigned << " n=" << p;
      uint8_t c = map.nearest(p);
      ties += c < 255 && std::fabs(p - static_cast<double>(map.values()[c])) ==
                             std::fabs(map.values()[c + 1] - static_cast<double>(p));
    }
    EXPECT_GT(ties, 10u) << "no exact ties were probed";
  }
}

std::vector<float> normalBlock(std::mt19937 &rng, size_t n, float scale) {
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> x(n);
  for (float &v : x)
    v = normal(rng);
  return x;
}

TEST(BlockQuant, NonFiniteElementsDoNotPoisonTheirBlock) {
  std::mt19937 rng(22);
  for (bool isSigned : {true, false}) {
    const Q8Map &map = q8Map(isSigned);
    std::vector<float> x = normalBlock(rng, 3 * 256, 2.0f);
    if (!isSigned)
      for (float &v : x)
        v = std::fabs(v);
    std::vector<float> clean = x;
    const size_t bad[] = {5, 300, 301, 767};
    const float values[] = {NAN, INFINITY, -INFINITY, -NAN};
    for (int k = 0; k < 4; ++k) {
      x[bad[k]] = values[k];
      clean[bad[k]] = 0.0f;
    }
    std::vector<uint8_t> codes(x.size()), cleanCodes(x.size());
    std::vector<float> absmax(3), cleanAbsmax(3);
    EXPECT_EQ(quantizeBlockwise(map, x, codes, absmax).nonFinite, 4u);
    EXPECT_EQ(quantizeBlockwise(map, clean, cleanCodes, cleanAbsmax).nonFinite, 0u);
    for (size_t b = 0; b < 3; ++b) {
      EXPECT_TRUE(std::isfinite(absmax[b]));
      EXPECT_EQ(absmax[b], cleanAbsmax[b]) << b;
    }
    for (size_t i = 0; i < x.size(); ++i)
      if (std::isfinite(x[i])) {
        ASSERT_EQ(codes[i], cleanCodes[i]) << i;
      }
    EXPECT_EQ(codes[5], map.zeroCode());                       // NaN -> 0
    EXPECT_EQ(codes[300], 255);                                // +Inf -> +absmax
    EXPECT_EQ(codes[301], isSigned ? 0 : map.zeroCode());      // -Inf -> most negative
    EXPECT_EQ(codes[767], map.zeroCode());
    std::vector<float> y(x.size());
    dequantizeBlockwise(map, codes, absmax, y);
    for (float v : y)
      ASSERT_TRUE(std::isfinite(v));
    EXPECT_EQ(y[300], absmax[1]);
  }
}

TEST(BlockQuant, ZeroAndNonFiniteOnlyBlocksStoreZero) {
  const Q8Map &map = q8Map(true);
  std::vector<float> x(2 * 256 + 3, 0.0f);
  for (size_t i = 0; i < 256; i += 2)
    x[i] = -0.0f;
  for (size_t i = 256; i < 512; ++i)
    x[i] = i % 3 ? NAN : (i % 2 ? INFINITY : -INFINITY);
  std::vector<uint8_t> codes(x.size());
  std::vector<float> absmax(3), y(x.size());
  auto stats = quantizeBlockwise(map, x, codes, absmax);
  EXPECT_EQ(stats.nonFinite, 256u);
  EXPECT_EQ(absmax[0], 0.0f);
  EXPECT_EQ(absmax[1], 0.0f);
  EXPECT_EQ(absmax[2], 0.0f);
  dequantizeBlockwise(map, codes, absmax, y);
  for (size_t i = 0; i < 256; ++i)
    EXPECT_EQ(codes[i], map.zeroCode());
  for (float v : y)
    ASSERT_EQ(v, 0.0f); // whatever code an Inf stored, times absmax 0
}

TEST(BlockQuant, PartialLastBlockHasItsOwnAbsmax) {
  std::mt19937 rng(23);
  std::vector<float> x = normalBlock(rng, 3 * 256 + 77, 1.0f);
  x[10] = 50.0f; // the first block's absmax must not leak into the last
  std::vector<uint8_t> codes(x.size());
  std::vector<float> absmax(4);
  quantizeBlockwise(q8Map(true), x, codes, absmax);
  float lastMax = 0;
  for (size_t i = 3 * 256; i < x.size(); ++i)
    lastMax = std::max(lastMax, std::fabs(x[i]));
  EXPECT_EQ(absmax[3], lastMax);
  EXPECT_EQ(absmax[0], 50.0f);
  std::vector<float> wrong(3);
  EXPECT_THROW(quantizeBlockwise(q8Map(true), x, codes, wrong), std::invalid_argument);
}

// Round trips of fresh random data stay within q8ErrorBound (per element)
// and q8MaxError (per block); the bounds are also not loose: the worst
// observed error of uniform data reaches at least 90% of q8MaxError.
void checkBounds(const Q8Map &map, const std::vector<float> &x, const char *what,
                 double *worstShareOfMax = nullptr) {
  std::vector<uint8_t> codes(x.size());
  std::vector<float> absmax(q8Blocks(x.size())), y(x.size());
  quantizeBlockwise(map, x, codes, absmax);
  dequantizeBlockwise(map, codes, absmax, y);
  double worst = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    float a = absmax[i / 256];
    double err = std::fabs(static_cast<double>(y[i]) - x[i]);
    ASSERT_LE(err, q8ErrorBound(map, x[i], a)) << what << " element " << i << " x=" << x[i] << " a=" << a;
    ASSERT_LE(err, q8MaxError(map, a)) << what << " element " << i;
    if (a > 0)
      worst = std::max(worst, err / q8MaxError(map, a));
  }
  if (worstShareOfMax)
    *worstShareOfMax = worst;
}

TEST(BlockQuant, ErrorBoundsHoldOnRandomData) {
  std::mt19937 rng(24);
  for (bool isSigned : {true, false}) {
    const Q8Map &map = q8Map(isSigned);
    auto sign = [&](float v) { return isSigned && (rng() & 1) ? -v : v; };
    const size_t n = 400 * 256 + 13;
    std::vector<float> normal = normalBlock(rng, n, 0.01f), logUniform(n), nearZero(n), uniform(n),
        denormal(n);
    std::uniform_real_distribution<double> expo(-30, 3), unit(0, 1);
    for (size_t i = 0; i < n; ++i) {
      if (!isSigned)
        normal[i] = std::fabs(normal[i]);
      logUniform[i] = sign(static_cast<float>(std::pow(10.0, expo(rng))));
      // Mostly tiny values with one O(1) value per block: they live in the
      // map's finest region, around 0.
      nearZero[i] = sign(static_cast<float>(i % 256 == 7 ? 1.0 : 1e-7 * unit(rng)));
      uniform[i] = sign(static_cast<float>(unit(rng)));
      denormal[i] = sign(static_cast<float>(unit(rng) * 1e-39)); // f32 subnormals
    }
    checkBounds(map, normal, "normal");
    checkBounds(map, logUniform, "log-uniform");
    checkBounds(map, nearZero, "near zero");
    checkBounds(map, denormal, "denormal");
    double share = 0;
    checkBounds(map, uniform, "uniform", &share);
    EXPECT_GT(share, 0.9) << "the worst case bound is loose for signed=" << isSigned;
  }
}

// The worst case numbers docs/layouts.md quotes, from the map's top gap
// 0.9/64 (the decade [0.1, 1] split in 64 (signed) / 128 (unsigned)).
TEST(BlockQuant, MaxErrorIsHalfTheTopGap) {
  EXPECT_NEAR(q8MaxError(q8Map(true), 1.0f), 0.9 / 64 / 2, 1e-6);
  EXPECT_NEAR(q8MaxError(q8Map(false), 1.0f), 0.9 / 128 / 2, 1e-6);
  // Near 0 (|x| < absmax * smallest entry / 2) the bound is absmax times
  // half the smallest positive entry, 0.55e-6 (signed) / 0.325e-6 (unsigned).
  EXPECT_NEAR(q8ErrorBound(q8Map(true), 1e-8f, 1.0f), 0.55e-6 / 2, 1e-9);
  EXPECT_NEAR(q8ErrorBound(q8Map(false), 1e-8f, 1.0f), 0.325e-6 / 2, 1e-9);
}

} // namespace
