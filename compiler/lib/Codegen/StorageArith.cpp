#include "optdsl/Codegen/StorageArith.h"

#include "optrt/Storage.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/BuiltinTypes.h"

#include <cmath>

namespace optdsl::codegen {

using namespace mlir;
using optrt::Dtype;

int64_t widthOf(Value value) {
  auto vector = dyn_cast<VectorType>(value.getType());
  return vector ? vector.getNumElements() : 1;
}

Type lanesOf(Type scalar, int64_t width) { return width == 1 ? scalar : VectorType::get({width}, scalar); }

Value splatInt(OpBuilder &builder, Location loc, Type scalar, int64_t value, int64_t width) {
  if (width == 1)
    return builder.create<arith::ConstantOp>(loc, builder.getIntegerAttr(scalar, value));
  auto type = VectorType::get({width}, scalar);
  return builder.create<arith::ConstantOp>(loc, DenseElementsAttr::get(type, builder.getIntegerAttr(scalar, value)));
}

Value splatF32(OpBuilder &builder, Location loc, float value, int64_t width) {
  if (width == 1)
    return builder.create<arith::ConstantOp>(loc, builder.getF32FloatAttr(value));
  auto type = VectorType::get({width}, builder.getF32Type());
  return builder.create<arith::ConstantOp>(loc, DenseElementsAttr::get(type, builder.getF32FloatAttr(value)));
}

Value broadcast(OpBuilder &builder, Location loc, Value scalar, int64_t width) {
  if (width == 1 || isa<VectorType>(scalar.getType()))
    return scalar;
  return builder.create<vector::BroadcastOp>(loc, VectorType::get({width}, scalar.getType()), scalar);
}

bool isQ8(Dtype dtype) { return dtype == Dtype::Q8Signed || dtype == Dtype::Q8Unsigned; }

namespace {

/// Integer lane arithmetic on i32 lanes of one width, spelled short.
struct IntLanes {
  OpBuilder &b;
  Location loc;
  int64_t width;
  Type i32s = b.getI32Type();
  Value c(int64_t v) { return splatInt(b, loc, i32s, v, width); }
  Value band(Value l, Value r) { return b.create<arith::AndIOp>(loc, l, r); }
  Value bor(Value l, Value r) { return b.create<arith::OrIOp>(loc, l, r); }
  Value shl(Value l, Value r) { return b.create<arith::ShLIOp>(loc, l, r); }
  Value shr(Value l, Value r) { return b.create<arith::ShRUIOp>(loc, l, r); }
  Value add(Value l, Value r) { return b.create<arith::AddIOp>(loc, l, r); }
  Value sub(Value l, Value r) { return b.create<arith::SubIOp>(loc, l, r); }
  Value umin(Value l, Value r) { return b.create<arith::MinUIOp>(loc, l, r); }
  Value cmp(arith::CmpIPredicate p, Value l, Value r) { return b.create<arith::CmpIOp>(loc, p, l, r); }
  Value sel(Value cond, Value t, Value e) { return b.create<arith::SelectOp>(loc, cond, t, e); }
  Value ext(Value i1) { return b.create<arith::ExtUIOp>(loc, lanesOf(i32s, width), i1); }
  Value bits(Value f32) { return b.create<arith::BitcastOp>(loc, lanesOf(i32s, width), f32); }
  Value isNan(Value f32) { return b.create<arith::CmpFOp>(loc, arith::CmpFPredicate::UNO, f32, f32); }
  Value toI16(Value v) { return b.create<arith::TruncIOp>(loc, lanesOf(b.getIntegerType(16), width), v); }
  Value fromI16(Value v) { return b.create<arith::ExtUIOp>(loc, lanesOf(i32s, width), v); }
};

/// optrt::f32ToF16Stochastic on i32 lanes: |x| rounded toward zero (lo, an
/// f16 magnitude pattern) plus one iff random < frac * 2^32, written as
/// random < T with T an exact u32 for every range: normal f16 (13 bits cut:
/// T = low 13 bits << 19), subnormal f16 (|x| = mant * 2^-shift units of
/// 2^-24: T = rest << (32 - shift) while shift <= 32, else
/// ceil(rest / 2^(shift - 32)), since random * 2^s < rest <=> random <
/// ceil(rest / 2^s)). NaN keeps round-to-nearest's pattern (`nearest`), Inf
/// and |x| >= 65536 give Inf. Shift amounts are clamped below 32 and the
/// out-of-range results selected away, so no lane is poison.
Value f16Stochastic(OpBuilder &builder, Location loc, Value value, Value random, Value nearest) {
  IntLanes l{builder, loc, widthOf(value)};
  using P = arith::CmpIPredicate;
  Value bits = l.bits(value);
  Value mag = l.band(bits, l.c(0x7FFFFFFF));
  Value sign = l.band(l.shr(bits, l.c(16)), l.c(0x8000));
  // Normal f16 range.
  Value m = l.sub(mag, l.c(0x38000000));
  Value normalLo = l.shr(m, l.c(13));
  Value normalT = l.shl(l.band(m, l.c(0x1FFF)), l.c(19));
  // Subnormal f16 range.
  Value e = l.shr(mag, l.c(23));
  Value isZeroExponent = l.cmp(P::eq, e, l.c(0));
  Value mant = l.sel(isZeroExponent, mag, l.bor(l.band(mag, l.c(0x007FFFFF)), l.c(0x00800000)));
  Value shift = l.sel(isZeroExponent, l.c(125), l.sub(l.c(126), l.umin(e, l.c(126))));
  Value wide = l.cmp(P::uge, shift, l.c(24)); // mant < 2^24: nothing survives the shift
  Value shift31 = l.umin(shift, l.c(31));
  Value subLo = l.sel(wide, l.c(0), l.shr(mant, shift31));
  Value mask = l.sel(wide, l.c(-1), l.sub(l.shl(l.c(1), shift31), l.c(1)));
  Value rest = l.band(mant, mask);
  Value upTo32 = l.cmp(P::ule, shift, l.c(32));
  Value tA = l.shl(rest, l.umin(l.sub(l.c(32), l.umin(shift, l.c(32))), l.c(31)));
  Value s = l.umin(l.sub(shift, l.umin(shift, l.c(32))), l.c(31));
  Value ceilShift = l.shr(l.add(rest, l.sub(l.shl(l.c(1), s), l.c(1))), s);
  Value tB = l.sel(l.cmp(P::uge, s, l.c(24)), l.ext(l.cmp(P::ne, rest, l.c(0))), ceilShift);
  Value subT = l.sel(upTo32, tA, tB);
  Value isNormal = l.cmp(P::uge, mag, l.c(0x38800000));
  Value lo = l.sel(isNormal, normalLo, subLo);
  Value threshold = l.sel(isNormal, normalT, subT);
  Value away = l.ext(l.cmp(P::ult, random, threshold));
  Value result = l.bor(sign, l.add(lo, away));
  Value huge = l.cmp(P::uge, mag, l.c(0x47800000));
  result = l.sel(huge, l.bor(sign, l.c(0x7C00)), result);
  return l.sel(l.isNan(value), nearest, l.toI16(result));
}

} // namespace

Value widenBf16(OpBuilder &builder, Location loc, Value raw) {
  // A bf16 is the high half of the f32 with the same value.
  IntLanes l{builder, loc, widthOf(raw)};
  return builder.create<arith::BitcastOp>(loc, lanesOf(builder.getF32Type(), l.width),
                                          l.shl(l.fromI16(raw), l.c(16)));
}

Value widenF16(OpBuilder &builder, Location loc, Value raw, bool exactNan) {
  int64_t width = widthOf(raw);
  Type f32 = lanesOf(builder.getF32Type(), width);
  // f16 -> f32 is exact; LLVM's fpext (vcvtph2ps with F16C, cvt.f32.f16 in
  // PTX) gives the bits of optrt::f16ToF32 for every number.
  Value half = builder.create<arith::BitcastOp>(loc, lanesOf(builder.getF16Type(), width), raw);
  Value wide = builder.create<arith::ExtFOp>(loc, f32, half);
  if (!exactNan)
    return wide;
  // f16ToF32 of a NaN: sign | exponent all ones | the 10 payload bits on top.
  IntLanes l{builder, loc, width};
  Value h = l.fromI16(raw);
  Value isNan = l.cmp(arith::CmpIPredicate::ugt, l.band(h, l.c(0x7FFF)), l.c(0x7C00));
  Value nan = l.bor(l.bor(l.shl(l.band(h, l.c(0x8000)), l.c(16)), l.c(0x7F800000)),
                    l.shl(l.band(h, l.c(0x03FF)), l.c(13)));
  return l.sel(isNan, builder.create<arith::BitcastOp>(loc, f32, nan), wide);
}

Value narrowBf16(OpBuilder &builder, Location loc, Value value, Value random) {
  // optrt::f32ToBf16 on the bit pattern: adding 0x7FFF plus the bit that
  // becomes the lsb rounds to nearest even, the carry running into the
  // exponent (and to Inf) as it must; a NaN instead keeps its top payload
  // and gets the quiet bit, since the bias could carry it into Inf.
  IntLanes l{builder, loc, widthOf(value)};
  Value bits = l.bits(value);
  Value high = l.shr(bits, l.c(16));
  Value bias = l.add(l.band(high, l.c(1)), l.c(0x7FFF));
  Value rounded = l.shr(l.add(bits, bias), l.c(16));
  if (random) {
    // optrt::f32ToBf16Stochastic: the truncated pattern is |x| rounded
    // toward zero, the low 16 bits are frac * 2^16, and the neighbour away
    // from zero (pattern + 1) is taken iff random < frac * 2^32, i.e.
    // (random >> 16) < low. Inf has no low bits and stays Inf.
    Value away = l.cmp(arith::CmpIPredicate::ult, l.shr(random, l.c(16)), l.band(bits, l.c(0xFFFF)));
    rounded = l.sel(away, l.add(high, l.c(1)), high);
  }
  Value quiet = l.bor(high, l.c(0x40));
  return l.toI16(l.sel(l.isNan(value), quiet, rounded));
}

Value narrowF16(OpBuilder &builder, Location loc, Value value, Value random, bool exactNan) {
  int64_t width = widthOf(value);
  // LLVM's fptrunc rounds to nearest even with correct subnormals and
  // overflow (x86's F16C also keeps a NaN's top payload with the quiet bit:
  // the bits of optrt::f32ToF16; tests/layouts checks the kernels).
  Value half = builder.create<arith::TruncFOp>(loc, lanesOf(builder.getF16Type(), width), value);
  Value stored = builder.create<arith::BitcastOp>(loc, lanesOf(builder.getIntegerType(16), width), half);
  if (exactNan) {
    IntLanes l{builder, loc, width};
    Value bits = l.bits(value);
    Value payload = l.band(l.shr(bits, l.c(13)), l.c(0x03FF));
    Value nan = l.bor(l.bor(l.band(l.shr(bits, l.c(16)), l.c(0x8000)), l.c(0x7E00)), payload);
    stored = l.sel(l.isNan(value), l.toI16(nan), stored);
  }
  if (random)
    stored = f16Stochastic(builder, loc, value, random, stored);
  return stored;
}

Value mixBits(OpBuilder &builder, Location loc, Value x) {
  IntLanes l{builder, loc, widthOf(x)};
  auto xorShift = [&](Value v, int64_t shift) {
    return builder.create<arith::XOrIOp>(loc, v, l.shr(v, l.c(shift))).getResult();
  };
  x = xorShift(x, 16);
  x = builder.create<arith::MulIOp>(loc, x, l.c(0x7feb352d));
  x = xorShift(x, 15);
  x = builder.create<arith::MulIOp>(loc, x, l.c(static_cast<int32_t>(0x846ca68bu)));
  return xorShift(x, 16);
}

Value stochasticBits(OpBuilder &builder, Location loc, Value key, Value index, int64_t width) {
  Type i64 = builder.getI64Type();
  Value lanesIndex = broadcast(builder, loc, index, width);
  if (width > 1) {
    std::vector<int64_t> iota(width);
    for (int64_t i = 0; i < width; ++i)
      iota[i] = i;
    auto type = VectorType::get({width}, i64);
    lanesIndex = builder.create<arith::AddIOp>(
        loc, lanesIndex, builder.create<arith::ConstantOp>(loc, DenseElementsAttr::get(type, llvm::ArrayRef<int64_t>(iota))));
  }
  Type i32 = lanesOf(builder.getI32Type(), width);
  Value lo = builder.create<arith::TruncIOp>(loc, i32, lanesIndex);
  Value hi = builder.create<arith::TruncIOp>(
      loc, i32, builder.create<arith::ShRUIOp>(loc, lanesIndex, splatInt(builder, loc, i64, 32, width)));
  Value keyLanes = broadcast(builder, loc, key, width);
  Value first = mixBits(builder, loc, builder.create<arith::XOrIOp>(loc, keyLanes, lo));
  return mixBits(builder, loc, builder.create<arith::XOrIOp>(loc, first, hi));
}

Value stochasticKeyBits(OpBuilder &builder, Location loc, Value seed, Value step, Value index) {
  Type i32 = builder.getI32Type();
  auto lo = [&](Value v) { return builder.create<arith::TruncIOp>(loc, i32, v).getResult(); };
  auto hi = [&](Value v) {
    Value shifted = builder.create<arith::ShRUIOp>(
        loc, v, builder.create<arith::ConstantOp>(loc, builder.getI64IntegerAttr(32)));
    return lo(shifted);
  };
  auto x = [&](Value a, Value b) { return builder.create<arith::XOrIOp>(loc, a, b).getResult(); };
  Value golden = builder.create<arith::ConstantOp>(loc, builder.getI32IntegerAttr(static_cast<int32_t>(0x9e3779b9u)));
  // optrt::stochasticKey(seed, step), then stochasticBitsFromKey(key, index).
  Value key = mixBits(builder, loc, x(seed, mixBits(builder, loc, x(lo(step), mixBits(builder, loc, x(hi(step), golden))))));
  return stochasticBits(builder, loc, key, index, 1);
}

int32_t stochasticSalt(int buffer) { return static_cast<int32_t>(static_cast<uint32_t>(buffer) * 0x9E3779B9u); }

Value randomUniform(OpBuilder &builder, Location loc, Value key, int64_t stream, Value index, int64_t width) {
  Value salt = builder.create<arith::ConstantOp>(
      loc, builder.getI32IntegerAttr(static_cast<int32_t>(optrt::randomStreamSalt(static_cast<uint32_t>(stream)))));
  Value bits = stochasticBits(builder, loc, builder.create<arith::XOrIOp>(loc, key, salt), index, width);
  Type f32 = lanesOf(builder.getF32Type(), width);
  // The top 24 bits, exact in f32, times 2^-24: [0, 1).
  Value top = builder.create<arith::ShRUIOp>(loc, bits, splatInt(builder, loc, builder.getI32Type(), 8, width));
  Value value = builder.create<arith::UIToFPOp>(loc, f32, top);
  Value scale = broadcast(builder, loc, builder.create<arith::ConstantOp>(loc, builder.getF32FloatAttr(0x1p-24f)), width);
  return builder.create<arith::MulFOp>(loc, value, scale);
}

Value joinMaster(OpBuilder &builder, Location loc, Value param, Value remainder) {
  IntLanes l{builder, loc, widthOf(param)};
  Value high = l.fromI16(param);
  Value low = l.fromI16(remainder);
  // A negative remainder (bit 15 set) means splitMaster rounded the param
  // up: the master's high half is one less.
  Value negative = l.cmp(arith::CmpIPredicate::uge, low, l.c(0x8000));
  Value joined = l.bor(l.shl(l.sub(high, l.ext(negative)), l.c(16)), low);
  // A NaN param stands for a NaN master.
  Value isNan = l.cmp(arith::CmpIPredicate::ugt, l.band(high, l.c(0x7FFF)), l.c(0x7F80));
  Value nan = l.bor(l.shl(high, l.c(16)), l.c(0x00400000));
  return builder.create<arith::BitcastOp>(loc, lanesOf(builder.getF32Type(), l.width), l.sel(isNan, nan, joined));
}

std::pair<Value, Value> splitMaster(OpBuilder &builder, Location loc, Value value) {
  IntLanes l{builder, loc, widthOf(value)};
  Value bits = l.bits(value);
  Value high = l.shr(bits, l.c(16));
  Value negative = l.cmp(arith::CmpIPredicate::uge, l.band(bits, l.c(0xFFFF)), l.c(0x8000));
  Value rounded = l.add(high, l.ext(negative));
  // A NaN's high half + 1 could wrap into -0 or 0: keep it a quiet NaN.
  Value param = l.sel(l.isNan(value), l.bor(high, l.c(0x40)), rounded);
  return {l.toI16(param), l.toI16(bits)};
}

int q8DecadeOf(float a) {
  int i = 0;
  for (float bound : kQ8DecadeBounds)
    i += a >= bound;
  return i;
}

std::vector<Q8Decade> q8Decades(const optrt::Q8Map &map) {
  const auto &v = map.values();
  std::vector<int> first(7, -1), last(7, -1);
  for (int code = map.zeroCode() + 1; code < 255; ++code) {
    int i = q8DecadeOf(v[code]);
    if (first[i] < 0)
      first[i] = code;
    last[i] = code;
  }
  std::vector<Q8Decade> result;
  for (int i = 0; i < 7; ++i) {
    int count = last[i] - first[i] + 1;
    // A decade of one entry (the signed map's lowest): its spacing is the
    // decade's width, so any a in [0, 1e-6) lands on base - 1 or base.
    double spacing = count > 1 ? (static_cast<double>(v[last[i]]) - v[first[i]]) / (count - 1) : 9e-7;
    double inverse = 1.0 / spacing;
    result.push_back({static_cast<float>(inverse), static_cast<float>(first[i] - v[first[i]] * inverse)});
  }
  return result;
}

Value quantizeQ8(OpBuilder &builder, Location loc, bool isSigned, Value x, Value absmax, const Q8Lookups &lookups) {
  int64_t width = widthOf(x);
  Type i32s = builder.getI32Type();
  const optrt::Q8Map &map = optrt::q8Map(isSigned);
  auto f = [&](float value) { return splatF32(builder, loc, value, width); };
  auto lt = [&](Value l, Value r) { return builder.create<arith::CmpFOp>(loc, arith::CmpFPredicate::OLT, l, r); };
  auto select = [&](Value c, Value t, Value e) { return builder.create<arith::SelectOp>(loc, c, t, e); };
  // n = fl(x / absmax), IEEE division as the reference. absmax 0 makes every
  // finite x (then 0) a NaN, which stores the 0 entry as the reference does;
  // +-Inf stay +-Inf and count all or none of the thresholds: the largest
  // entry and code 0 (the most negative entry, or the unsigned map's 0).
  Value n = builder.create<arith::DivFOp>(loc, x, broadcast(builder, loc, absmax, width));
  // The code is the number of thresholds <= n. Instead of a binary search
  // (8 table lookups), locate n among the map's entries from its decade
  // structure with constants only: the decade of |n| by six compares, then
  // P = floor(|n| / spacing + offset) (Q8Decade) is the code of the entry at
  // or below |n|, and P + 1 of the one above, up to roundings that only
  // matter when |n| is close to an entry, far from any threshold. The one
  // threshold between those two entries settles it: code = P + [t[P] <= n].
  // (If the rounding crossed an entry e, P is e - 1 or e and both give e.)
  // At a decade's edges P is the code below its first entry or its last
  // code, and t[P] the threshold between the decades.
  // Negative n mirrors: entries are symmetric around the 0 entry, so the
  // threshold between the mirrored pair is t[2 zeroCode - P - 1]. The
  // unsigned map has no negative entries: every negative n counts no
  // threshold (index 0). tests/cpu: QuantiserAtEveryBoundary.
  Value a = builder.create<math::AbsFOp>(loc, n);
  Value inverse, offset;
  if (lookups.decade) {
    std::tie(inverse, offset) = lookups.decade(builder, loc, a);
  } else {
    std::vector<Q8Decade> table = q8Decades(map);
    inverse = f(table[0].inverseSpacing);
    offset = f(table[0].offset);
    for (int i = 1; i < 7; ++i) {
      Value in = builder.create<arith::CmpFOp>(loc, arith::CmpFPredicate::OGE, a, f(kQ8DecadeBounds[i - 1]));
      inverse = select(in, f(table[i].inverseSpacing), inverse);
      offset = select(in, f(table[i].offset), offset);
    }
  }
  Value index = builder.create<math::FloorOp>(
      loc, builder.create<arith::AddFOp>(loc, builder.create<arith::MulFOp>(loc, a, inverse), offset));
  Value negative = lt(n, f(0.0f));
  Value mirrored =
      isSigned ? builder.create<arith::SubFOp>(loc, f(2.0f * map.zeroCode() - 1.0f), index).getResult() : f(0.0f);
  index = select(negative, mirrored, index);
  // Into [0, 254] with ordered compares: NaN goes to 0 (and stores the 0
  // entry below), +Inf to 254 (then counts every threshold).
  index = select(lt(f(0.0f), index), index, f(0.0f));
  index = select(lt(f(254.0f), index), f(254.0f), index);
  Value probe = builder.create<arith::FPToSIOp>(loc, lanesOf(i32s, width), index);
  Value t = lookups.threshold(builder, loc, probe);
  Value le = builder.create<arith::CmpFOp>(loc, arith::CmpFPredicate::OLE, t, n);
  Value code = builder.create<arith::AddIOp>(loc, probe, builder.create<arith::ExtUIOp>(loc, lanesOf(i32s, width), le));
  Value isNan = builder.create<arith::CmpFOp>(loc, arith::CmpFPredicate::UNO, n, n);
  return select(isNan, splatInt(builder, loc, i32s, map.zeroCode(), width), code);
}

Value finiteMagnitude(OpBuilder &builder, Location loc, Value x) {
  int64_t width = widthOf(x);
  Value magnitude = builder.create<math::AbsFOp>(loc, x);
  // Ordered less-than Inf: false for Inf and NaN.
  Value finite = builder.create<arith::CmpFOp>(loc, arith::CmpFPredicate::OLT, magnitude,
                                               splatF32(builder, loc, INFINITY, width));
  return builder.create<arith::SelectOp>(loc, finite, magnitude, splatF32(builder, loc, 0.0f, width));
}

} // namespace optdsl::codegen
