#include "StorageCodegen.h"

#include "optrt/Storage.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/BuiltinTypes.h"

#include <array>
#include <cmath>
#include <cstring>

namespace optdsl::cpu {

using namespace mlir;
using optrt::Dtype;

namespace {

Type lanes(Type scalar, int64_t width) { return width == 1 ? scalar : VectorType::get({width}, scalar); }
int64_t widthOf(Value value) {
  auto vector = dyn_cast<VectorType>(value.getType());
  return vector ? vector.getNumElements() : 1;
}

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
  if (width == 1)
    return scalar;
  return builder.create<vector::BroadcastOp>(loc, VectorType::get({width}, scalar.getType()), scalar);
}

Value pointer(OpBuilder &builder, Location loc, Value base, Value index, Type element) {
  auto ptr = LLVM::LLVMPointerType::get(builder.getContext());
  return builder.create<LLVM::GEPOp>(loc, ptr, element, base, ValueRange{index});
}

/// table[index & 15] (vpermps) and table[index & 31] (vpermi2ps) for 16 i32
/// lanes `index`, the table a constant: AVX-512F only (Q8Tables::permutes).
Value permute16(OpBuilder &builder, Location loc, llvm::ArrayRef<float> table, Value index) {
  auto type = VectorType::get({16}, builder.getF32Type());
  Value constant = builder.create<arith::ConstantOp>(loc, DenseElementsAttr::get(type, table.take_front(16)));
  return builder.create<LLVM::CallIntrinsicOp>(loc, type, "llvm.x86.avx512.permvar.sf.512", ValueRange{constant, index})
      .getResult(0);
}
Value permute32(OpBuilder &builder, Location loc, llvm::ArrayRef<float> table, Value index) {
  auto type = VectorType::get({16}, builder.getF32Type());
  Value low = builder.create<arith::ConstantOp>(loc, DenseElementsAttr::get(type, table.slice(0, 16)));
  Value high = builder.create<arith::ConstantOp>(loc, DenseElementsAttr::get(type, table.slice(16, 16)));
  return builder.create<LLVM::CallIntrinsicOp>(loc, type, "llvm.x86.avx512.vpermi2var.ps.512", ValueRange{low, index, high})
      .getResult(0);
}

/// table[index] for i32 lanes `index`: a load, or a gather of `width` lanes.
Value gather(OpBuilder &builder, Location loc, Value table, Value index) {
  Type f32 = builder.getF32Type();
  int64_t width = widthOf(index);
  if (width == 1)
    return builder.create<LLVM::LoadOp>(loc, f32, pointer(builder, loc, table, index, f32), 4);
  auto ptr = LLVM::LLVMPointerType::get(builder.getContext());
  Type pointers = LLVM::getVectorType(ptr, width);
  Value addresses = builder.create<LLVM::GEPOp>(loc, pointers, f32, table, ValueRange{index});
  auto maskType = VectorType::get({width}, builder.getI1Type());
  Value all = builder.create<arith::ConstantOp>(loc, DenseElementsAttr::get(maskType, true));
  return builder.create<LLVM::masked_gather>(loc, lanes(f32, width), addresses, all, ValueRange{},
                                             static_cast<uint32_t>(4));
}

} // namespace

bool isQ8(Dtype dtype) { return dtype == Dtype::Q8Signed || dtype == Dtype::Q8Unsigned; }

