#include "Q8BytePlanes.h"

#include "optdsl/Codegen/StorageArith.h"
#include "optrt/Storage.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/BuiltinTypes.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace optdsl::cpu {

using namespace mlir;

namespace {

/// _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC.
constexpr int32_t kRoundDown = 9;

VectorType bytes64(OpBuilder &builder) { return VectorType::get({64}, builder.getIntegerType(8)); }

Value byteConstant(OpBuilder &builder, Location loc, llvm::ArrayRef<int8_t> values) {
  return builder.create<arith::ConstantOp>(loc, DenseElementsAttr::get(bytes64(builder), values));
}
Value i32Splat(OpBuilder &builder, Location loc, int32_t value) {
  auto type = VectorType::get({16}, builder.getI32Type());
  return builder.create<arith::ConstantOp>(loc, DenseElementsAttr::get(type, builder.getI32IntegerAttr(value)));
}
Value f32Splat(OpBuilder &builder, Location loc, float value) {
  auto type = VectorType::get({16}, builder.getF32Type());
  return builder.create<arith::ConstantOp>(loc, DenseElementsAttr::get(type, builder.getF32FloatAttr(value)));
}
Value broadcast16(OpBuilder &builder, Location loc, Value scalar) {
  return builder.create<vector::BroadcastOp>(loc, VectorType::get({16}, scalar.getType()), scalar);
}
Value pointer(OpBuilder &builder, Location loc, Value base, Value index, Type element) {
  return builder.create<LLVM::GEPOp>(loc, LLVM::LLVMPointerType::get(builder.getContext()), element, base,
                                     ValueRange{index});
}
Value offsetIndex(OpBuilder &builder, Location loc, Value index, int64_t offset) {
  return builder.create<arith::AddIOp>(loc, index, builder.create<arith::ConstantOp>(loc, builder.getI64IntegerAttr(offset)));
}

/// vpermi2b: 64 bytes picked from the 128 of (low, high) by the index's low 7 bits.
Value permute128(OpBuilder &builder, Location loc, Value low, Value index, Value high) {
  return builder.create<LLVM::CallIntrinsicOp>(loc, bytes64(builder), "llvm.x86.avx512.vpermi2var.qi.512",
                                               ValueRange{low, index, high})
      .getResult(0);
}
/// vpermps: table[index & 15] for 16 i32 lanes, the table a constant.
Value permute16(OpBuilder &builder, Location loc, llvm::ArrayRef<float> table, Value index) {
  auto type = VectorType::get({16}, builder.getF32Type());
  Value constant = builder.create<arith::ConstantOp>(loc, DenseElementsAttr::get(type, table));
  return builder.create<LLVM::CallIntrinsicOp>(loc, type, "llvm.x86.avx512.permvar.sf.512", ValueRange{constant, index})
      .getResult(0);
}

// The byte order the lookups work in ("packed"): the interleave below
// (vpunpck{l,h}bw, then vpunpck{l,h}wd, all within 128-bit lanes) turns
// byte q = 16 L + 4 k + i of the four planes into element 4 L + i of result
// k, so packed byte q holds element 16 k + 4 L + i of the 64. The map is its
// own inverse (L and k swap).
int packedElement(int q) { return 16 * ((q >> 2) & 3) + 4 * (q >> 4) + (q & 3); }

/// table[packed] for 64 codes in packed order (bytes as u8), as four f32
/// vectors in element order: per byte plane of the 256 f32 entries, two
/// vpermi2b over its halves and a blend on the code's bit 7; then the
/// planes are interleaved into f32 lanes.
Lanes64 lookupPacked(OpBuilder &builder, Location loc, const std::array<float, 256> &table, Value packed) {
  Value high = builder.create<arith::CmpIOp>(loc, arith::CmpIPredicate::slt, packed,
                                             byteConstant(builder, loc, std::vector<int8_t>(64, 0)));
  std::array<Value, 4> planes;
  for (int p = 0; p < 4; ++p) {
    std::array<Value, 4> quarters;
    for (int k = 0; k < 4; ++k) {
      std::vector<int8_t> bytes(64);
      for (int c = 0; c < 64; ++c) {
        uint32_t bits;
        std::memcpy(&bits, &table[64 * k + c], sizeof bits);
        bytes[c] = static_cast<int8_t>(bits >> (8 * p));
      }
      quarters[k] = byteConstant(builder, loc, bytes);
    }
    Value low = permute128(builder, loc, quarters[0], packed, quarters[1]);
    Value upper = permute128(builder, loc, quarters[2], packed, quarters[3]);
    planes[p] = builder.create<arith::SelectOp>(loc, high, upper, low);
  }
  // Within each 128-bit lane: (a, b) -> a0 b0 a1 b1 ... of its low or high half.
  auto unpack = [&](Value a, Value b, bool upperHalf) {
    int64_t count = cast<VectorType>(a.getType()).getNumElements(), perLane = count / 4;
    std::vector<int64_t> mask;
    for (int lane = 0; lane < 4; ++lane)
      for (int i = 0; i < perLane / 2; ++i) {
        int64_t source = lane * perLane + (upperHalf ? perLane / 2 : 0) + i;
        mask.push_back(source);
        mask.push_back(count + source);
      }
    return builder.create<vector::ShuffleOp>(loc, a, b, mask).getResult();
  };
  auto words = [&](Value v) {
    return builder.create<vector::BitCastOp>(loc, VectorType::get({32}, builder.getIntegerType(16)), v).getResult();
  };
  Value low01 = words(unpack(planes[0], planes[1], false)), high01 = words(unpack(planes[0], planes[1], true));
  Value low23 = words(unpack(planes[2], planes[3], false)), high23 = words(unpack(planes[2], planes[3], true));
  auto f32s = [&](Value v) {
    return builder.create<vector::BitCastOp>(loc, VectorType::get({16}, builder.getF32Type()), v).getResult();
  };
  return {f32s(unpack(low01, low23, false)), f32s(unpack(low01, low23, true)),
          f32s(unpack(high01, high23, false)), f32s(unpack(high01, high23, true))};
}

/// The low bytes of four i32 vectors (elements 0-63) in packed order: two
/// vpermi2b (elements 0-31 from the first pair, 32-63 from the second) and
/// a blend.
Value packLowBytes(OpBuilder &builder, Location loc, const std::array<Value, 4> &ints) {
  std::array<Value, 4> bytes;
  for (int k = 0; k < 4; ++k)
    bytes[k] = builder.create<vector::BitCastOp>(loc, bytes64(builder), ints[k]);
  std::vector<int8_t> first(64, 0), second(64, 0);
  std::array<bool, 64> fromSecond{};
  for (int q = 0; q < 64; ++q) {
    int element = packedElement(q), vector = element / 16, lane = element % 16;
    int8_t source = static_cast<int8_t>(64 * (vector % 2) + 4 * lane);
    (vector < 2 ? first : second)[q] = source;
    fromSecond[q] = vector >= 2;
  }
  Value low = permute128(builder, loc, bytes[0], byteConstant(builder, loc, first), bytes[1]);
  Value high = permute128(builder, loc, bytes[2], byteConstant(builder, loc, second), bytes[3]);
  auto maskType = VectorType::get({64}, builder.getI1Type());
  Value mask = builder.create<arith::ConstantOp>(loc, DenseElementsAttr::get(maskType, llvm::ArrayRef<bool>(fromSecond)));
  return builder.create<arith::SelectOp>(loc, mask, high, low);
}

/// quantizeQ8's probe and threshold compare for 64 values n (any f32):
/// the codes (i32 lanes) and whether some n lies within 8 ulps of the
/// threshold it was compared with (i1).
///
/// The probe P, the code of the entry at or below |n| up to a rounding that
/// only matters next to an entry, comes from the decades' linear models
/// (codegen::q8Decades) without finding the decade: within one binade of |n| (at most
/// one decade bound b in it) it is the smaller of the models of the decades
/// below and above b. The model of the finer decade below b rises ten times
/// as fast, and the two cross next to b, so the smaller is the right one on
/// either side (and between b and the first entry above it both give the
/// last code below). The binades are those of 2^-20 .. 2^-4 clamped into 16
/// (2^-19 takes all below it, its pair (1e-7 decade, 1e-6 decade) being
/// right there too; 2^-4 all above), so four vpermps give the two models.
/// |n| is capped at 1 (NaN too: its code is the 0 entry anyway), which
/// keeps P in [0, 254] and its mirror in [-1, 253]; -1 probes the byte 255,
/// whose threshold is -Inf (every n counts it: code 0), so no clamping.
/// Checked exhaustively for every f32 in [-2, 2] and for both maps against
/// the thresholds (code = P + [t[P] <= n]), and that every n within 8 ulps
/// of a threshold probes that threshold, which the reciprocal's fix-up
/// relies on.
std::pair<std::array<Value, 4>, Value> codesOf(OpBuilder &builder, Location loc, bool isSigned, const Lanes64 &n) {
  const optrt::Q8Map &map = optrt::q8Map(isSigned);
  std::vector<codegen::Q8Decade> models = codegen::q8Decades(map);
  std::array<float, 16> inverseLow, offsetLow, inverseHigh, offsetHigh;
  for (int e = 108; e <= 123; ++e) {
    int low = e == 108 ? 0 : codegen::q8DecadeOf(std::ldexp(1.0f, e - 127));
    int high = e == 123 ? 6 : codegen::q8DecadeOf(std::nextafter(std::ldexp(1.0f, e - 126), 0.0f));
    inverseLow[e % 16] = models[low].inverseSpacing;
    offsetLow[e % 16] = models[low].offset;
    inverseHigh[e % 16] = models[high].inverseSpacing;
    offsetHigh[e % 16] = models[high].offset;
  }
  auto i32Type = VectorType::get({16}, builder.getI32Type());
  auto cmpf = [&](arith::CmpFPredicate p, Value l, Value r) { return builder.create<arith::CmpFOp>(loc, p, l, r); };
  auto select = [&](Value c, Value t, Value e) { return builder.create<arith::SelectOp>(loc, c, t, e).getResult(); };
  auto bitsOf = [&](Value v) { return builder.create<arith::BitcastOp>(loc, i32Type, v).getResult(); };
  std::array<Value, 4> probes;
  for (int k = 0; k < 4; ++k) {
    Value a = builder.create<math::AbsFOp>(loc, n[k]);
    Value one = f32Splat(builder, loc, 1.0f);
    a = select(cmpf(arith::CmpFPredicate::OLT, a, one), a, one);
    Value exponent = builder.create<arith::ShRUIOp>(loc, bitsOf(a), i32Splat(builder, loc, 23));
    exponent = builder.create<arith::MinSIOp>(
        loc, builder.create<arith::MaxSIOp>(loc, exponent, i32Splat(builder, loc, 108)), i32Splat(builder, loc, 123));
    auto model = [&](llvm::ArrayRef<float> inverse, llvm::ArrayRef<float> offset) {
      return builder.create<math::FmaOp>(loc, a, permute16(builder, loc, inverse, exponent),
                                         permute16(builder, loc, offset, exponent));
    };
    Value below = model(inverseLow, offsetLow), above = model(inverseHigh, offsetHigh);
    Value smaller = select(cmpf(arith::CmpFPredicate::OLT, below, above), below, above);
    // floor and conversion in one vcvtps2dq, rounding toward -Inf.
    Value probe = builder.create<LLVM::CallIntrinsicOp>(
                             loc, i32Type, "llvm.x86.avx512.mask.cvtps2dq.512",
                             ValueRange{smaller, i32Splat(builder, loc, 0),
                                        builder.create<arith::ConstantOp>(loc, builder.getI16IntegerAttr(-1)),
                                        builder.create<arith::ConstantOp>(loc, builder.getI32IntegerAttr(kRoundDown))})
                      .getResult(0);
    // Negative n: the mirrored threshold (quantizeQ8), none for the unsigned map.
    Value mirrored = isSigned ? builder.create<arith::SubIOp>(loc, i32Splat(builder, loc, 2 * map.zeroCode() - 1), probe)
                                    .getResult()
                              : i32Splat(builder, loc, 0);
    probes[k] = select(cmpf(arith::CmpFPredicate::OLT, n[k], f32Splat(builder, loc, 0.0f)), mirrored, probe);
  }
  std::array<float, 256> thresholds;
  std::copy(map.thresholds().begin(), map.thresholds().end(), thresholds.begin());
  thresholds[255] = -INFINITY;
  Lanes64 t = lookupPacked(builder, loc, thresholds, packLowBytes(builder, loc, probes));
  std::array<Value, 4> codes;
  Value near;
  for (int k = 0; k < 4; ++k) {
    Value counts = builder.create<arith::ExtUIOp>(loc, i32Type, cmpf(arith::CmpFPredicate::OLE, t[k], n[k]));
    Value code = builder.create<arith::AddIOp>(loc, probes[k], counts);
    codes[k] = select(cmpf(arith::CmpFPredicate::UNO, n[k], n[k]), i32Splat(builder, loc, map.zeroCode()), code);
    // |bits(n) - bits(t)| <= 8: within 8 ulps (a threshold is never near 0,
    // so n and t of opposite signs are never near).
    Value distance = builder.create<arith::SubIOp>(loc, bitsOf(n[k]), bitsOf(t[k]));
    Value close = builder.create<arith::CmpIOp>(
        loc, arith::CmpIPredicate::ule, builder.create<arith::AddIOp>(loc, distance, i32Splat(builder, loc, 8)),
        i32Splat(builder, loc, 16));
    near = near ? builder.create<arith::OrIOp>(loc, near, close).getResult() : close;
  }
  Value anyNear = builder.create<vector::ReductionOp>(loc, vector::CombiningKind::OR, near);
  return {codes, anyNear};
}

} // namespace

