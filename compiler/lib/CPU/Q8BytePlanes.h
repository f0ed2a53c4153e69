// The q8 conversions of the CPU kernels 64 elements at a time, on targets
// with AVX-512 VBMI (byte permutes): each 256-entry f32 table (the map, the
// thresholds) is four byte planes, and vpermi2b looks up 64 bytes of a
// plane at once, where the 16-lane paths of StorageCodegen.h need eight
// vpermi2ps and a blend tree per 16 lanes. The results are exactly those of
// dequantizeQ8 / quantizeQ8 (optrt::quantizeBlockwise's codes), which
// tests/cpu checks kernel by kernel.
#pragma once

#include "mlir/IR/Builders.h"

#include <array>

namespace optdsl::cpu {

/// Four vectors of 16 lanes: elements 0-15, 16-31, 32-47, 48-63.
using Lanes64 = std::array<mlir::Value, 4>;

/// map[codes[index + i]] * absmax for 64 codes (absmax an f32 scalar).
Lanes64 dequantizeQ8x64(mlir::OpBuilder &builder, mlir::Location loc, bool isSigned, mlir::Value codes,
                        mlir::Value index, mlir::Value absmax);

/// The codes of 64 f32 values x in a block of absmax `absmax`, as
/// quantizeQ8 gives them (n = fl(x / absmax), IEEE division), stored at
/// codes[index]. `reciprocal` is fl(1 / absmax) and `divide` (i1) says the
/// block must divide (absmax outside [2^-126, 2^126] and not 0, where
/// x * reciprocal can be more than a few ulps from n): otherwise the codes come from
/// x * reciprocal, and only a group of 64 with an element within 8 ulps of a
/// threshold divides (a branch taken for 0.25-0.5% of groups on random data).
void quantizeQ8x64(mlir::OpBuilder &builder, mlir::Location loc, bool isSigned, const Lanes64 &x,
                   mlir::Value absmax, mlir::Value reciprocal, mlir::Value divide, mlir::Value codes,
                   mlir::Value index);

} // namespace optdsl::cpu
