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
  std::vector<std::vector<double>> states; // by CheckedRule::states slot
  std::vector<double> scalarStates;        // by CheckedRule::scalarStates slot
};

/// Hyper values by CheckedRule::hypers slot.
using HyperValues = std::vector<double>;

class Interpreter {
public:
  explicit Interpreter(const CheckedRule &rule) : rule_(rule) {}

  HyperValues defaultHypers() const;
  /// Sets one hyper by name; throws std::invalid_argument naming the hyper
  /// and the rule's hypers when it does not exist, or when value is not finite.
  void setHyper(HyperValues &hypers, const std::string &name, double value) const;

  /// Allocates the state of one tensor with the rule's initial values.
  TensorState initTensor(std::vector<double> param, const HyperValues &hypers) const;

  /// One optimizer step (`step` is 1-based) on every tensor; the tensors
  /// form one parameter group (what group_sum and the other group-wide
  /// reductions reduce over, in tensor order). Throws std::invalid_argument
  /// when a gradient's size differs from its tensor's, before anything is
  /// changed.
  void step(std::vector<TensorState> &tensors, const std::vector<std::vector<double>> &grads,
            int64_t step, const HyperValues &hypers) const;

private:
  const CheckedRule &rule_;
};

} // namespace optdsl