Lanes64 dequantizeQ8x64(OpBuilder &builder, Location loc, bool isSigned, Value codes, Value index, Value absmax) {
  Value raw = builder.create<LLVM::LoadOp>(loc, bytes64(builder), pointer(builder, loc, codes, index, builder.getIntegerType(8)), 1);
  std::vector<int8_t> order(64);
  for (int q = 0; q < 64; ++q)
    order[q] = static_cast<int8_t>(packedElement(q));
  Value packed = builder.create<LLVM::CallIntrinsicOp>(loc, bytes64(builder), "llvm.x86.avx512.permvar.qi.512",
                                                       ValueRange{raw, byteConstant(builder, loc, order)})
                     .getResult(0);
  const optrt::Q8Map &map = optrt::q8Map(isSigned);
  Lanes64 values = lookupPacked(builder, loc, map.values(), packed);
  Value scale = broadcast16(builder, loc, absmax);
  for (Value &v : values)
    v = builder.create<arith::MulFOp>(loc, v, scale);
  return values;
}

void quantizeQ8x64(OpBuilder &builder, Location loc, bool isSigned, const Lanes64 &x, Value absmax, Value reciprocal,
                   Value divide, Value codes, Value index) {
  // n' = fl(x * fl(1 / absmax)) is within 3 ulps of n = fl(x / absmax) for
  // absmax in [2^-126, 2^126] (two roundings of relative size 2^-24 each,
  // plus n's own; n' and n both subnormal: within 2 units of 2^-149). The
  // code of n' is then the code of n unless a threshold lies between the
  // two, which needs n' within 3 ulps of that threshold, and every n' within
  // 8 ulps of a threshold probes it (codesOf): the rare group that has such
  // an element is quantised again from the division.
  Lanes64 fast;
  Value scale = broadcast16(builder, loc, reciprocal);
  for (int k = 0; k < 4; ++k)
    fast[k] = builder.create<arith::MulFOp>(loc, x[k], scale);
  auto [fastCodes, near] = codesOf(builder, loc, isSigned, fast);
  Value redo = builder.create<arith::OrIOp>(loc, near, divide);
  auto exact = builder.create<scf::IfOp>(
      loc, redo,
      [&](OpBuilder &b, Location l) {
        Lanes64 n;
        Value denominator = broadcast16(b, l, absmax);
        for (int k = 0; k < 4; ++k)
          n[k] = b.create<arith::DivFOp>(l, x[k], denominator);
        b.create<scf::YieldOp>(l, ValueRange(llvm::ArrayRef<Value>(codesOf(b, l, isSigned, n).first)));
      },
      [&](OpBuilder &b, Location l) { b.create<scf::YieldOp>(l, ValueRange(llvm::ArrayRef<Value>(fastCodes))); });
  auto i8s = VectorType::get({16}, builder.getIntegerType(8));
  for (int k = 0; k < 4; ++k) {
    Value bytes = builder.create<arith::TruncIOp>(loc, i8s, exact.getResult(k));
    builder.create<LLVM::StoreOp>(loc, bytes, pointer(builder, loc, codes, offsetIndex(builder, loc, index, 16 * k),
                                                      builder.getIntegerType(8)),
                                  1);
  }
}

} // namespace optdsl::cpu