Type storageType(MLIRContext *context, Dtype dtype) {
  switch (dtype) {
  case Dtype::F32:
    return Float32Type::get(context);
  case Dtype::BF16:
  case Dtype::F16:
    return IntegerType::get(context, 16);
  case Dtype::Q8Signed:
  case Dtype::Q8Unsigned:
    return IntegerType::get(context, 8);
  }
  return {};
}

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
  int64_t width = widthOf(value);
  Type i32s = builder.getI32Type();
  Type i32 = lanes(i32s, width);
  auto c = [&](int64_t v) { return splatInt(builder, loc, i32s, v, width); };
  auto cmp = [&](arith::CmpIPredicate p, Value l, Value r) { return builder.create<arith::CmpIOp>(loc, p, l, r); };
  auto sel = [&](Value cond, Value t, Value e) { return builder.create<arith::SelectOp>(loc, cond, t, e).getResult(); };
  auto band = [&](Value l, Value r) { return builder.create<arith::AndIOp>(loc, l, r).getResult(); };
  auto shl = [&](Value l, Value r) { return builder.create<arith::ShLIOp>(loc, l, r).getResult(); };
  auto shr = [&](Value l, Value r) { return builder.create<arith::ShRUIOp>(loc, l, r).getResult(); };
  auto add = [&](Value l, Value r) { return builder.create<arith::AddIOp>(loc, l, r).getResult(); };
  auto sub = [&](Value l, Value r) { return builder.create<arith::SubIOp>(loc, l, r).getResult(); };
  auto umin = [&](Value l, Value r) { return builder.create<arith::MinUIOp>(loc, l, r).getResult(); };
  using P = arith::CmpIPredicate;

  Value bits = builder.create<arith::BitcastOp>(loc, i32, value);
  Value mag = band(bits, c(0x7FFFFFFF));
  Value sign = band(shr(bits, c(16)), c(0x8000));
  // Normal f16 range.
  Value m = sub(mag, c(0x38000000));
  Value normalLo = shr(m, c(13));
  Value normalT = shl(band(m, c(0x1FFF)), c(19));
  // Subnormal f16 range.
  Value e = shr(mag, c(23));
  Value isZeroExponent = cmp(P::eq, e, c(0));
  Value mant = sel(isZeroExponent, mag, builder.create<arith::OrIOp>(loc, band(mag, c(0x007FFFFF)), c(0x00800000)));
  Value shift = sel(isZeroExponent, c(125), sub(c(126), umin(e, c(126))));
  Value wide = cmp(P::uge, shift, c(24)); // mant < 2^24: nothing survives the shift
  Value shift31 = umin(shift, c(31));
  Value subLo = sel(wide, c(0), shr(mant, shift31));
  Value mask = sel(wide, c(-1), sub(shl(c(1), shift31), c(1)));
  Value rest = band(mant, mask);
  Value upTo32 = cmp(P::ule, shift, c(32));
  Value tA = shl(rest, umin(sub(c(32), umin(shift, c(32))), c(31)));
  Value s = umin(sub(shift, umin(shift, c(32))), c(31));
  Value ceilShift = shr(add(rest, sub(shl(c(1), s), c(1))), s);
  Value tB = sel(cmp(P::uge, s, c(24)), builder.create<arith::ExtUIOp>(loc, i32, cmp(P::ne, rest, c(0))), ceilShift);
  Value subT = sel(upTo32, tA, tB);
  Value isNormal = cmp(P::uge, mag, c(0x38800000));
  Value lo = sel(isNormal, normalLo, subLo);
  Value threshold = sel(isNormal, normalT, subT);
  Value away = builder.create<arith::ExtUIOp>(loc, i32, cmp(P::ult, random, threshold));
  Value result = builder.create<arith::OrIOp>(loc, sign, add(lo, away));
  Value isNan = builder.create<arith::CmpFOp>(loc, arith::CmpFPredicate::UNO, value, value);
  Value huge = cmp(P::uge, mag, c(0x47800000));
  Value inf = builder.create<arith::OrIOp>(loc, sign, c(0x7C00));
  result = sel(huge, inf, result);
  Type i16 = lanes(builder.getIntegerType(16), width);
  Value stochastic = builder.create<arith::TruncIOp>(loc, i16, result);
  return sel(isNan, nearest, stochastic);
}

