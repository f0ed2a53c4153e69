// 8-bit block-wise quantisation with the dynamic map: nearest entry to
// x / absmax, ties to the lower entry; non-finite inputs never change their
// block's other elements (policy in Storage.h and docs/layouts.md).
#include "optrt/Storage.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

namespace optrt {

namespace {

constexpr double kUnitRoundoff = 0x1p-24;
// The absolute error of an f32 product that lands among the subnormals.
constexpr double kSubnormalHalfUlp = 0x1p-150;

// The half-gap of the map around n: the largest distance from a point of
// n's bracket to its nearest entry. Below the smallest entry (signed map,
// -1 <= n < map[0]) that is the distance from -1.
double halfGapAround(const std::array<float, 256> &m, double n) {
  if (n <= m[0])
    return m[0] - std::max(n, -1.0);
  if (n >= m[255])
    return 0.0;
  auto upper = std::upper_bound(m.begin(), m.end(), n, [](double v, float e) { return v < e; });
  size_t j = static_cast<size_t>(upper - m.begin());
  return (static_cast<double>(m[j]) - m[j - 1]) / 2;
}

} // namespace

Q8Map::Q8Map(bool isSigned, bool fusedLinspace)
    : signed_(isSigned), values_(dynamicMap(isSigned, fusedLinspace)) {
  for (size_t i = 0; i < 255; ++i) {
    // The midpoint of two adjacent entries is exact in double (their sum
    // needs at most 25 significant bits). n == midpoint is a tie and goes to
    // the lower entry, so the threshold is the first f32 above it.
    double mid = (static_cast<double>(values_[i]) + values_[i + 1]) / 2;
    float t = static_cast<float>(mid);
    if (static_cast<double>(t) <= mid)
      t = std::nextafter(t, 2.0f);
    thresholds_[i] = t;
    if (values_[i] == 0.0f)
      zeroCode_ = static_cast<uint8_t>(i);
  }
}

uint8_t Q8Map::nearest(float n) const {
  return static_cast<uint8_t>(std::upper_bound(thresholds_.begin(), thresholds_.end(), n) -
                              thresholds_.begin());
}

const Q8Map &q8Map(bool isSigned) {
  static const Q8Map kSigned(true), kUnsigned(false);
  return isSigned ? kSigned : kUnsigned;
}

Q8BlockStats quantizeBlockwise(const Q8Map &map, std::span<const float> x,
                               std::span<uint8_t> codes, std::span<float> absmax,
                               uint32_t blockElements) {
  if (blockElements == 0 || codes.size() != x.size() ||
      absmax.size() != q8Blocks(x.size(), blockElements))
    throw std::invalid_argument("quantizeBlockwise: " + std::to_string(x.size()) + " values need " +
                                std::to_string(x.size()) + " codes and " +
                                std::to_string(q8Blocks(x.size(), std::max(blockElements, 1u))) +
                                " absmax values");
  Q8BlockStats stats;
  const uint8_t top = 255, bottom = map.isSigned() ? 0 : map.zeroCode();
  for (size_t begin = 0, block = 0; begin < x.size(); begin += blockElements, ++block) {
    size_t end = std::min(x.size(), begin + blockElements);
    float amax = 0.0f;
    for (size_t i = begin; i < end; ++i)
      if (std::isfinite(x[i]))
        amax = std::max(amax, std::fabs(x[i]));
    absmax[block] = amax;
    for (size_t i = begin; i < end; ++i) {
      float v = x[i];
      if (!std::isfinite(v)) {
        ++stats.nonFinite;
        codes[i] = std::isnan(v) ? map.zeroCode() : (v > 0 ? top : bottom);
      } else {
        codes[i] = amax == 0.0f ? map.zeroCode() : map.nearest(v / amax);
      }
    }
  }
  return stats;
}

void dequantizeBlockwise(const Q8Map &map, std::span<const uint8_t> codes,
                         std::span<const float> absmax, std::span<float> out,
                         uint32_t blockElements) {
  if (blockElements == 0 || out.size() != codes.size() ||
      absmax.size() != q8Blocks(codes.size(), blockElements))
    throw std::invalid_argument("dequantizeBlockwise: " + std::to_string(codes.size()) +
                                " codes need as many outputs and one absmax per block");
  for (size_t i = 0; i < codes.size(); ++i)
    out[i] = map.values()[codes[i]] * absmax[i / blockElements];
}

double q8ErrorBound(const Q8Map &map, float x, float absmax) {
  if (absmax == 0.0f)
    return 0.0;
  // n = fl(x / a); the nearest entry c is within H(n) of n; the result
  // fl(c * a) is within u |c a| (+ subnormal half-ulp) of c a; and
  // |n - x/a| <= u |x/a|. Summing, with |c| <= |n| + H <= |x/a|(1+u) + H:
  double a = absmax;
  double n = static_cast<double>(x / absmax);
  double h = halfGapAround(map.values(), n);
  return a * h + kUnitRoundoff * (2 * std::fabs(static_cast<double>(x)) + 2 * a * h) +
         kSubnormalHalfUlp;
}

double q8MaxError(const Q8Map &map, float absmax) {
  const auto &m = map.values();
  double h = map.isSigned() ? m[0] + 1.0 : 0.0; // the stretch [-1, map[0]]
  for (size_t i = 0; i < 255; ++i)
    h = std::max(h, (static_cast<double>(m[i + 1]) - m[i]) / 2);
  double a = absmax;
  return a * h + kUnitRoundoff * (2 * a + 2 * a * h) + kSubnormalHalfUlp;
}

} // namespace optrt
