// bf16 and f16 round to nearest even, checked against two independent
// references: a double-precision rounding written from the definition
// (scale to an integer count of ulps, nearbyint), and GCC's _Float16
// conversions for f16. Every 16-bit pattern is decoded and re-encoded.
#include "optrt/Storage.h"

#include <gtest/gtest.h>

#include <bit>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

namespace {

using namespace optrt;

uint32_t bitsOf(float x) { return std::bit_cast<uint32_t>(x); }
float floatOf(uint32_t b) { return std::bit_cast<float>(b); }

// x rounded to nearest even with p significant bits, exponent >= emin
// (gradual underflow), overflowing to Inf past maxFinite.
double roundReference(double x, int p, int emin, double maxFinite) {
  if (std::isnan(x) || std::isinf(x) || x == 0)
    return x;
  double ax = std::fabs(x);
  int e = std::max(std::ilogb(ax), emin);
  double ulp = std::ldexp(1.0, e - (p - 1));
  double r = std::nearbyint(ax / ulp) * ulp; // default mode: ties to even
  if (r > maxFinite)
    r = INFINITY;
  return std::copysign(r, x);
}
double bf16Reference(float x) { return roundReference(x, 8, -126, 0x1.FEp127); }
double f16Reference(float x) { return roundReference(x, 11, -14, 65504.0); }

// Patterns that exercise every rounding case of a cut at bit `cut`: each
// high part with a low part of 0, 1, just below half, half, just above half,
// all ones, and a few random ones.
std::vector<uint32_t> roundingPatterns(int cut, uint32_t seed) {
  std::mt19937 rng(seed);
  auto draw = [&] { return static_cast<uint32_t>(rng()); };
  uint32_t half = 1u << (cut - 1), low = (1u << cut) - 1;
  std::vector<uint32_t> out;
  for (uint64_t high = 0; high < (1ull << (32 - cut)); ++high) {
    uint32_t base = static_cast<uint32_t>(high << cut);
    for (uint32_t l : {0u, 1u, half - 1, half, half + 1, low, draw() & low, draw() & low})
      out.push_back(base | l);
  }
  return out;
}

TEST(Float16, Bf16AllPatternsRoundTrip) {
  for (uint32_t b = 0; b < 65536; ++b) {
    float x = bf16ToF32(static_cast<uint16_t>(b));
    EXPECT_EQ(bitsOf(x), b << 16) << b;
    if (std::isnan(x))
      EXPECT_TRUE(std::isnan(bf16ToF32(f32ToBf16(x)))) << b;
    else
      ASSERT_EQ(f32ToBf16(x), b) << b;
  }
}

TEST(Float16, F16AllPatternsRoundTripAndMatchFloat16) {
  for (uint32_t b = 0; b < 65536; ++b) {
    uint16_t h = static_cast<uint16_t>(b);
    _Float16 native;
    std::memcpy(&native, &h, 2);
    float x = f16ToF32(h);
    float nativeX = static_cast<float>(native);
    if (std::isnan(nativeX)) {
      ASSERT_TRUE(std::isnan(x)) << b;
      EXPECT_EQ(std::signbit(x), std::signbit(nativeX)) << b;
      EXPECT_TRUE(std::isnan(f16ToF32(f32ToF16(x)))) << b;
      continue;
    }
    ASSERT_EQ(bitsOf(x), bitsOf(nativeX)) << b; // exact, signed zeros too
    ASSERT_EQ(f32ToF16(x), h) << b;
  }
}

TEST(Float16, Bf16RoundsToNearestEvenLikeTheReference) {
  size_t ties = 0;
  for (uint32_t b : roundingPatterns(16, 11)) {
    float x = floatOf(b);
    float got = bf16ToF32(f32ToBf16(x));
    double want = bf16Reference(x);
    if (std::isnan(x)) {
      ASSERT_TRUE(std::isnan(got)) << std::hex << b;
      EXPECT_EQ(std::signbit(got), std::signbit(x)) << std::hex << b;
      continue;
    }
    ASSERT_EQ(static_cast<double>(got), want) << std::hex << b << " x=" << x;
    ASSERT_EQ(std::signbit(got), std::signbit(x)) << std::hex << b;
    ties += (b & 0xFFFFu) == 0x8000u;
  }
  EXPECT_GT(ties, 60000u); // every high half was tried with an exact tie
}

TEST(Float16, F16RoundsToNearestEvenLikeTheReferenceAndFloat16) {
  std::mt19937 rng(12);
  std::vector<uint32_t> patterns = roundingPatterns(13, 13);
  // The subnormal range cuts more than 13 bits: random patterns there too.
  for (int i = 0; i < 1 << 20; ++i)
    patterns.push_back((0x30000000u + static_cast<uint32_t>(rng() % 0x09000000u)) |
                       (static_cast<uint32_t>(rng()) & 0x80000000u));
  for (uint32_t b : patterns) {
    float x = floatOf(b);
    uint16_t got = f32ToF16(x);
    _Float16 native = static_cast<_Float16>(x);
    uint16_t nativeBits;
    std::memcpy(&nativeBits, &native, 2);
    if (std::isnan(x)) {
      ASSERT_TRUE(std::isnan(f16ToF32(got))) << std::hex << b;
      continue;
    }
    ASSERT_EQ(got, nativeBits) << std::hex << b << " x=" << x;
    ASSERT_EQ(static_cast<double>(f16ToF32(got)), f16Reference(x)) << std::hex << b;
  }
}

// The per-write error bounds docs/layouts.md states, on fresh random data
// over the whole range: round to nearest is within half an ulp (2^-8 |x|
// for bf16, 2^-11 |x| for normal f16, 2^-25 in f16's subnormal range);
// stochastic rounding within one ulp (2^-7 |x|, 2^-10 |x|, 2^-24).
TEST(Float16, PerWriteErrorBounds) {
  std::mt19937 rng(14);
  std::uniform_real_distribution<double> expo(-40, 40), mant(1, 2);
  for (int i = 0; i < 1 << 20; ++i) {
    float x = static_cast<float>(std::ldexp(mant(rng), static_cast<int>(expo(rng))));
    uint32_t random = static_cast<uint32_t>(rng());
    double ax = std::fabs(static_cast<double>(x));
    if (ax >= 0x1p-126) {
      ASSERT_LE(std::fabs(bf16ToF32(f32ToBf16(x)) - ax), 0x1p-8 * ax) << x;
      ASSERT_LT(std::fabs(bf16ToF32(f32ToBf16Stochastic(x, random)) - ax), 0x1p-7 * ax) << x;
    }
    if (ax < 65504) {
      bool normal = ax >= 0x1p-14;
      double rne = std::fabs(f16ToF32(f32ToF16(x)) - ax);
      double sr = std::fabs(f16ToF32(f32ToF16Stochastic(x, random)) - ax);
      ASSERT_LE(rne, normal ? 0x1p-11 * ax : 0x1p-25) << x;
      ASSERT_LT(sr, normal ? 0x1p-10 * ax : 0x1p-24) << x;
    }
  }
}

TEST(Float16, SpecialValues) {
  EXPECT_EQ(f32ToBf16(INFINITY), 0x7F80);
  EXPECT_EQ(f32ToBf16(-INFINITY), 0xFF80);
  EXPECT_EQ(f32ToBf16(FLT_MAX), 0x7F80);        // rounds past the largest bf16
  EXPECT_EQ(f32ToBf16(0x1.FEp127f), 0x7F7F);    // the largest bf16 itself
  EXPECT_EQ(f32ToBf16(-0.0f), 0x8000);
  EXPECT_EQ(f32ToBf16(floatOf(0x7F800001u)) & 0x7FC0, 0x7FC0); // NaN, not Inf
  EXPECT_EQ(f32ToBf16(floatOf(0xFFFFFFFFu)), 0xFFFF);          // no carry out
  EXPECT_EQ(f32ToF16(65504.0f), 0x7BFF);
  EXPECT_EQ(f32ToF16(65519.996f), 0x7BFF);  // just below the half way to 65536
  EXPECT_EQ(f32ToF16(65520.0f), 0x7C00);    // half way: ties to even = Inf
  EXPECT_EQ(f32ToF16(-1e9f), 0xFC00);
  EXPECT_EQ(f32ToF16(0x1p-24f), 0x0001);    // smallest subnormal
  EXPECT_EQ(f32ToF16(0x1p-25f), 0x0000);    // half of it: tie to even (0)
  EXPECT_EQ(f32ToF16(0x1.000002p-25f), 0x0001);
  EXPECT_EQ(f32ToF16(0x1.8p-24f), 0x0002);  // 1.5 units: tie to even (2)
  EXPECT_EQ(f32ToF16(0x1.ffcp-15f), 0x0400); // rounds up into the normals
  EXPECT_EQ(f32ToF16(floatOf(0x7F800001u)) & 0x7E00, 0x7E00);
  EXPECT_FLOAT_EQ(f16ToF32(0x3C00), 1.0f);
  EXPECT_EQ(f16ToF32(0x0001), 0x1p-24f);
}

} // namespace