Value loadAsF32(OpBuilder &builder, Location loc, Value base, Value index, int64_t width, Dtype dtype) {
  Type element = storageType(builder.getContext(), dtype);
  Value address = pointer(builder, loc, base, index, element);
  unsigned alignment = dtype == Dtype::F32 ? 4 : 2;
  Value raw = builder.create<LLVM::LoadOp>(loc, lanes(element, width), address, alignment);
  Type f32 = lanes(builder.getF32Type(), width);
  if (dtype == Dtype::F32)
    return raw;
  if (dtype == Dtype::BF16) {
    // A bf16 is the high half of the f32 with the same value.
    Type i32 = lanes(builder.getI32Type(), width);
    Value wide = builder.create<arith::ExtUIOp>(loc, i32, raw);
    Value high = builder.create<arith::ShLIOp>(loc, wide, splatInt(builder, loc, builder.getI32Type(), 16, width));
    return builder.create<arith::BitcastOp>(loc, f32, high);
  }
  // f16 -> f32 is exact; LLVM's fpext (vcvtph2ps with F16C) gives the bits of
  // optrt::f16ToF32 for every pattern (tested on all 65536).
  Value half = builder.create<arith::BitcastOp>(loc, lanes(builder.getF16Type(), width), raw);
  return builder.create<arith::ExtFOp>(loc, f32, half);
}

void storeFromF32(OpBuilder &builder, Location loc, Value base, Value index, Value value, Dtype dtype,
                  Value random) {
  int64_t width = widthOf(value);
  Type element = storageType(builder.getContext(), dtype);
  Value address = pointer(builder, loc, base, index, element);
  if (dtype == Dtype::F32) {
    builder.create<LLVM::StoreOp>(loc, value, address, 4);
    return;
  }
  Type i16 = lanes(builder.getIntegerType(16), width);
  Value stored;
  if (dtype == Dtype::BF16) {
    // optrt::f32ToBf16 on the bit pattern: adding 0x7FFF plus the bit that
    // becomes the lsb rounds to nearest even, the carry running into the
    // exponent (and to Inf) as it must; a NaN instead keeps its top payload
    // and gets the quiet bit, since the bias could carry it into Inf.
    Type i32s = builder.getI32Type();
    Type i32 = lanes(i32s, width);
    Value bits = builder.create<arith::BitcastOp>(loc, i32, value);
    Value sixteen = splatInt(builder, loc, i32s, 16, width);
    Value high = builder.create<arith::ShRUIOp>(loc, bits, sixteen);
    Value lsb = builder.create<arith::AndIOp>(loc, high, splatInt(builder, loc, i32s, 1, width));
    Value bias = builder.create<arith::AddIOp>(loc, lsb, splatInt(builder, loc, i32s, 0x7FFF, width));
    Value rounded = builder.create<arith::ShRUIOp>(loc, builder.create<arith::AddIOp>(loc, bits, bias), sixteen);
    if (random) {
      // optrt::f32ToBf16Stochastic: the truncated pattern is |x| rounded
      // toward zero, the low 16 bits are frac * 2^16, and the neighbour away
      // from zero (pattern + 1) is taken iff random < frac * 2^32, i.e.
      // (random >> 16) < low. Inf has no low bits and stays Inf.
      Value low = builder.create<arith::AndIOp>(loc, bits, splatInt(builder, loc, i32s, 0xFFFF, width));
      Value draw = builder.create<arith::ShRUIOp>(loc, random, sixteen);
      Value away = builder.create<arith::CmpIOp>(loc, arith::CmpIPredicate::ult, draw, low);
      Value up = builder.create<arith::AddIOp>(loc, high, splatInt(builder, loc, i32s, 1, width));
      rounded = builder.create<arith::SelectOp>(loc, away, up, high);
    }
    Value quiet = builder.create<arith::OrIOp>(loc, high, splatInt(builder, loc, i32s, 0x40, width));
    Value isNan = builder.create<arith::CmpFOp>(loc, arith::CmpFPredicate::UNO, value, value);
    Value chosen = builder.create<arith::SelectOp>(loc, isNan, quiet, rounded);
    stored = builder.create<arith::TruncIOp>(loc, i16, chosen);
  } else {
    // LLVM's fptrunc rounds to nearest even with correct subnormals and
    // overflow, and keeps a NaN's top payload with the quiet bit: the bits
    // of optrt::f32ToF16 (tests/layouts checks the kernels against it).
    Value half = builder.create<arith::TruncFOp>(loc, lanes(builder.getF16Type(), width), value);
    stored = builder.create<arith::BitcastOp>(loc, i16, half);
    if (random)
      stored = f16Stochastic(builder, loc, value, random, stored);
  }
  builder.create<LLVM::StoreOp>(loc, stored, address, 2);
}

