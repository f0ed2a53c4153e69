// optrt's dynamic maps and block-wise quantiser against bitsandbytes 0.50.2
// (reference/bnb_q8.txt, written by reference/make_bnb_reference.py).
#include "ReferenceFile.h"
#include "optrt/Storage.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>

namespace {

using namespace optrt;
using layouts_test::bnbReference;

uint32_t bitsOf(float x) { return std::bit_cast<uint32_t>(x); }

void expectSameBits(const std::array<float, 256> &ours, const std::vector<float> &theirs,
                    const char *what) {
  ASSERT_EQ(theirs.size(), 256u) << what;
  for (size_t i = 0; i < 256; ++i)
    EXPECT_EQ(bitsOf(ours[i]), bitsOf(theirs[i])) << what << " entry " << i << ": " << ours[i]
                                                  << " vs " << theirs[i];
}

TEST(BnbReference, MapsMatchBitForBit) {
  const auto &ref = bnbReference();
  expectSameBits(dynamicMap(true), ref.floats("map_signed"), "signed");
  expectSameBits(dynamicMap(false), ref.floats("map_unsigned"), "unsigned");
  expectSameBits(dynamicMap(true, false), ref.floats("map_signed_nofma"), "signed, no FMA");
  expectSameBits(dynamicMap(false, false), ref.floats("map_unsigned_nofma"), "unsigned, no FMA");
}

// The two torch builds really differ (so the FMA test above means something),
// by at most two ulp (a mean of two linspace values, each one ulp off, then
// scaled). The counts are those of the dumps: 40 + 2 signed, 27 + 4 unsigned.
TEST(BnbReference, FusedAndPlainLinspaceMapsDifferByAtMostTwoUlp) {
  for (bool isSigned : {true, false}) {
    auto fused = dynamicMap(isSigned, true), plain = dynamicMap(isSigned, false);
    int byOne = 0, byTwo = 0;
    for (size_t i = 0; i < 256; ++i) {
      int64_t d = std::llabs(static_cast<int64_t>(bitsOf(fused[i])) - bitsOf(plain[i]));
      EXPECT_LE(d, 2) << i;
      byOne += d == 1;
      byTwo += d == 2;
    }
    EXPECT_EQ(byOne, isSigned ? 40 : 27);
    EXPECT_EQ(byTwo, isSigned ? 2 : 4);
  }
}

// bitsandbytes' CPU quantiser (a table-driven binary search) does not always
// find the nearest entry: for small values it lands a few entries off. So
// optrt's codes are compared by distance: never farther from x/absmax than
// bitsandbytes' code, and on an exact tie the lower entry (bitsandbytes'
// own tie rule, `dist_right < dist_left`). absmax and dequantisation must
// match bit for bit.
void compareWithBnb(const std::string &which) {
  const auto &ref = bnbReference();
  const Q8Map &map = q8Map(which == "signed");
  const auto &x = ref.floats(which + "_input");
  const auto &bnbCodes = ref.bytes(which + "_codes");
  const auto &bnbAbsmax = ref.floats(which + "_absmax");
  const auto &bnbDequant = ref.floats(which + "_dequant");
  ASSERT_EQ(x.size(), 5u * 256 + 77);
  std::vector<uint8_t> codes(x.size());
  std::vector<float> absmax(q8Blocks(x.size()));
  auto stats = quantizeBlockwise(map, x, codes, absmax);
  EXPECT_EQ(stats.nonFinite, 0u);
  ASSERT_EQ(absmax.size(), bnbAbsmax.size());
  for (size_t b = 0; b < absmax.size(); ++b)
    EXPECT_EQ(bitsOf(absmax[b]), bitsOf(bnbAbsmax[b])) << which << " block " << b;

  size_t same = 0, nearer = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    double n = x[i] / absmax[i / 256];
    double ours = std::fabs(n - map.values()[codes[i]]);
    double theirs = std::fabs(n - map.values()[bnbCodes[i]]);
    ASSERT_LE(ours, theirs) << which << " element " << i << " x=" << x[i];
    if (ours == theirs) {
      ASSERT_LE(codes[i], bnbCodes[i]) << which << " tie at element " << i;
    }
    same += codes[i] == bnbCodes[i];
    nearer += ours < theirs;
  }
  // The ordinary blocks (normal data at two scales, the partial block) agree
  // almost everywhere; the planted ones show bitsandbytes' misses.
  EXPECT_GT(same, x.size() / 2) << which;
  std::printf("[ %s ] %zu of %zu codes as bitsandbytes; %zu strictly nearer\n", which.c_str(),
              same, x.size(), nearer);

  std::vector<float> deq(x.size());
  dequantizeBlockwise(map, bnbCodes, bnbAbsmax, deq);
  for (size_t i = 0; i < x.size(); ++i)
    ASSERT_EQ(bitsOf(deq[i]), bitsOf(bnbDequant[i])) << which << " element " << i;
}

TEST(BnbReference, SignedQuantiseNeverFartherThanBnb) { compareWithBnb("signed"); }
TEST(BnbReference, UnsignedQuantiseNeverFartherThanBnb) { compareWithBnb("unsigned"); }

} // namespace
