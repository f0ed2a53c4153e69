// Stochastic rounding to bf16/f16 and its counter-based random bits.
//
// The bits of element `index` at `step` under `seed` are
//   mix(x)   = lowbias32: x ^= x>>16; x *= 0x7feb352d; x ^= x>>15;
//              x *= 0x846ca68b; x ^= x>>16            (all mod 2^32)
//   key      = mix(seed ^ mix(lo32(step) ^ mix(hi32(step) ^ 0x9e3779b9)))
//   bits     = mix(mix(key ^ lo32(index)) ^ hi32(index))
// No state: any thread count or chunking gives the same bits, and a kernel
// computes key once per step (a uniform) and two mixes per element.
#include "optrt/Storage.h"

#include "StorageBits.h"

namespace optrt {

using storage_detail::bitsOf;
using storage_detail::isNanBits;

namespace {

uint32_t mix(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}

uint32_t lo32(uint64_t v) { return static_cast<uint32_t>(v); }
uint32_t hi32(uint64_t v) { return static_cast<uint32_t>(v >> 32); }

} // namespace

uint32_t stochasticKey(uint32_t seed, uint64_t step) {
  return mix(seed ^ mix(lo32(step) ^ mix(hi32(step) ^ 0x9e3779b9u)));
}

uint32_t stochasticBitsFromKey(uint32_t key, uint64_t index) {
  return mix(mix(key ^ lo32(index)) ^ hi32(index));
}

uint32_t stochasticBits(uint32_t seed, uint64_t step, uint64_t index) {
  return stochasticBitsFromKey(stochasticKey(seed, step), index);
}

uint16_t f32ToBf16Stochastic(float x, uint32_t random) {
  uint32_t bits = bitsOf(x);
  if (isNanBits(bits))
    return f32ToBf16(x);
  // The pattern truncated to 16 bits is the value rounded toward zero (Inf
  // has no low bits, so stays Inf); the low 16 bits are frac * 2^16, so
  // frac * 2^32 = low << 16. +1 on the pattern is the neighbour away from 0.
  uint32_t low = bits & 0xFFFFu;
  uint32_t away = static_cast<uint64_t>(random) < (static_cast<uint64_t>(low) << 16) ? 1u : 0u;
  return static_cast<uint16_t>((bits >> 16) + away);
}

uint16_t f32ToF16Stochastic(float x, uint32_t random) {
  uint32_t bits = bitsOf(x);
  uint32_t mag = bits & 0x7FFFFFFFu;
  uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  if (mag >= 0x47800000u) // NaN, Inf, and >= 65536: nothing finite lies above
    return mag > 0x7F800000u ? f32ToF16(x) : static_cast<uint16_t>(sign | 0x7C00u);
  uint32_t lo;   // |x| rounded toward zero, as an f16 magnitude pattern
  bool away;
  if (mag >= 0x38800000u) { // normal f16 range: 13 bits are cut
    uint32_t m = mag - 0x38000000u;
    lo = m >> 13;
    uint64_t fracTimes2To32 = static_cast<uint64_t>(m & 0x1FFFu) << 19;
    away = random < fracTimes2To32;
  } else {
    // Subnormal f16 range: units of 2^-24. |x| = mant * 2^-shift units.
    uint32_t e = mag >> 23;
    uint32_t mant = e ? ((mag & 0x007FFFFFu) | 0x00800000u) : mag;
    uint32_t shift = e ? 126 - e : 125; // >= 14
    lo = shift >= 32 ? 0 : mant >> shift;
    uint64_t rest = shift >= 32 ? mant : (mant & ((1u << shift) - 1u)); // frac = rest / 2^shift
    // random < frac * 2^32, exactly, without overflow.
    if (shift <= 32)
      away = random < (rest << (32 - shift));
    else if (shift - 32 >= 24) // rest < 2^24 <= random * 2^(shift-32) unless random is 0
      away = random == 0 && rest != 0;
    else
      away = (static_cast<uint64_t>(random) << (shift - 32)) < rest;
  }
  return static_cast<uint16_t>(sign | (lo + (away ? 1u : 0u)));
}

} // namespace optrt
