// The arithmetic of the precision layouts' conversions, shared by every
// backend: f32 lanes to and from bf16/f16 bit patterns (round to nearest even
// or stochastically), the counter-based stochastic bits, the join and split
// of a bf16 param and its 16-bit remainder, and the q8 quantiser (decade
// arithmetic and threshold compare). Values in, values out, at any lane width
// (1 = scalar): loads, stores and table accesses stay with the backends
// (CPU/StorageCodegen, CUDA/DeviceKernels), so the CPU and GPU kernels give
// the same bits, which are those of the reference codecs (optrt/Storage.h).
#pragma once

#include "optrt/Storage.h"

#include "mlir/IR/Builders.h"

#include <functional>
#include <utility>
#include <vector>

namespace optdsl::codegen {

// --- lanes -------------------------------------------------------------------
/// 1 for a scalar, else the vector's length.
int64_t widthOf(mlir::Value value);
/// `scalar` (width 1) or vector<width x scalar>.
mlir::Type lanesOf(mlir::Type scalar, int64_t width);
mlir::Value splatInt(mlir::OpBuilder &builder, mlir::Location loc, mlir::Type scalar, int64_t value, int64_t width);
mlir::Value splatF32(mlir::OpBuilder &builder, mlir::Location loc, float value, int64_t width);
mlir::Value broadcast(mlir::OpBuilder &builder, mlir::Location loc, mlir::Value scalar, int64_t width);

// --- bf16 and f16 -------------------------------------------------------------
/// Exact f32 lanes of i16 lanes holding bf16 / f16 patterns.
/// `exactNan`: decode a NaN's payload in integer arithmetic (optrt::f16ToF32
/// keeps it, quietened) instead of trusting the target's conversion, which
/// x86's vcvtph2ps gets right and PTX's cvt does not promise.
mlir::Value widenBf16(mlir::OpBuilder &builder, mlir::Location loc, mlir::Value raw);
mlir::Value widenF16(mlir::OpBuilder &builder, mlir::Location loc, mlir::Value raw, bool exactNan);

/// i16 lanes: f32 lanes rounded to bf16 / f16 as optrt::f32ToBf16 /
/// f32ToF16 (nearest even, NaN keeps its top payload, quiet), or with
/// `random` (i32 lanes) stochastically as optrt::f32ToBf16Stochastic /
/// f32ToF16Stochastic. `exactNan` as for widenF16.
mlir::Value narrowBf16(mlir::OpBuilder &builder, mlir::Location loc, mlir::Value value, mlir::Value random = {});
mlir::Value narrowF16(mlir::OpBuilder &builder, mlir::Location loc, mlir::Value value, mlir::Value random,
                      bool exactNan);

// --- stochastic bits -----------------------------------------------------------
/// lowbias32 (optrt's StorageStochastic.cpp) on i32 lanes.
mlir::Value mixBits(mlir::OpBuilder &builder, mlir::Location loc, mlir::Value x);
/// optrt::stochasticBitsFromKey(key, index + lane) for `width` lanes: key an
/// i32 scalar, index the i64 element index of lane 0.
mlir::Value stochasticBits(mlir::OpBuilder &builder, mlir::Location loc, mlir::Value key, mlir::Value index,
                           int64_t width);
/// optrt::stochasticBits(seed, step, index) for scalars: seed i32, step and
/// index i64 (the per-tensor key the runtime hands a kernel).
mlir::Value stochasticKeyBits(mlir::OpBuilder &builder, mlir::Location loc, mlir::Value seed, mlir::Value step,
                              mlir::Value index);
/// The salt of buffer `buffer` of a layout: its bits use key ^ salt, so a
/// param and its states never share bits.
int32_t stochasticSalt(int buffer);
/// `random(stream)` (opt.random) for `width` lanes from element `index` (i64):
/// optrt::uniformFromBits(stochasticBitsFromKey(key ^ randomStreamSalt(stream),
/// index + lane)) as f32 lanes, key the tensor's i32 key.
mlir::Value randomUniform(mlir::OpBuilder &builder, mlir::Location loc, mlir::Value key, int64_t stream,
                          mlir::Value index, int64_t width);

// --- bf16 param + 16-bit remainder ------------------------------------------------
/// optrt::joinMaster on i16 lanes (param, remainder) -> f32 lanes.
mlir::Value joinMaster(mlir::OpBuilder &builder, mlir::Location loc, mlir::Value param, mlir::Value remainder);
/// optrt::splitMaster: f32 lanes -> {param, remainder} as i16 lanes.
std::pair<mlir::Value, mlir::Value> splitMaster(mlir::OpBuilder &builder, mlir::Location loc, mlir::Value value);

// --- q8 ---------------------------------------------------------------------------
/// The dynamic map's layout by decade, read off the map itself: its positive
/// entries below 1 fall into 7 decades (1e-7, 1e-6], ..., (0.1, 1), each an
/// almost evenly spaced run of entries. Decade i (counted as the number of
/// bounds 1e-6 ... 0.1 at or below a value) starts at code `base` with entry
/// v0, spaced about `spacing`: the code of the entry at or below a is about
/// base + floor((a - v0) / spacing) = floor(a * inverseSpacing + offset).
/// Over the decade's own range [bound, 10 bound) that is base - 1 at the
/// bottom (the first entry sits half a spacing above the bound) and the
/// decade's last code at the top, so no clamping per decade is needed.
struct Q8Decade {
  float inverseSpacing, offset;
};
inline constexpr float kQ8DecadeBounds[6] = {1e-6f, 1e-5f, 1e-4f, 1e-3f, 1e-2f, 1e-1f};
int q8DecadeOf(float magnitude);
std::vector<Q8Decade> q8Decades(const optrt::Q8Map &map);

/// What the quantiser needs from a backend: the threshold table lookup
/// (thresholds()[index] for i32 lanes in [0, 254]) and, optionally, a
/// faster way to the decade constants {inverseSpacing, offset} of |n|
/// (default: six compares and selects).
struct Q8Lookups {
  std::function<mlir::Value(mlir::OpBuilder &, mlir::Location, mlir::Value index)> threshold;
  std::function<std::pair<mlir::Value, mlir::Value>(mlir::OpBuilder &, mlir::Location, mlir::Value magnitude)>
      decade;
};

/// i32 lanes: the codes of f32 lanes `x` in a block of absmax `absmax` (f32
/// scalar or lanes): optrt::quantizeBlockwise, non-finite policy included.
mlir::Value quantizeQ8(mlir::OpBuilder &builder, mlir::Location loc, bool isSigned, mlir::Value x,
                       mlir::Value absmax, const Q8Lookups &lookups);

/// |x| where x is finite, else 0: what a value contributes to its block's
/// absmax.
mlir::Value finiteMagnitude(mlir::OpBuilder &builder, mlir::Location loc, mlir::Value x);

bool isQ8(optrt::Dtype dtype);

} // namespace optdsl::codegen
