// How the CPU element kernels read and write a buffer stored in a precision
// layout (optrt/Layout.h): the conversions between f32 lanes and bf16, f16 and
// q8 storage: the loads, stores and table lookups around the backend-neutral
// arithmetic of Codegen/StorageArith.h. Each one must give exactly the bits
// of the runtime's storage reference (optrt/Storage.h), which tests/layouts
// checks kernel by kernel.
#pragma once

#include "optrt/Layout.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"

namespace optdsl::cpu {

/// The element type a buffer of `dtype` holds in memory: f32, i16 (bf16 and
/// f16 bit patterns), i8 (q8 codes).
mlir::Type storageType(mlir::MLIRContext *context, optrt::Dtype dtype);

/// `width` values (1 = scalar) stored as f32, bf16 or f16 at base[index], as
/// f32 lanes. Exact.
mlir::Value loadAsF32(mlir::OpBuilder &builder, mlir::Location loc, mlir::Value base,
                      mlir::Value index, int64_t width, optrt::Dtype dtype);

/// Writes f32 lanes to base[index] as f32, bf16 or f16, rounding to nearest
/// even exactly as optrt::f32ToBf16 / f32ToF16 do (NaN kept, quiet). With
/// `random` (i32 lanes) a bf16 or f16 write rounds stochastically instead,
/// exactly as optrt::f32ToBf16Stochastic / f32ToF16Stochastic.
/// `bf16Instruction`: the target has AVX512-BF16, whose vcvtneps2bf16 a
/// 16-lane round-to-nearest bf16 store uses (storeBf16Fast).
void storeFromF32(mlir::OpBuilder &builder, mlir::Location loc, mlir::Value base,
                  mlir::Value index, mlir::Value value, optrt::Dtype dtype,
                  mlir::Value random = {}, bool bf16Instruction = false);

/// Stores f32ToBf16 of 16 lanes at `address` by vcvtneps2bf16 (AVX512-BF16:
/// one instruction instead of the eight of codegen::narrowBf16). It rounds
/// to nearest even and quiets a NaN keeping its top payload, as the
/// reference does, but treats subnormal inputs as zero: a vector holding
/// one is stored again by the bit arithmetic (a branch, rarely taken:
/// subnormal f32 values are below 2^-126).
void storeBf16Fast(mlir::OpBuilder &builder, mlir::Location loc, mlir::Value value, mlir::Value address);

/// The exact f32 master of a bf16 param and its int16 remainder at
/// base[index] (optrt::joinMaster), and the reverse (optrt::splitMaster:
/// the param is the master's high half rounded on the low half, ties away
/// from zero; the remainder the low half).
mlir::Value loadJoinedMaster(mlir::OpBuilder &builder, mlir::Location loc, mlir::Value param,
                             mlir::Value remainder, mlir::Value index, int64_t width);
void storeSplitMaster(mlir::OpBuilder &builder, mlir::Location loc, mlir::Value param,
                      mlir::Value remainder, mlir::Value index, mlir::Value value);

/// The constant tables of the q8 maps, created once per module: the 256
/// entries (dequantisation) and the 255 thresholds (quantisation) of
/// optrt::q8Map(signed), and how the kernels look them up.
class Q8Tables {
public:
  /// `permute`: the target has AVX-512F, so a 16-lane lookup is done in
  /// registers (vpermi2ps over 32 entries, eight of them and a blend tree on
  /// the index's bits 5-7) instead of a gather: twice as fast on Zen 4,
  /// where vgatherdps zmm costs about as much as 16 scalar loads.
  Q8Tables(mlir::ModuleOp module, bool permute) : module_(module), permute_(permute) {}
  /// table[index] for i32 lanes `index` (in [0, 255]; thresholds: [0, 254]).
  mlir::Value lookup(mlir::OpBuilder &builder, mlir::Location loc, bool isSigned, bool thresholds,
                     mlir::Value index);
  /// Whether lookups of `width` lanes use the permutes.
  bool permutes(int64_t width) const { return permute_ && width == 16; }

private:
  mlir::Value address(mlir::OpBuilder &builder, mlir::Location loc, bool isSigned, bool thresholds);
  mlir::Value permuteLookup(mlir::OpBuilder &builder, mlir::Location loc, bool isSigned, bool thresholds,
                            mlir::Value index);
  mlir::ModuleOp module_;
  bool permute_;
};

/// map[codes[index]] * absmax for `width` codes (absmax: one f32 scalar, the
/// block's): optrt::dequantizeBlockwise.
mlir::Value dequantizeQ8(mlir::OpBuilder &builder, mlir::Location loc, Q8Tables &tables, bool isSigned,
                         mlir::Value codes, mlir::Value index, int64_t width, mlir::Value absmax);

/// The codes (i8 lanes) of f32 lanes `x` in a block of absmax `absmax` (f32
/// scalar): optrt::quantizeBlockwise, non-finite policy included.
mlir::Value quantizeQ8(mlir::OpBuilder &builder, mlir::Location loc, Q8Tables &tables, bool isSigned,
                       mlir::Value x, mlir::Value absmax);

} // namespace optdsl::cpu
