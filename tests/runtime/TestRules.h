// Rules written by hand as plain C++ functions, filling RuleKernels the way
// the compiler's JIT will, so the runtime is tested without the compiler.
// Each test file holds its own straightforward reference loop for the rule
// it checks; the slot constants below are what both sides agree on.
#pragma once

#include "optrt/RuleKernels.h"

#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

namespace optrt::test {

/// SGD with momentum, one phase: m = momentum * m + grad; param -= lr * m.
/// Hypers lr = 0.1, momentum = 0.9; state momentum_buf (init 0); uniforms
/// {lr, momentum}.
std::shared_ptr<const RuleKernels> sgdMomentumKernels();

/// A LAMB-like rule in two phases.
///   phase 0: m = beta1 * m + (1 - beta1) * grad; reductions pnorm = norm(param),
///            gmax = max(grad) (param before this step's update)
///   phase 1: v = v + m * m;
///            param -= lr * pnorm / (1 + count) / (1 - beta1^step)
///                     * (m / (|gmax| + 1)) / (sqrt(v) + eps)
///   scalars: count = count + 1, lastNorm = pnorm
/// Hypers lr = 0.01, beta1 = 0.9, eps = 1e-6, v0 = 0.1. States, mixed as a
/// .opt file may declare them: m (elementwise, init 0), count (scalar, 0),
/// v (elementwise, init v0), lastNorm (scalar, 0).
std::shared_ptr<const RuleKernels> lambLikeKernels();

/// Every reduction kind, no elementwise state: param -= lr * grad, and the
/// scalar states gsum, gmean, gnorm, gmax take sum/mean/norm/max of grad.
/// Hyper lr = 0.1.
std::shared_ptr<const RuleKernels> gradStatsKernels();

/// One call of the recorder rule's kernel, as the runtime made it.
struct KernelCall {
  const float *param;
  const float *grad;
  const float *state;
  int64_t begin;
  int64_t end;
  float step; // uniform 0: the step number the uniforms function was given
  std::thread::id thread;
};

/// A rule that changes no parameter and records every kernel call (any
/// thread may make them). Hyper none; elementwise state s; one Sum reduction
/// whose partial is the chunk's element count; scalar state seen = that sum,
/// so seen ends up as the element count that the chunks covered.
std::shared_ptr<const RuleKernels> recorderKernels();
/// The calls recorded since the last take, in no particular order.
std::vector<KernelCall> takeRecordedCalls();

} // namespace optrt::test
