// The read of the gradients that a step with loss scaling, a non-finite
// check or norm clipping makes before the rule's passes
// (optrt/StepOptions.h): the sum of squares of a chunk of one gradient, in
// double. A square of an f32 (or bf16, f16) value is exact in double and a
// sum of them cannot overflow, so the sum is finite exactly when every
// element is: one accumulator serves the norm and the found-inf check.
#pragma once

#include "optrt/Layout.h"

#include <cstdint>

namespace optrt::detail {

/// Σ x² over elements [begin, end) of a gradient stored as `dtype` (f32,
/// bf16 or f16), accumulated in 16 lanes combined in a fixed order: the
/// result depends on the values and the range only, never on the machine's
/// vector width.
double sumOfSquares(Dtype dtype, const void *data, int64_t begin, int64_t end);

} // namespace optrt::detail
