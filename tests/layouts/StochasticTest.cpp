// Stochastic rounding: the counter-based bits, that every result is one of
// the two neighbours, that P(away from zero) is exactly frac, that the mean
// of many roundings converges to x within a derived bound, and that the bits
// do not depend on how the elements were split.
#include "optrt/Storage.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <random>
#include <vector>

namespace {

using namespace optrt;

uint32_t bitsOf(float x) { return std::bit_cast<uint32_t>(x); }

// Pinned outputs, computed by an independent Python transcription of the
// function documented in StorageStochastic.cpp: a kernel that reproduces
// these reproduces every bit.
TEST(Stochastic, BitsArePinned) {
  EXPECT_EQ(stochasticBits(0, 0, 0), 0x0eaa7511u);
  EXPECT_EQ(stochasticBits(1, 2, 3), 0xc8e32545u);
  EXPECT_EQ(stochasticBits(0xDEADBEEFu, 123456789012ull, 98765432109876ull), 0x3722dcdfu);
}

TEST(Stochastic, KeySplitsTheHash) {
  std::mt19937_64 rng(3);
  for (int i = 0; i < 1000; ++i) {
    uint32_t seed = static_cast<uint32_t>(rng());
    uint64_t step = rng(), index = rng();
    ASSERT_EQ(stochasticBits(seed, step, index),
              stochasticBitsFromKey(stochasticKey(seed, step), index));
  }
}

// Each of the 32 bits is set about half the time along the index and along
// the step, and neighbouring steps are not copies of each other.
TEST(Stochastic, BitsLookUniform) {
  const int n = 1 << 16;
  for (bool alongStep : {false, true}) {
    std::vector<int> ones(32, 0);
    for (int i = 0; i < n; ++i) {
      uint32_t r = alongStep ? stochasticBits(7, i, 1234) : stochasticBits(7, 1234, i);
      for (int b = 0; b < 32; ++b)
        ones[b] += (r >> b) & 1;
    }
    double sigma = std::sqrt(n * 0.25);
    for (int b = 0; b < 32; ++b)
      EXPECT_LT(std::fabs(ones[b] - n / 2.0), 6 * sigma) << "bit " << b << " step " << alongStep;
  }
  int same = 0;
  for (int i = 0; i < 4096; ++i)
    same += stochasticBits(7, 10, i) == stochasticBits(7, 11, i);
  EXPECT_LE(same, 1);
}

struct Format {
  const char *name;
  uint16_t (*nearest)(float);
  uint16_t (*stochastic)(float, uint32_t);
  float (*decode)(uint16_t);
};
const Format kFormats[] = {{"bf16", f32ToBf16, f32ToBf16Stochastic, bf16ToF32},
                           {"f16", f32ToF16, f32ToF16Stochastic, f16ToF32}};

// The neighbours of x: rounded toward zero (lo) and the next value away.
void neighbours(const Format &f, float x, double &lo, double &hi) {
  uint16_t down = f.stochastic(x, 0xFFFFFFFFu); // random = max: never away
  uint16_t up = static_cast<uint16_t>(down + 1);
  lo = f.decode(down);
  hi = f.decode(up);
}

std::vector<float> testValues(uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::uniform_real_distribution<double> expo(-30, 15);
  std::vector<float> xs;
  for (int i = 0; i < 4000; ++i) {
    float x = static_cast<float>(std::pow(2.0, expo(rng))) * (rng() & 1 ? -1.0f : 1.0f);
    xs.push_back(i % 2 ? x : normal(rng));
  }
  return xs;
}

TEST(Stochastic, ResultIsOneOfTheTwoNeighbours) {
  for (const Format &f : kFormats)
    for (float x : testValues(5)) {
      double lo, hi;
      neighbours(f, x, lo, hi);
      double ax = std::fabs(x);
      ASSERT_LE(std::fabs(lo), ax) << f.name << " x=" << x;
      if (std::isfinite(hi)) {
        ASSERT_GE(std::fabs(hi), ax) << f.name << " x=" << x;
      }
      for (uint32_t k = 0; k < 16; ++k) {
        double r = f.decode(f.stochastic(x, stochasticBits(1, k, bitsOf(x))));
        ASSERT_TRUE(r == lo || r == hi) << f.name << " x=" << x << " got " << r;
      }
    }
}

// P(away) == frac exactly: the decision boundary sits at random = frac * 2^32.
TEST(Stochastic, AwayExactlyBelowFracTimes2To32) {
  for (const Format &f : kFormats)
    for (float x : testValues(6)) {
      double lo, hi;
      neighbours(f, x, lo, hi);
      if (!std::isfinite(hi) || hi == lo)
        continue;
      double frac = (std::fabs(static_cast<double>(x)) - std::fabs(lo)) / (std::fabs(hi) - std::fabs(lo));
      double boundary = frac * 4294967296.0; // exact: frac has few bits
      if (boundary != std::floor(boundary) || boundary == 0)
        continue; // f16 far below its subnormal spacing: checked below
      uint32_t edge = static_cast<uint32_t>(boundary);
      EXPECT_EQ(static_cast<double>(f.decode(f.stochastic(x, edge - 1))), hi) << f.name << " " << x;
      EXPECT_EQ(static_cast<double>(f.decode(f.stochastic(x, edge))), lo) << f.name << " " << x;
    }
  // Far below f16's smallest subnormal (2^-24): away only for random 0.
  EXPECT_EQ(f32ToF16Stochastic(0x1p-60f, 0), 0x0001);
  EXPECT_EQ(f32ToF16Stochastic(0x1p-60f, 1), 0x0000);
  EXPECT_EQ(f32ToF16Stochastic(-0x1p-140f, 0), 0x8001); // an f32 subnormal
}

// The mean of N roundings of x (bits from N indices) is x within
// 6 sigma = 6 * (hi - lo) * sqrt(frac (1 - frac) / N), plus the 2^-32
// granularity of the decision. A biased rounding (to nearest, toward zero)
// misses it by far for the values chosen (frac between 0.05 and 0.95).
TEST(Stochastic, MeanConvergesToX) {
  const int n = 200000;
  std::mt19937 rng(8);
  for (const Format &f : kFormats) {
    int tried = 0;
    for (float x : testValues(9)) {
      double lo, hi;
      neighbours(f, x, lo, hi);
      if (!std::isfinite(hi) || hi == lo)
        continue;
      double gap = hi - lo;
      double frac = (x - lo) / gap;
      if (frac < 0.05 || frac > 0.95 || ++tried > 40)
        continue;
      uint32_t seed = rng();
      double sum = 0;
      for (int i = 0; i < n; ++i)
        sum += f.decode(f.stochastic(x, stochasticBits(seed, 17, i))) - lo;
      double mean = lo + sum / n;
      double bound = 6 * std::fabs(gap) * std::sqrt(frac * (1 - frac) / n) + std::fabs(gap) * 0x1p-32;
      EXPECT_LE(std::fabs(mean - x), bound) << f.name << " x=" << x << " frac=" << frac;
    }
    EXPECT_GT(tried, 40) << f.name;
  }
}

TEST(Stochastic, SpecialValues) {
  for (uint32_t r : {0u, 0x80000000u, 0xFFFFFFFFu}) {
    EXPECT_EQ(f32ToBf16Stochastic(INFINITY, r), 0x7F80);
    EXPECT_EQ(f32ToBf16Stochastic(-INFINITY, r), 0xFF80);
    EXPECT_TRUE(std::isnan(bf16ToF32(f32ToBf16Stochastic(NAN, r))));
    EXPECT_TRUE(std::isnan(bf16ToF32(f32ToBf16Stochastic(std::bit_cast<float>(0xFFFFFFFFu), r))));
    EXPECT_EQ(f32ToF16Stochastic(INFINITY, r), 0x7C00);
    EXPECT_EQ(f32ToF16Stochastic(-1e6f, r), 0xFC00);
    EXPECT_TRUE(std::isnan(f16ToF32(f32ToF16Stochastic(NAN, r))));
    EXPECT_EQ(f32ToBf16Stochastic(1.0f, r), 0x3F80); // representable: exact
    EXPECT_EQ(f32ToF16Stochastic(-2.0f, r), 0xC000);
    EXPECT_EQ(f32ToF16Stochastic(0.0f, r), 0x0000);
  }
  // Between the largest f16 (65504) and 65536 the upper neighbour is Inf.
  EXPECT_EQ(f32ToF16Stochastic(65520.0f, 0), 0x7C00);
  EXPECT_EQ(f32ToF16Stochastic(65520.0f, 0xFFFFFFFFu), 0x7BFF);
}

// The same elements written in one call or in chunks of any size, with the
// chunks' first indices, give the same bits: nothing but (seed, step,
// index) feeds the rounding.
TEST(Stochastic, ChunkingDoesNotChangeBits) {
  std::mt19937 rng(10);
  std::normal_distribution<float> normal;
  std::vector<float> x(10007);
  for (float &v : x)
    v = normal(rng);
  for (Dtype dtype : {Dtype::BF16, Dtype::F16}) {
    WriteRounding sr{Rounding::Stochastic, 99, 5, 1000};
    std::vector<uint16_t> whole(x.size()), chunked(x.size());
    encodeF32(dtype, x, whole.data(), nullptr, sr);
    for (size_t begin = 0; begin < x.size();) {
      size_t len = std::min<size_t>(x.size() - begin, 1 + rng() % 700);
      WriteRounding part = sr;
      part.firstIndex = sr.firstIndex + begin;
      encodeF32(dtype, std::span<const float>(x).subspan(begin, len), chunked.data() + begin,
                nullptr, part);
      begin += len;
    }
    EXPECT_EQ(whole, chunked);
    // ... and another step gives other bits for a good share of elements.
    std::vector<uint16_t> nextStep(x.size());
    WriteRounding next = sr;
    next.step = 6;
    encodeF32(dtype, x, nextStep.data(), nullptr, next);
    size_t differ = 0;
    for (size_t i = 0; i < x.size(); ++i)
      differ += whole[i] != nextStep[i];
    EXPECT_GT(differ, x.size() / 10);
  }
}

} // namespace
