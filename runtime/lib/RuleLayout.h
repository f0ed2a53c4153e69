// What the runtime derives once from a RuleKernels: checks that the table is
// consistent (so a step never meets a null function or a reduction outside
// its phase), where each state lives (elementwise slot in the arena, or
// scalar slot), which reductions each phase accumulates, and lookups by name
// whose errors list the names that do exist; and which of the rule's layouts
// a step runs.
#pragma once

#include "optrt/RuleKernels.h"

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

namespace optrt {

struct StateSlot {
  bool scalar;
  size_t index; // among the states of the same kind, in declaration order
};

class RuleLayout {
public:
  /// Throws std::invalid_argument naming the first inconsistency, or when
  /// the rule was not compiled for `layout` (a written layout, Layout.h).
  RuleLayout(std::shared_ptr<const RuleKernels> kernels, const std::string &layout);

  const RuleKernels &rule() const { return *kernels_; }
  /// The layout a step runs.
  const LayoutKernels &layout() const { return *layout_; }
  /// Its parsed form.
  const Layout &parsedLayout() const { return parsed_; }
  /// What a tensor of `elements` elements runs: the layout, or its
  /// small-tensor fallback (q8 states in f32, optrt::smallTensorLayout) when
  /// it has q8 states and the tensor is under `smallTensorElements`.
  const LayoutKernels &layoutFor(size_t elements, size_t smallTensorElements) const {
    return fallback_ && elements < smallTensorElements ? *fallback_ : *layout_;
  }
  /// The StateInfo index of state `name` (which exists).
  size_t stateIndex(const std::string &name) const;
  size_t numHypers() const { return kernels_->hypers.size(); }
  size_t numElementwise() const { return numElementwise_; }
  size_t numScalar() const { return numScalar_; }
  size_t numReductions() const { return kernels_->reductions.size(); }
  /// Reductions of phase p are [reductionBegin(p), reductionEnd(p)).
  size_t reductionBegin(int phase) const { return phaseReductions_[phase]; }
  size_t reductionEnd(int phase) const { return phaseReductions_[phase + 1]; }
  size_t maxReductionsPerPhase() const { return maxReductionsPerPhase_; }
  /// What phase p runs over (RuleKernels::phaseDomains).
  PhaseDomain domain(int phase) const {
    return kernels_->phaseDomains.empty() ? PhaseDomain::Elements : kernels_->phaseDomains[phase];
  }
  /// Some state spans rows, columns or matrices: chunks are whole rows, and
  /// kernels take the tensor's Dims and those states (RuleKernels.h).
  bool readsMatrices() const { return readsMatrices_; }
  /// The column sums phase p's kernels leave as chunk partials, in their
  /// order (indices into RuleKernels::axisReductions).
  const std::vector<size_t> &columnSums(int phase) const { return columnSums_[phase]; }
  /// The row sums phase p's kernels store per row of each chunk, in their
  /// order (indices into RuleKernels::axisReductions; a pass over the elements).
  const std::vector<size_t> &rowSums(int phase) const { return rowSums_[phase]; }
  /// Column scratch regions phase p's kernels take (column sums first).
  size_t columnSlots(int phase) const { return columnSlots_[phase]; }
  /// The most of any phase: what each chunk's column scratch holds.
  size_t maxColumnSlots() const { return maxColumnSlots_; }
  size_t maxUniforms() const { return maxUniforms_; }

  /// Throw std::invalid_argument naming `name` and listing what exists;
  /// `caller` prefixes the message.
  size_t hyperIndex(const std::string &name, const char *caller) const;
  /// The index of step hyper `name` (kGradScaleHyper, kGradClipHyper), or -1
  /// when the rule's kernels predate the step hypers.
  int stepHyper(std::string_view name) const {
    const std::vector<HyperInfo> &hypers = rule().hypers;
    for (size_t i = 0; i < hypers.size(); ++i)
      if (hypers[i].name == name)
        return static_cast<int>(i);
    return -1;
  }
  /// Throws std::invalid_argument when hyper `index` may not take `value`:
  /// it is not finite, or the hyper is fixed (folded into the kernels) at
  /// another value, which the kernels would silently ignore.
  void checkHyperValue(size_t index, double value, const char *caller) const;
  StateSlot stateSlot(const std::string &name, const char *caller) const;
  /// The index of `name` among the elementwise (or the scalar) states; also
  /// throws std::invalid_argument when it is of the other kind, naming the
  /// accessor that reads it.
  size_t elementwiseIndex(const std::string &name, const char *caller) const;
  size_t scalarIndex(const std::string &name, const char *caller) const;

private:
  void selectLayout(const std::string &layout);
  const LayoutKernels &findLayout(const std::string &name, const std::string &why) const;
  void checkKernels(const LayoutKernels &layout, const Layout &parsed) const;
  // Phase domains and row/column reductions consistent with the states.
  void checkMatrixTables();

  std::shared_ptr<const RuleKernels> kernels_;
  const LayoutKernels *layout_ = nullptr;
  const LayoutKernels *fallback_ = nullptr;
  Layout parsed_;
  std::vector<StateSlot> stateSlots_; // by StateInfo index
  std::vector<size_t> phaseReductions_;
  size_t numElementwise_ = 0;
  size_t numScalar_ = 0;
  size_t maxReductionsPerPhase_ = 0;
  bool readsMatrices_ = false;
  std::vector<std::vector<size_t>> columnSums_, rowSums_;
  std::vector<size_t> columnSlots_;
  size_t maxColumnSlots_ = 0;
  size_t maxUniforms_ = 0;
};

} // namespace optrt
