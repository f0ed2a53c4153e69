#include "StorageCodegen.h"

#include "optdsl/Codegen/StorageArith.h"

#include "optrt/Storage.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/BuiltinTypes.h"

#include <array>
#include <cmath>
#include <cstring>

namespace optdsl::cpu {

using namespace mlir;
using optrt::Dtype;

namespace {

using codegen::broadcast;
using codegen::splatF32;
using codegen::splatInt;
using codegen::widthOf;
Type lanes(Type scalar, int64_t width) { return codegen::lanesOf(scalar, width); }

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

Value loadAsF32(OpBuilder &builder, Location loc, Value base, Value index, int64_t width, Dtype dtype) {
  Type element = storageType(builder.getContext(), dtype);
  Value address = pointer(builder, loc, base, index, element);
  unsigned alignment = dtype == Dtype::F32 ? 4 : 2;
  Value raw = builder.create<LLVM::LoadOp>(loc, lanes(element, width), address, alignment);
  if (dtype == Dtype::F32)
    return raw;
  if (dtype == Dtype::BF16)
    return codegen::widenBf16(builder, loc, raw);
  // vcvtph2ps gives the bits of optrt::f16ToF32 for every pattern (tested
  // on all 65536), NaN included.
  return codegen::widenF16(builder, loc, raw, /*exactNan=*/false);
}

void storeBf16Fast(OpBuilder &builder, Location loc, Value value, Value address) {
  auto i16x16 = VectorType::get({16}, builder.getIntegerType(16));
  auto i1x16 = VectorType::get({16}, builder.getI1Type());
  Value converted = builder.create<LLVM::CallIntrinsicOp>(loc, VectorType::get({16}, builder.getBF16Type()),
                                                          "llvm.x86.avx512bf16.cvtneps2bf16.512", ValueRange{value})
                        .getResult(0);
  builder.create<LLVM::StoreOp>(loc, builder.create<LLVM::BitcastOp>(loc, i16x16, converted), address, 2);
  // vfpclassps category 0x20: subnormal. Such a vector (rare) is stored
  // again, by the bit arithmetic; the common path stays straight.
  Value subnormal = builder
                        .create<LLVM::CallIntrinsicOp>(
                            loc, i1x16, "llvm.x86.avx512.fpclass.ps.512",
                            ValueRange{value, builder.create<arith::ConstantOp>(loc, builder.getI32IntegerAttr(0x20))})
                        .getResult(0);
  Value any = builder.create<vector::ReductionOp>(loc, vector::CombiningKind::OR, subnormal);
  builder.create<scf::IfOp>(loc, any, [&](OpBuilder &b, Location l) {
    b.create<LLVM::StoreOp>(l, codegen::narrowBf16(b, l, value, Value()), address, 2);
    b.create<scf::YieldOp>(l);
  });
}

void storeFromF32(OpBuilder &builder, Location loc, Value base, Value index, Value value, Dtype dtype,
                  Value random, bool bf16Instruction) {
  Type element = storageType(builder.getContext(), dtype);
  Value address = pointer(builder, loc, base, index, element);
  if (dtype == Dtype::F32) {
    builder.create<LLVM::StoreOp>(loc, value, address, 4);
    return;
  }
  // vcvtps2ph keeps a NaN's top payload with the quiet bit, as f32ToF16.
  if (dtype == Dtype::BF16 && !random && bf16Instruction && widthOf(value) == 16) {
    storeBf16Fast(builder, loc, value, address);
    return;
  }
  Value stored = dtype == Dtype::BF16 ? codegen::narrowBf16(builder, loc, value, random)
                                      : codegen::narrowF16(builder, loc, value, random, /*exactNan=*/false);
  builder.create<LLVM::StoreOp>(loc, stored, address, 2);
}

Value loadJoinedMaster(OpBuilder &builder, Location loc, Value param, Value remainder, Value index,
                       int64_t width) {
  Type i16s = builder.getIntegerType(16);
  Type i16 = lanes(i16s, width);
  Value p = builder.create<LLVM::LoadOp>(loc, i16, pointer(builder, loc, param, index, i16s), 2);
  Value r = builder.create<LLVM::LoadOp>(loc, i16, pointer(builder, loc, remainder, index, i16s), 2);
  return codegen::joinMaster(builder, loc, p, r);
}

void storeSplitMaster(OpBuilder &builder, Location loc, Value param, Value remainder, Value index, Value value) {
  Type i16s = builder.getIntegerType(16);
  auto [p, r] = codegen::splitMaster(builder, loc, value);
  builder.create<LLVM::StoreOp>(loc, p, pointer(builder, loc, param, index, i16s), 2);
  builder.create<LLVM::StoreOp>(loc, r, pointer(builder, loc, remainder, index, i16s), 2);
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

Value quantizeQ8(OpBuilder &builder, Location loc, Q8Tables &tables, bool isSigned, Value x, Value absmax) {
  int64_t width = widthOf(x);
  Type i32s = builder.getI32Type();
  codegen::Q8Lookups lookups;
  lookups.threshold = [&](OpBuilder &b, Location l, Value index) { return tables.lookup(b, l, isSigned, true, index); };
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
    lookups.decade = [&, width, i32s](OpBuilder &, Location, Value a) -> std::pair<Value, Value> {
      std::vector<codegen::Q8Decade> table = codegen::q8Decades(optrt::q8Map(isSigned));
      Type i32 = lanes(i32s, width);
      auto ci = [&](int64_t v) { return splatInt(builder, loc, i32s, v, width); };
      Value exponent = builder.create<arith::ShRUIOp>(loc, builder.create<arith::BitcastOp>(loc, i32, a), ci(23));
      exponent = builder.create<arith::MinSIOp>(loc, builder.create<arith::MaxSIOp>(loc, exponent, ci(107)), ci(123));
      std::array<float, 32> bounds, lower;
      bounds.fill(INFINITY);
      lower.fill(0.0f);
      for (int e = 107; e <= 123; ++e) {
        float start = std::ldexp(1.0f, e - 127);
        for (float b : codegen::kQ8DecadeBounds)
          if (b >= start && b < 2 * start)
            bounds[e % 32] = b;
        // The decade as an i32 bit pattern: permutes only move bits.
        int decade = codegen::q8DecadeOf(start);
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
      return {permute16(builder, loc, inverses, decade), permute16(builder, loc, offsets, decade)};
    };
  }
  Value code = codegen::quantizeQ8(builder, loc, isSigned, x, absmax, lookups);
  return builder.create<arith::TruncIOp>(loc, lanes(builder.getIntegerType(8), width), code);
}

} // namespace optdsl::cpu
