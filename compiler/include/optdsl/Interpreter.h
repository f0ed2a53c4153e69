// The reference interpreter: runs a checked rule in double precision, one
// statement at a time over whole tensors. It is the semantic oracle every
// backend and layout is tested against, so it favours clarity over speed.
#pragma once

#include "optdsl/Sema.h"

#include <cstdint>
#include <string>
#include <vector>

namespace optdsl {

/// One tensor's parameters and optimizer state.
struct TensorState {
  std::vector<double> param;
  /// Its dimensions, row-major (empty: 1-D). A rule reads it as a stack of
  /// matrices over the last two (optdsl::Axes).
  std::vector<int64_t> shape;
  /// By CheckedRule::states slot: one value per element, or per row or
  /// column of each matrix for a `[rows]`/`[cols]` state (batch-major).
  std::vector<std::vector<double>> states;
  std::vector<double> scalarStates;        // by CheckedRule::scalarStates slot
};

/// Hyper values by CheckedRule::hypers slot.
using HyperValues = std::vector<double>;

/// The values of a rule's inputs (`input NAME;`) for one step, by
/// CheckedRule::inputs slot: per tensor its elements, or no tensors at all
/// when the trainer gives that input no value this step (slots past the
/// end: not given either).
using StepInputs = std::vector<std::vector<std::vector<double>>>;

/// Where `random(stream)` draws from, as optrt::Optimizer does it
/// (optrt/Storage.h randomStreamSalt): its seed, its step count (the
/// optimizer's, counting every group), and the index of this group's first
/// tensor among all of the optimizer's. optimizerStep 0 stands for the
/// group's `step` (one group from the start: the same).
struct RandomSource {
  uint32_t seed = 0;
  int64_t optimizerStep = 0;
  uint64_t firstTensor = 0;
};

class Interpreter {
public:
  explicit Interpreter(const CheckedRule &rule) : rule_(rule) {}

  HyperValues defaultHypers() const;
  /// Sets one hyper by name; throws std::invalid_argument naming the hyper
  /// and the rule's hypers when it does not exist, or when value is not finite.
  void setHyper(HyperValues &hypers, const std::string &name, double value) const;

  /// Allocates the state of one tensor with the rule's initial values.
  /// `shape` (empty: 1-D) must multiply out to param.size(); throws
  /// std::invalid_argument naming both otherwise.
  TensorState initTensor(std::vector<double> param, const HyperValues &hypers,
                         std::vector<int64_t> shape = {}) const;

  /// One optimizer step (`step` is 1-based) on every tensor; the tensors
  /// form one parameter group (what group_sum and the other group-wide
  /// reductions reduce over, in tensor order). Throws std::invalid_argument,
  /// before anything is changed, when a gradient's or an input's size
  /// differs from its tensor's, when `inputs` has more inputs than the rule
  /// declares, or when an input the rule never tests with given() has no
  /// value.
  void step(std::vector<TensorState> &tensors, const std::vector<std::vector<double>> &grads,
            int64_t step, const HyperValues &hypers, const StepInputs &inputs = {},
            const RandomSource &random = {}) const;

private:
  const CheckedRule &rule_;
};

} // namespace optdsl