namespace {
/// lowbias32, as optrt's StorageStochastic.cpp.
Value mix(OpBuilder &builder, Location loc, Value x, int64_t width) {
  Type i32 = builder.getI32Type();
  auto xorShift = [&](Value v, int64_t shift) {
    return builder.create<arith::XOrIOp>(loc, v, builder.create<arith::ShRUIOp>(loc, v, splatInt(builder, loc, i32, shift, width)));
  };
  x = xorShift(x, 16);
  x = builder.create<arith::MulIOp>(loc, x, splatInt(builder, loc, i32, 0x7feb352d, width));
  x = xorShift(x, 15);
  x = builder.create<arith::MulIOp>(loc, x, splatInt(builder, loc, i32, static_cast<int32_t>(0x846ca68bu), width));
  return xorShift(x, 16);
}
} // namespace

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
  Type i32 = lanes(builder.getI32Type(), width);
  Value lo = builder.create<arith::TruncIOp>(loc, i32, lanesIndex);
  Value hi = builder.create<arith::TruncIOp>(
      loc, i32, builder.create<arith::ShRUIOp>(loc, lanesIndex, splatInt(builder, loc, i64, 32, width)));
  Value keyLanes = broadcast(builder, loc, key, width);
  Value first = mix(builder, loc, builder.create<arith::XOrIOp>(loc, keyLanes, lo), width);
  return mix(builder, loc, builder.create<arith::XOrIOp>(loc, first, hi), width);
}

Value loadJoinedMaster(OpBuilder &builder, Location loc, Value param, Value remainder, Value index,
                       int64_t width) {
  Type i16s = builder.getIntegerType(16), i32s = builder.getI32Type();
  Type i16 = lanes(i16s, width), i32 = lanes(i32s, width);
  auto c = [&](int64_t v) { return splatInt(builder, loc, i32s, v, width); };
  Value p = builder.create<LLVM::LoadOp>(loc, i16, pointer(builder, loc, param, index, i16s), 2);
  Value r = builder.create<LLVM::LoadOp>(loc, i16, pointer(builder, loc, remainder, index, i16s), 2);
  Value high = builder.create<arith::ExtUIOp>(loc, i32, p);
  Value low = builder.create<arith::ExtUIOp>(loc, i32, r);
  // A negative remainder (bit 15 set) means splitMaster rounded the param
  // up: the master's high half is one less.
  Value negative = builder.create<arith::CmpIOp>(loc, arith::CmpIPredicate::uge, low, c(0x8000));
  Value adjusted = builder.create<arith::SubIOp>(loc, high, builder.create<arith::ExtUIOp>(loc, i32, negative));
  Value joined = builder.create<arith::OrIOp>(loc, builder.create<arith::ShLIOp>(loc, adjusted, c(16)), low);
  // A NaN param stands for a NaN master.
  Value isNan = builder.create<arith::CmpIOp>(loc, arith::CmpIPredicate::ugt,
                                              builder.create<arith::AndIOp>(loc, high, c(0x7FFF)), c(0x7F80));
  Value nan = builder.create<arith::OrIOp>(loc, builder.create<arith::ShLIOp>(loc, high, c(16)), c(0x00400000));
  Value bits = builder.create<arith::SelectOp>(loc, isNan, nan, joined);
  return builder.create<arith::BitcastOp>(loc, lanes(builder.getF32Type(), width), bits);
}

