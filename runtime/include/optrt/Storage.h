// The exact storage semantics of a precision layout (Layout.h): how an f32
// value is written to and read from bf16, f16 and 8-bit block-wise (q8)
// storage, and how a bf16 param plus a 16-bit remainder hold an exact f32
// master. Arithmetic is always f32; these functions are the reference the
// compiled per-layout kernels are tested against, and what the runtime uses
// to convert state between layouts. docs/layouts.md describes the formats,
// the stochastic-rounding function and the q8 error bounds.
#pragma once

#include "optrt/Layout.h"

#include <array>
#include <cstddef>
#include <cstdint>
#include <bit>
#include <span>

namespace optrt {

// ---- bf16 / f16 (StorageFloat16.cpp) ---------------------------------------

/// f32 -> bf16, round to nearest, ties to even. NaN stays NaN (quietened,
/// sign kept); Inf stays Inf; values that round past the largest finite bf16
/// become Inf. (Inline: loops over many values, e.g. a reduction of bf16
/// gradients across ranks, vectorise it.)
inline uint16_t f32ToBf16(float x) {
  uint32_t bits = std::bit_cast<uint32_t>(x);
  // Round to nearest even: add 0x7FFF plus the bit that becomes the lsb. The
  // carry runs into the exponent (and to Inf) exactly as rounding requires.
  uint32_t rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
  // Adding the rounding bias to a NaN could carry it into Inf or the sign;
  // keep its top payload and set the quiet bit instead. (A select, not a
  // branch, so that loops vectorise.)
  uint32_t quietNan = (bits >> 16) | 0x0040u;
  return static_cast<uint16_t>((bits & 0x7FFFFFFFu) > 0x7F800000u ? quietNan : rounded);
}
/// bf16 -> f32, exact.
inline float bf16ToF32(uint16_t bits) { return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16); }
/// f32 -> IEEE binary16, round to nearest, ties to even. NaN stays NaN, Inf
/// stays Inf, magnitudes >= 65520 become Inf, subnormal results are exact
/// roundings (no flush to zero).
uint16_t f32ToF16(float x);
/// binary16 -> f32, exact (subnormals included).
float f16ToF32(uint16_t bits);

// ---- stochastic rounding (StorageStochastic.cpp) ---------------------------

/// The random bits of one element write: a counter-based hash of (seed,
/// step, element index) with no state, so any thread count and any chunking
/// give the same bits, and a compiled kernel reproduces them exactly.
/// The function is spelled out in docs/layouts.md and StorageStochastic.cpp.
uint32_t stochasticBits(uint32_t seed, uint64_t step, uint64_t index);
/// The per-(seed, step) half of stochasticBits, computed once per step.
uint32_t stochasticKey(uint32_t seed, uint64_t step);
/// The per-element half: stochasticBits(s, t, i) == stochasticBitsFromKey(stochasticKey(s, t), i).
uint32_t stochasticBitsFromKey(uint32_t key, uint64_t index);

/// `random(stream)` in a rule (dsl/README.md): element i of tensor t at
/// optimizer step s draws stochasticBitsFromKey(stochasticBits(seed, s, t) ^
/// randomStreamSalt(stream), i), the tensor's rounding key with a salt per
/// stream, so streams, tensors, steps and elements never share bits.
inline uint32_t randomStreamSalt(uint32_t stream) { return 0xA511E9B3u ^ (stream * 0x85EBCA77u); }
/// The value in [0, 1) of 32 random bits: their top 24, times 2^-24 (exact
/// in f32 and f64).
inline double uniformFromBits(uint32_t bits) { return static_cast<double>(bits >> 8) * 0x1p-24; }

/// f32 -> bf16 / f16, stochastically: with lo the value rounded toward zero
/// and frac in [0, 1) the remaining part of |x| in units of the format's
/// spacing at lo, the result is the neighbour away from zero iff
/// random < frac * 2^32 (exact comparison), else lo. So P(away) == frac
/// whenever frac has at most 32 fractional bits (always for bf16; for f16
/// unless x is far below the f16 subnormal spacing). NaN and Inf as in RNE;
/// finite values beyond the largest finite value may round to Inf.
uint16_t f32ToBf16Stochastic(float x, uint32_t random);
uint16_t f32ToF16Stochastic(float x, uint32_t random);

// ---- bf16 param + 16-bit remainder = exact f32 master (StorageRemainder.cpp)

/// apex's store_param_remainders convention: the f32 master's high half,
/// rounded to nearest (ties away from zero) on the low half, is the bf16
/// param; the low half, as a signed 16-bit remainder, is what restores the
/// master exactly. Exact for every non-NaN f32; a NaN master gives a NaN
/// param and restores as a NaN (payload not kept), never as a number.
struct ParamRemainder {
  uint16_t param; ///< bf16 bits
  int16_t remainder; ///< the low 16 bits of the f32 master, signed
};
ParamRemainder splitMaster(float master);
float joinMaster(uint16_t paramBf16, int16_t remainder);

// ---- the dynamic 8-bit map (StorageDynamicMap.cpp) -------------------------

