// The CUDA backend of optdsl-golden: a golden case run by optrt::CudaOptimizer
// on device 0.
#pragma once

#include "GoldenCase.h"

#include "optdsl/Sema.h"

namespace optdsl {

/// Throws optrt::CudaError (NoDriver, NoDevice, ...) where no GPU can run it.
Trajectory runOnCuda(const GoldenCase &golden, const CheckedRule &rule);

} // namespace optdsl
