// How chunk partials of a reduction become its value: combine two partials
// (sum/mean/norm add their Σx or Σx², max takes the larger) and finish the
// combined partial (mean divides by the element count, norm takes the square
// root). Kept apart so every backend combines the same way.
#pragma once

#include "optrt/RuleKernels.h"

#include <cmath>
#include <cstddef>

namespace optrt {

inline double combinePartials(ReductionKind kind, double acc, double partial) {
  if (kind != ReductionKind::Max)
    return acc + partial;
  // NaN wins, as it would in a sum: a NaN gradient must not vanish from max.
  return std::isnan(partial) || partial > acc ? partial : acc;
}

inline double finishReduction(ReductionKind kind, double combined, size_t numElements) {
  switch (kind) {
  case ReductionKind::Sum:
  case ReductionKind::Max:
    return combined;
  case ReductionKind::Mean:
    return combined / static_cast<double>(numElements);
  case ReductionKind::Norm:
    return std::sqrt(combined);
  }
  return combined;
}

} // namespace optrt
