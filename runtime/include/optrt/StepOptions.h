// What a training step does around the rule (docs/training-step.md): loss
// scaling, the non-finite skip and clipping, fused into the step instead of
// run by the trainer as extra passes over memory. The gradient a rule reads
// is clamp(g * grad_scale, -clipValue, clipValue) of the stored gradient g,
// where grad_scale = clipCoefficient / lossScale; the two factors reach the
// kernels as the step hypers of RuleKernels.h, so every rule takes them
// unedited.
//
// When the step needs the gradients' global norm or a finiteness check, it
// reads every gradient once before the rule's passes (one extra read, no
// write): the sum of squares of each chunk in double (exact squares, 16
// lanes in a fixed order), combined in chunk order, so the norm is bitwise
// the same for any thread count. A non-finite gradient anywhere then skips
// the step: nothing is written, and the step counts do not advance.
#pragma once

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

namespace optrt {

/// The values of one of the rule's inputs (`input NAME;`, dsl/README.md)
/// for one step: a tensor per param besides its gradient (Sophia's Hessian
/// estimate).
struct StepInput {
  std::string name; ///< as the rule declares it
  /// perGroup[g][i]: the input of tensor i of group g, as many elements as
  /// the param and stored like the gradients (the layout's grad dtype: float
  /// for f32 gradients). perGroup[g] empty: group g gets no value this step,
  /// which only a rule that tests given(NAME) allows (the input then reads
  /// 0 and no memory is touched). Sharded (OptimizerOptions::communicator),
  /// an input is treated as the gradients are: each rank's values averaged
  /// over the ranks (ShardedGradients::Average) or already reduced, and
  /// every rank must give it to the same groups.
  std::vector<std::vector<const void *>> perGroup;
};

/// What a step does around the rule: loss scaling, the non-finite check, clipping.
struct StepOptions {
  /// The factor the gradients carry (the loss was multiplied by it before
  /// the backward pass); the kernels divide it out. Finite and positive. A
  /// value other than 1 implies checkFinite, as torch's GradScaler does.
  double lossScale = 1.0;
  /// Read the gradients before the step and skip it when any element is Inf
  /// or NaN.
  bool checkFinite = false;
  /// Clip by the global L2 norm of all gradients of all groups (after
  /// unscaling), as torch.nn.utils.clip_grad_norm_(params, maxGradNorm):
  /// every gradient is multiplied by min(1, maxGradNorm / (norm + 1e-6)).
  /// Finite and positive. Implies checkFinite.
  std::optional<double> maxGradNorm;
  /// Clip every element to [-clipValue, clipValue] after unscaling and norm
  /// clipping, as torch.nn.utils.clip_grad_value_. Finite and positive.
  std::optional<double> clipValue;
  /// Values of the rule's inputs, at most one entry per input. An input
  /// left out (or given to no group) reads 0 for this step; a rule that
  /// never tests given(NAME) needs NAME for every group at every step.
  std::vector<StepInput> inputs;
};

/// What a step did.
struct StepResult {
  /// A gradient held Inf or NaN: nothing changed (params, masters, states,
  /// q8 absmax, scalar states, step counts).
  bool skipped = false;
  /// The global L2 norm of the unscaled gradients before clipping (what
  /// clip_grad_norm_ returns); NaN when the step did not read the gradients
  /// first (no checkFinite, loss scale 1, no maxGradNorm), +Inf or NaN when
  /// it skipped.
  double gradNorm = std::numeric_limits<double>::quiet_NaN();
  /// The factor norm clipping multiplied the unscaled gradients by (1 when
  /// it did not clip).
  double clipCoefficient = 1.0;
  /// Sharded (OptimizerOptions::communicator): seconds this step spent in
  /// collectives (agreeing on the arguments, gradients, reduction partials,
  /// params); 0 for one process.
  double communicationSeconds = 0.0;
};

} // namespace optrt
