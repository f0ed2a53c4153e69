// bf16 param + int16 remainder: exact master for every non-NaN f32, the
// param is the master rounded to nearest (ties away from zero), as apex.
#include "optrt/Storage.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <random>

namespace {

using namespace optrt;

TEST(Remainder, ExactForEveryHighHalfAndRoundsToNearest) {
  std::mt19937 rng(31);
  auto draw = [&] { return static_cast<uint32_t>(rng()); };
  size_t checked = 0;
  for (uint32_t high = 0; high < 65536; ++high)
    for (uint32_t low : {0u, 1u, 0x7FFFu, 0x8000u, 0x8001u, 0xFFFFu, draw() & 0xFFFFu, draw() & 0xFFFFu}) {
      uint32_t bits = (high << 16) | low;
      float master = std::bit_cast<float>(bits);
      ParamRemainder pr = splitMaster(master);
      float back = joinMaster(pr.param, pr.remainder);
      float param = bf16ToF32(pr.param);
      if (std::isnan(master)) {
        ASSERT_TRUE(std::isnan(param)) << std::hex << bits;
        ASSERT_TRUE(std::isnan(back)) << std::hex << bits;
        continue;
      }
      ASSERT_EQ(std::bit_cast<uint32_t>(back), bits) << std::hex << bits;
      // Nearest: no bf16 neighbour of the param is nearer to the master;
      // on a tie the param is the one of larger magnitude.
      double m = master, p = param;
      double below = bf16ToF32(static_cast<uint16_t>(pr.param - 1));
      ASSERT_FALSE(std::isnan(p)) << std::hex << bits;
      if (std::isfinite(p) && std::isfinite(below) && std::signbit(below) == std::signbit(p)) {
        ASSERT_LE(std::fabs(p - m), std::fabs(below - m)) << std::hex << bits;
      }
      double above = bf16ToF32(static_cast<uint16_t>(pr.param + 1));
      if (std::isfinite(p) && std::isfinite(above) && std::signbit(above) == std::signbit(p)) {
        ASSERT_LE(std::fabs(p - m), std::fabs(above - m)) << std::hex << bits;
      }
      if (low == 0x8000u) {
        ASSERT_GT(std::fabs(p), std::fabs(m)) << "tie not away from zero " << std::hex << bits;
      }
      ++checked;
    }
  EXPECT_GT(checked, 500000u);
}

// Hand-worked cases of apex's convention.
TEST(Remainder, ApexConvention) {
  ParamRemainder a = splitMaster(std::bit_cast<float>(0x3F804000u)); // 1 + 2^-9
  EXPECT_EQ(a.param, 0x3F80);
  EXPECT_EQ(a.remainder, 0x4000);
  ParamRemainder b = splitMaster(std::bit_cast<float>(0x3F80C000u));
  EXPECT_EQ(b.param, 0x3F81); // rounded up
  EXPECT_EQ(b.remainder, -16384);
  ParamRemainder c = splitMaster(std::bit_cast<float>(0xBF808000u)); // a tie, negative
  EXPECT_EQ(c.param, 0xBF81);
  EXPECT_EQ(c.remainder, -32768);
  // The largest finite f32 rounds its param to Inf and still comes back.
  ParamRemainder d = splitMaster(std::bit_cast<float>(0x7F7FFFFFu));
  EXPECT_EQ(d.param, 0x7F80);
  EXPECT_EQ(std::bit_cast<uint32_t>(joinMaster(d.param, d.remainder)), 0x7F7FFFFFu);
  // A NaN whose high half is 0x7FFF must not become -0 (apex's int16 wrap).
  ParamRemainder e = splitMaster(std::bit_cast<float>(0x7FFF8000u));
  EXPECT_TRUE(std::isnan(bf16ToF32(e.param)));
}

} // namespace