void storeSplitMaster(OpBuilder &builder, Location loc, Value param, Value remainder, Value index, Value value) {
  int64_t width = widthOf(value);
  Type i16s = builder.getIntegerType(16), i32s = builder.getI32Type();
  Type i16 = lanes(i16s, width), i32 = lanes(i32s, width);
  auto c = [&](int64_t v) { return splatInt(builder, loc, i32s, v, width); };
  Value bits = builder.create<arith::BitcastOp>(loc, i32, value);
  Value high = builder.create<arith::ShRUIOp>(loc, bits, c(16));
  Value negative = builder.create<arith::CmpIOp>(loc, arith::CmpIPredicate::uge,
                                                 builder.create<arith::AndIOp>(loc, bits, c(0xFFFF)), c(0x8000));
  Value rounded = builder.create<arith::AddIOp>(loc, high, builder.create<arith::ExtUIOp>(loc, i32, negative));
  // A NaN's high half + 1 could wrap into -0 or 0: keep it a quiet NaN.
  Value isNan = builder.create<arith::CmpFOp>(loc, arith::CmpFPredicate::UNO, value, value);
  Value quiet = builder.create<arith::OrIOp>(loc, high, c(0x40));
  Value p = builder.create<arith::SelectOp>(loc, isNan, quiet, rounded);
  builder.create<LLVM::StoreOp>(loc, builder.create<arith::TruncIOp>(loc, i16, p),
                                pointer(builder, loc, param, index, i16s), 2);
  builder.create<LLVM::StoreOp>(loc, builder.create<arith::TruncIOp>(loc, i16, bits),
                                pointer(builder, loc, remainder, index, i16s), 2);
}

Value Q8Tables::address(OpBuilder &builder, Location loc, bool isSigned, bool thresholds) {
  std::string name = std::string("optdsl_q8_") + (isSigned ? "signed" : "unsigned") +
                     (thresholds ? "_thresholds" : "_map");
  if (!module_.lookupSymbol(name)) {
    const optrt::Q8Map &map = optrt::q8Map(isSigned);
    std::vector<float> data = thresholds
                                  ? std::vector<float>(map.thresholds().begin(), map.thresholds().end())
                                  : std::vector<float>(map.values().begin(), map.values().end());
    OpBuilder::InsertionGuard guard(builder);
    builder.setInsertionPointToStart(module_.getBody());
    Type f32 = builder.getF32Type();
    auto tensor = RankedTensorType::get({static_cast<int64_t>(data.size())}, f32);
    builder.create<LLVM::GlobalOp>(loc, LLVM::LLVMArrayType::get(f32, data.size()), /*isConstant=*/true,
                                   LLVM::Linkage::Internal, name,
                                   DenseElementsAttr::get(tensor, llvm::ArrayRef<float>(data)), 64);
  }
  return builder.create<LLVM::AddressOfOp>(loc, LLVM::LLVMPointerType::get(builder.getContext()), name);
}

Value Q8Tables::lookup(OpBuilder &builder, Location loc, bool isSigned, bool thresholds, Value index) {
  if (permute_ && widthOf(index) == 16)
    return permuteLookup(builder, loc, isSigned, thresholds, index);
  return gather(builder, loc, address(builder, loc, isSigned, thresholds), index);
}