/// bitsandbytes.functional.create_dynamic_map(signed, max_exponent_bits=7,
/// total_bits=8): 256 f32 values, ascending. Signed: one 0, 127 positive
/// and 127 negative entries, largest 1.0, smallest -0.99296875. Unsigned:
/// one 0 and 255 positive entries, largest 1.0.
///
/// The entries come from torch.linspace(0.1, 1, n, float32); torch's x86
/// builds for AVX2/AVX-512 contract its `start + step * i` into a fused
/// multiply-add, the default (no-SIMD) build does not, and the maps differ by
/// one ulp in some entries. fusedLinspace = true (the default) gives the map
/// every AVX2 host computes; false the other one.
std::array<float, 256> dynamicMap(bool isSigned, bool fusedLinspace = true);

// ---- 8-bit block-wise quantisation (StorageBlockQuant.cpp) -----------------

inline constexpr uint32_t kQ8BlockElements = 256;

/// A map with its decision thresholds: code(n) = number of thresholds <= n,
/// which is the map entry nearest to n in exact arithmetic, ties to the
/// lower entry.
class Q8Map {
public:
  /// The map bitsandbytes builds (create_dynamic_map), signed or unsigned; `fusedLinspace` picks which of torch's linspace roundings (docs/layouts.md).
  explicit Q8Map(bool isSigned, bool fusedLinspace = true);
  /// Whether the map covers [-1, 1] (else [0, 1]).
  bool isSigned() const { return signed_; }
  /// The 256 entries, ascending.
  const std::array<float, 256> &values() const { return values_; }
  /// thresholds()[i]: the smallest f32 that is nearer map[i+1] than map[i].
  const std::array<float, 255> &thresholds() const { return thresholds_; }
  /// The index of the entry nearest to n (n in [-1, 1]; outside, the ends).
  uint8_t nearest(float n) const;
  /// The index of the 0 entry: what absmax-0 blocks and NaN elements store.
  uint8_t zeroCode() const { return zeroCode_; }

private:
  bool signed_;
  uint8_t zeroCode_ = 0;
  std::array<float, 256> values_;
  std::array<float, 255> thresholds_;
};

/// The signed / unsigned maps (fused linspace), built once.
const Q8Map &q8Map(bool isSigned);
inline const Q8Map &q8MapFor(Dtype dtype) { return q8Map(dtype == Dtype::Q8Signed); }

/// What a block-wise quantisation met.
struct Q8BlockStats {
  size_t nonFinite = 0; ///< NaN and +-Inf inputs (see the policy below)
};

/// Quantises x into codes (same length) and absmax (one per block of
/// blockElements, the last block partial). Per block: absmax = max |x| over
/// its finite elements (0 when there are none); each finite x stores
/// nearest(x / absmax) (all zeroCode() when absmax is 0). Policy for
/// non-finite inputs, so one bad element never changes its block's others:
/// NaN stores the 0 entry, +Inf the largest entry (+absmax), -Inf the
/// smallest (the most negative entry, or 0 for the unsigned map); they are
/// counted in the result so the caller can refuse or report the step.
Q8BlockStats quantizeBlockwise(const Q8Map &map, std::span<const float> x, std::span<uint8_t> codes,
                               std::span<float> absmax, uint32_t blockElements = kQ8BlockElements);
/// out[i] = map[codes[i]] * absmax[i / blockElements] (f32 multiply).
void dequantizeBlockwise(const Q8Map &map, std::span<const uint8_t> codes,
                         std::span<const float> absmax, std::span<float> out,
                         uint32_t blockElements = kQ8BlockElements);
inline size_t q8Blocks(size_t elements, uint32_t blockElements = kQ8BlockElements) {
  return (elements + blockElements - 1) / blockElements;
}

/// Error bounds of one round trip of a finite x in a block with absmax a:
/// |dequant(quant(x)) - x| <= q8ErrorBound(map, x, a). It is half the gap of
/// the map entries around x/a, times a, plus the f32 roundings of x/a and of
/// map[c]*a (docs/layouts.md derives it).
double q8ErrorBound(const Q8Map &map, float x, float absmax);
/// The worst case over every x in [-a, a]: a * (largest half-gap of the map,
/// counting the stretch between -1 and the smallest signed entry) plus the
/// same roundings.
double q8MaxError(const Q8Map &map, float absmax);

// ---- whole buffers, any dtype (StorageCodec.cpp) ---------------------------

enum class Rounding { Nearest, Stochastic };

/// How bf16/f16 writes round; stochastic bits use (seed, step, firstIndex + i).
struct WriteRounding {
  Rounding mode = Rounding::Nearest; ///< nearest even or stochastic
  uint32_t seed = 0; ///< seed of the stochastic bits
  uint64_t step = 0; ///< the step the bits are drawn for
  uint64_t firstIndex = 0; ///< the element index of the first value written
};

/// Bytes of n elements stored as dtype, absmax blocks of q8 excluded.
size_t elementBytes(Dtype dtype, size_t n);

/// Writes n f32 values into storage of dtype (absmax: q8Blocks(n) floats for
/// q8, unused otherwise). Returns the non-finite count of a q8 write, else 0.
size_t encodeF32(Dtype dtype, std::span<const float> in, void *data, float *absmax,
                 const WriteRounding &rounding = {});
/// Reads n values stored as dtype into f32.
void decodeToF32(Dtype dtype, const void *data, const float *absmax, std::span<float> out);

} // namespace optrt
