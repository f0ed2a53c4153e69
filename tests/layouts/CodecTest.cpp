// Whole-buffer encode/decode for every dtype: the element functions applied
// in order, q8 with its absmax blocks, and the byte sizes.
#include "optrt/Storage.h"

#include <gtest/gtest.h>

#include <bit>
#include <random>
#include <vector>

namespace {

using namespace optrt;

std::vector<float> randomValues(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> x(n);
  for (float &v : x)
    v = normal(rng);
  return x;
}

TEST(Codec, SixteenBitBuffersUseTheElementFunctions) {
  std::vector<float> x = randomValues(3001, 41), back(x.size());
  std::vector<uint16_t> data(x.size());
  encodeF32(Dtype::BF16, x, data.data(), nullptr);
  decodeToF32(Dtype::BF16, data.data(), nullptr, back);
  for (size_t i = 0; i < x.size(); ++i) {
    ASSERT_EQ(data[i], f32ToBf16(x[i]));
    ASSERT_EQ(back[i], bf16ToF32(data[i]));
  }
  WriteRounding sr{Rounding::Stochastic, 3, 4, 500};
  encodeF32(Dtype::F16, x, data.data(), nullptr, sr);
  decodeToF32(Dtype::F16, data.data(), nullptr, back);
  for (size_t i = 0; i < x.size(); ++i) {
    ASSERT_EQ(data[i], f32ToF16Stochastic(x[i], stochasticBits(3, 4, 500 + i)));
    ASSERT_EQ(back[i], f16ToF32(data[i]));
  }
}

TEST(Codec, F32IsACopyAndQ8UsesItsMap) {
  std::vector<float> x = randomValues(1000, 42), back(x.size());
  std::vector<float> f32(x.size());
  encodeF32(Dtype::F32, x, f32.data(), nullptr);
  EXPECT_EQ(f32, x);
  for (Dtype q8 : {Dtype::Q8Signed, Dtype::Q8Unsigned}) {
    std::vector<float> input = x;
    if (q8 == Dtype::Q8Unsigned)
      for (float &v : input)
        v = std::fabs(v);
    input[17] = NAN;
    std::vector<uint8_t> codes(x.size()), want(x.size());
    std::vector<float> absmax(q8Blocks(x.size())), wantAbsmax(absmax.size());
    EXPECT_EQ(encodeF32(q8, input, codes.data(), absmax.data()), 1u);
    quantizeBlockwise(q8MapFor(q8), input, want, wantAbsmax);
    EXPECT_EQ(codes, want);
    EXPECT_EQ(absmax, wantAbsmax);
    decodeToF32(q8, codes.data(), absmax.data(), back);
    for (size_t i = 0; i < x.size(); ++i)
      ASSERT_EQ(back[i], q8MapFor(q8).values()[codes[i]] * absmax[i / 256]);
  }
}

TEST(Codec, ElementBytes) {
  EXPECT_EQ(elementBytes(Dtype::F32, 10), 40u);
  EXPECT_EQ(elementBytes(Dtype::BF16, 10), 20u);
  EXPECT_EQ(elementBytes(Dtype::F16, 10), 20u);
  EXPECT_EQ(elementBytes(Dtype::Q8Signed, 10), 10u);
  EXPECT_EQ(q8Blocks(256), 1u);
  EXPECT_EQ(q8Blocks(257), 2u);
  EXPECT_THROW(elementBytes(static_cast<Dtype>(77), 1), std::invalid_argument);
}

} // namespace