/// The table as 16 constant vectors of 16 (thresholds padded with +Inf, an
/// index never used): vpermi2ps picks from a pair by the index's low 5 bits,
/// and bits 5, 6, 7 select among the eight results. The constants end up in
/// registers or as memory operands of the permutes; either way no gather.
Value Q8Tables::permuteLookup(OpBuilder &builder, Location loc, bool isSigned, bool thresholds, Value index) {
  const optrt::Q8Map &map = optrt::q8Map(isSigned);
  std::vector<float> data = thresholds ? std::vector<float>(map.thresholds().begin(), map.thresholds().end())
                                       : std::vector<float>(map.values().begin(), map.values().end());
  data.resize(256, INFINITY);
  std::vector<Value> level;
  for (int pair = 0; pair < 8; ++pair)
    level.push_back(permute32(builder, loc, llvm::ArrayRef<float>(data).slice(32 * pair, 32), index));
  Type i32 = builder.getI32Type();
  for (int bit = 5; bit < 8; ++bit) {
    Value set = builder.create<arith::CmpIOp>(
        loc, arith::CmpIPredicate::ne, builder.create<arith::AndIOp>(loc, index, splatInt(builder, loc, i32, 1 << bit, 16)),
        splatInt(builder, loc, i32, 0, 16));
    std::vector<Value> next;
    for (size_t i = 0; i < level.size(); i += 2)
      next.push_back(builder.create<arith::SelectOp>(loc, set, level[i + 1], level[i]));
    level = next;
  }
  return level[0];
}

Value dequantizeQ8(OpBuilder &builder, Location loc, Q8Tables &tables, bool isSigned, Value codes, Value index,
                   int64_t width, Value absmax) {
  Type i8 = builder.getIntegerType(8);
  Value raw = builder.create<LLVM::LoadOp>(loc, lanes(i8, width), pointer(builder, loc, codes, index, i8), 1);
  Value code = builder.create<arith::ExtUIOp>(loc, lanes(builder.getI32Type(), width), raw);
  return builder.create<arith::MulFOp>(loc, tables.lookup(builder, loc, isSigned, false, code),
                                       broadcast(builder, loc, absmax, width));
}

/// The dynamic map's layout by decade, read off the map itself: its positive
/// entries below 1 fall into 7 decades (1e-7, 1e-6], ..., (0.1, 1), each an
/// almost evenly spaced run of entries. Decade i (counted as the number of
/// bounds 1e-6 ... 0.1 at or below a value) starts at code `base` with entry
/// v0, spaced about `spacing`: the code of the entry at or below a is about
/// base + floor((a - v0) / spacing) = floor(a * inverseSpacing + offset).
/// Over the decade's own range [bound, 10 bound) that is base - 1 at the
/// bottom (the first entry sits half a spacing above the bound) and the
/// decade's last code at the top, so no clamping per decade is needed.
constexpr float kDecadeBounds[6] = {1e-6f, 1e-5f, 1e-4f, 1e-3f, 1e-2f, 1e-1f};

int decadeOf(float a) {
  int i = 0;
  for (float bound : kDecadeBounds)
    i += a >= bound;
  return i;
}

