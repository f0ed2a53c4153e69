// The training step's kernels of a rule's gpu.module (docs/training-step.md
// "CUDA"): `gradstats`, each chunk's sum of squares of its gradient, and
// `stepoptions`, which turns those sums into the step's decisions on the
// device (found-inf skip, global norm, clip coefficient, grad_scale, the
// dynamic loss scale's update), so a step with loss scaling and clipping
// reads nothing back to the host and stays capturable in a CUDA graph.
#pragma once

#include "optrt/Storage.h"

#include "mlir/IR/Builders.h"

#include <string>

namespace optdsl::cuda {

/// What the two kernels need to know of the rule and its layout.
struct StepKernelSpec {
  std::string gradStatsEntry, stepOptionsEntry;
  int64_t buffersPerTensor = 0; ///< the layout's buffers table stride
  int64_t gradBuffer = 0;       ///< the gradient's slot in a tensor's row of it
  optrt::Dtype gradDtype = optrt::Dtype::F32;
  int64_t numHypers = 0;        ///< per group in the hypers table
  int64_t gradScaleHyper = -1, gradClipHyper = -1;
};

/// Appends both kernels to the gpu.module at `builder`'s insertion point
/// (which must already define the block scratch of DeviceBuilder.h).
void buildStepKernels(mlir::OpBuilder &builder, mlir::Location loc, const StepKernelSpec &spec);

} // namespace optdsl::cuda
