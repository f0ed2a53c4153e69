// f32 <-> IEEE binary16 (bf16 is inline in Storage.h), round to nearest even, on the bit
// patterns (no dependence on the host's F16C/AVX512-BF16 or rounding mode).
#include "optrt/Storage.h"

#include "StorageBits.h"

namespace optrt {

using storage_detail::bitsOf;
using storage_detail::floatOf;
using storage_detail::isNanBits;

uint16_t f32ToF16(float x) {
  uint32_t bits = bitsOf(x);
  uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  uint32_t mag = bits & 0x7FFFFFFFu;
  if (mag > 0x7F800000u) // NaN: keep the top payload bits, force quiet
    return sign | 0x7E00u | static_cast<uint16_t>((mag >> 13) & 0x03FFu);
  if (mag >= 0x477FF000u) // >= 65520 (half way past 65504) and Inf
    return sign | 0x7C00u;
  if (mag >= 0x38800000u) { // result is a normal f16 (>= 2^-14)
    // Rebias the exponent (127 -> 15): the f16 pattern sits 13 bits up.
    uint32_t m = mag - 0x38000000u;
    m += 0x0FFFu + ((m >> 13) & 1u);
    return sign | static_cast<uint16_t>(m >> 13);
  }
  if (mag <= 0x33000000u) // <= 2^-25: half the smallest subnormal, ties to 0
    return sign;
  // Subnormal f16: count units of 2^-24. |x| = mant * 2^(e - 150).
  uint32_t e = mag >> 23;
  uint32_t mant = (mag & 0x007FFFFFu) | 0x00800000u;
  uint32_t shift = 126 - e; // 14..24 here
  uint32_t result = mant >> shift;
  uint32_t rest = mant & ((1u << shift) - 1u);
  uint32_t half = 1u << (shift - 1);
  if (rest > half || (rest == half && (result & 1u)))
    ++result; // may reach 0x400, the smallest normal: still the right pattern
  return sign | static_cast<uint16_t>(result);
}

float f16ToF32(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t e = (h >> 10) & 0x1Fu;
  uint32_t m = h & 0x03FFu;
  if (e == 0x1F)
    return floatOf(sign | 0x7F800000u | (m << 13));
  if (e == 0) {
    // m * 2^-24 is exact in f32 (m < 2^10).
    float v = static_cast<float>(m) * 0x1p-24f;
    return floatOf(sign | bitsOf(v));
  }
  return floatOf(sign | ((e + 112u) << 23) | (m << 13));
}

} // namespace optrt