std::vector<Decade> decades(const optrt::Q8Map &map) {
  const auto &v = map.values();
  std::vector<int> first(7, -1), last(7, -1);
  for (int code = map.zeroCode() + 1; code < 255; ++code) {
    int i = decadeOf(v[code]);
    if (first[i] < 0)
      first[i] = code;
    last[i] = code;
  }
  std::vector<Decade> result;
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

Value quantizeQ8(OpBuilder &builder, Location loc, Q8Tables &tables, bool isSigned, Value x, Value absmax) {
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
  // P = floor(|n| / spacing + offset) (Decade) is the code of the entry at or
  // below |n|, and P + 1 of the one above, up to roundings that only matter
  // when |n| is close to an entry, far from any threshold. The one threshold
  // between those two entries settles it: code = P + [t[P] <= n]. (If the
  // rounding crossed an entry e, P is e - 1 or e and both give e.) At a
  // decade's edges P is the code below its first entry or its last code, and
  // t[P] the threshold between the decades.
  // Negative n mirrors: entries are symmetric around the 0 entry, so the
  // threshold between the mirrored pair is t[2 zeroCode - P - 1]. The
  // unsigned map has no negative entries: every negative n counts no
  // threshold (index 0). tests/cpu: QuantiserAtEveryBoundary.
  Value a = builder.create<math::AbsFOp>(loc, n);
  std::vector<Decade> table = decades(map);
  Value inverse, offset;
  if (tables.permutes(width)) {
    // With permutes, the decade by |n|'s binade instead of six compares and
    // twelve selects: a binade holds at most one decade bound, so decade =
    // lower[binade] + [|n| >= bound[binade]] (bound +Inf where there is
    // none), and the decade's (inverse, offset) are one vpermps each. The
    // biased exponents 107 (2^-20, holding 1e-6) to 123 (2^-4, holding 0.1)
    // are 17 lanes of a 32-lane table at E mod 32; exponents are clamped
    // into them, which is exact: no bound lies below 2^-20 or at or above
    // 2^-3, so binade 107 decides every smaller |n| (zero included) and 123
    // every larger one (NaN: any decade, the code is the 0 entry anyway).
    Type i32 = lanes(i32s, width);
    auto ci = [&](int64_t v) { return splatInt(builder, loc, i32s, v, width); };
    Value exponent = builder.create<arith::ShRUIOp>(loc, builder.create<arith::BitcastOp>(loc, i32, a), ci(23));
    exponent = builder.create<arith::MinSIOp>(loc, builder.create<arith::MaxSIOp>(loc, exponent, ci(107)), ci(123));
    std::array<float, 32> bounds, lower;
    bounds.fill(INFINITY);
    lower.fill(0.0f);
    for (int e = 107; e <= 123; ++e) {
      float start = std::ldexp(1.0f, e - 127);
      for (float b : kDecadeBounds)
        if (b >= start && b < 2 * start)
          bounds[e % 32] = b;
      // The decade as an i32 bit pattern: permutes only move bits.
      int decade = decadeOf(start);
      std::memcpy(&lower[e % 32], &decade, sizeof decade);
    }
    std::array<float, 16> inverses, offsets;
    inverses.fill(0.0f);
    offsets.fill(0.0f);
    for (int i = 0; i < 7; ++i) {
      inverses[i] = table[i].inverseSpacing;
      offsets[i] = table[i].offset;
    }
    Value above = builder.create<arith::CmpFOp>(loc, arith::CmpFPredicate::OGE, a, permute32(builder, loc, bounds, exponent));
    Value decade = builder.create<arith::BitcastOp>(loc, i32, permute32(builder, loc, lower, exponent));
    decade = builder.create<arith::AddIOp>(loc, decade, builder.create<arith::ExtUIOp>(loc, i32, above));
    inverse = permute16(builder, loc, inverses, decade);
    offset = permute16(builder, loc, offsets, decade);
  } else {
    inverse = f(table[0].inverseSpacing);
    offset = f(table[0].offset);
    for (int i = 1; i < 7; ++i) {
      Value in = builder.create<arith::CmpFOp>(loc, arith::CmpFPredicate::OGE, a, f(kDecadeBounds[i - 1]));
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
  Value probe = builder.create<arith::FPToSIOp>(loc, lanes(i32s, width), index);
  Value t = tables.lookup(builder, loc, isSigned, true, probe);
  Value le = builder.create<arith::CmpFOp>(loc, arith::CmpFPredicate::OLE, t, n);
  Value code = builder.create<arith::AddIOp>(loc, probe, builder.create<arith::ExtUIOp>(loc, lanes(i32s, width), le));
  Value isNan = builder.create<arith::CmpFOp>(loc, arith::CmpFPredicate::UNO, n, n);
  code = select(isNan, splatInt(builder, loc, i32s, map.zeroCode(), width), code);
  return builder.create<arith::TruncIOp>(loc, lanes(builder.getIntegerType(8), width), code);
}

Value finiteMagnitude(OpBuilder &builder, Location loc, Value x) {
  int64_t width = widthOf(x);
  Value magnitude = builder.create<math::AbsFOp>(loc, x);
  // Ordered less-than Inf: false for Inf and NaN.
  Value finite = builder.create<arith::CmpFOp>(loc, arith::CmpFPredicate::OLT, magnitude,
                                               splatF32(builder, loc, INFINITY, width));
  return builder.create<arith::SelectOp>(loc, finite, magnitude, splatF32(builder, loc, 0.0f, width));
}

} // namespace optdsl::cpu
