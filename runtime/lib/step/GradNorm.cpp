#include "GradNorm.h"

#include <bit>
#include <stdexcept>
#include <string>

namespace optrt::detail {

namespace {

constexpr int kLanes = 16;

inline float bf16Value(uint16_t bits) { return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16); }

/// f16 to f32, exact, written so that the loop vectorises (no call, no
/// table); the sign is dropped since only squares are taken, except that a
/// NaN stays a NaN.
inline float f16Magnitude(uint16_t bits) {
  uint32_t exponent = (bits >> 10) & 31u, mantissa = bits & 1023u;
  float normal = std::bit_cast<float>(((exponent + 112u) << 23) | (mantissa << 13));
  float subnormal = static_cast<float>(mantissa) * 0x1p-24f;
  float special = std::bit_cast<float>(0x7f800000u | (mantissa << 13));
  return exponent == 0 ? subnormal : exponent == 31 ? special : normal;
}

template <typename Element, typename Decode>
// One clone per x86-64 level: the vector width changes how fast the lanes
// fill, never which lane a value lands in or the order they are combined.
__attribute__((target_clones("default", "arch=x86-64-v3", "arch=x86-64-v4"))) double
sumSquares(const Element *data, int64_t begin, int64_t end, Decode decode) {
  double lanes[kLanes] = {};
  int64_t i = begin;
  for (; i + kLanes <= end; i += kLanes)
    for (int j = 0; j < kLanes; ++j) {
      double x = decode(data[i + j]);
      lanes[j] += x * x;
    }
  for (int j = 0; i < end; ++i, ++j) {
    double x = decode(data[i]);
    lanes[j] += x * x;
  }
  // A fixed pairwise tree over the lanes.
  for (int width = kLanes / 2; width > 0; width /= 2)
    for (int j = 0; j < width; ++j)
      lanes[j] += lanes[j + width];
  return lanes[0];
}

} // namespace

double sumOfSquares(Dtype dtype, const void *data, int64_t begin, int64_t end) {
  switch (dtype) {
  case Dtype::F32:
    return sumSquares(static_cast<const float *>(data), begin, end, [](float x) { return x; });
  case Dtype::BF16:
    // Lambdas, not function pointers: each decode its own instance, inlined.
    return sumSquares(static_cast<const uint16_t *>(data), begin, end, [](uint16_t x) { return bf16Value(x); });
  case Dtype::F16:
    return sumSquares(static_cast<const uint16_t *>(data), begin, end, [](uint16_t x) { return f16Magnitude(x); });
  default:
    throw std::logic_error("optrt: gradients stored as " + std::string(dtypeName(dtype)) + " cannot be read");
  }
}

} // namespace optrt::detail
