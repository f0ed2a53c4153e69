// The CUDA backend of optdsl-golden: a golden case run by optrt::CudaOptimizer
// on device 0.
#pragma once

#include "GoldenCase.h"

#include "optdsl/Sema.h"

#include <stdexcept>

namespace optdsl {

/// A case the CUDA optimizer cannot run yet (a group-wide reduction, an
/// input, the runtime's fused clipping): reported as skipped, with why.
struct NotOnCudaYet : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// The case's hypers never change during its run, so the kernels are built
/// with every one of them fixed: what only other values need folds away
/// (lamb's global clipping with max_grad_norm 0). Throws NotOnCudaYet before
/// touching a GPU when the CUDA optimizer lacks what the case needs, and
/// optrt::CudaError (NoDriver, NoDevice, ...) where no GPU can run it.
Trajectory runOnCuda(const GoldenCase &golden, const CheckedRule &rule);

} // namespace optdsl
