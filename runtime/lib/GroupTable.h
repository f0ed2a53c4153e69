// Parameter groups and their tensors, as both optimizers (optrt::Optimizer
// on the CPU, optrt::CudaOptimizer on a GPU) keep them: tensors of all
// groups in one list, each group a contiguous slice of it. The lookups
// validate indices with messages that name what exists.
#pragma once

#include <array>

#include "RuleLayout.h"

#include "optrt/Shape.h"

#include "optrt/Schedule.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace optrt::detail {

struct Group {
  std::vector<double> hypers; // by HyperInfo index
  size_t firstTensor;
  size_t numTensors;
  /// Steps this group has taken (torch keeps a step per parameter): a group
  /// added after others have stepped starts at step 1.
  int64_t steps = 0;
  /// Schedules attached to its hypers, by HyperInfo index.
  std::map<size_t, Schedule> schedules;
};

/// Throws std::invalid_argument for a hyper the step sets (RuleKernels.h):
/// loss scaling and clipping are StepOptions, not hyper values.
inline void refuseStepHyper(const std::string &name, const char *caller) {
  if (isStepHyper(name))
    throw std::invalid_argument(std::string(caller) + ": hyper '" + name +
                                "' is set by every step from its StepOptions (lossScale, maxGradNorm, "
                                "clipValue, inputs); it cannot be given a value");
}

inline std::string tensorName(size_t tensor, size_t group) {
  return "tensor " + std::to_string(tensor) + " of group " + std::to_string(group);
}

/// Throws std::out_of_range naming the group and how many there are.
inline const Group &checkedGroup(const std::vector<Group> &groups, int group, const char *caller) {
  if (group < 0 || static_cast<size_t>(group) >= groups.size())
    throw std::out_of_range(std::string(caller) + ": group " + std::to_string(group) +
                            " does not exist; the optimizer has " + std::to_string(groups.size()) +
                            " groups");
  return groups[group];
}

/// Throws std::out_of_range naming the group or tensor that does not exist.
template <typename Tensor>
const Tensor &checkedTensor(const std::vector<Group> &groups, const std::vector<Tensor> &tensors, int group,
                            size_t tensor, const char *caller) {
  const Group &g = checkedGroup(groups, group, caller);
  if (tensor >= g.numTensors)
    throw std::out_of_range(std::string(caller) + ": " + tensorName(tensor, static_cast<size_t>(group)) +
                            " does not exist; the group has " + std::to_string(g.numTensors) + " tensors");
  return tensors[g.firstTensor + tensor];
}

/// What is wrong with the tensors of a new group before anything else is
/// looked at (no tensor, count mismatch, a null pointer, an empty or absurd
/// size), or "" when nothing is. Pointer: a host or a device pointer.
template <typename Pointer>
std::string newGroupProblem(const std::vector<Pointer> &params, const std::vector<size_t> &sizes) {
  if (params.empty())
    return "has no tensors";
  if (params.size() != sizes.size())
    return std::to_string(params.size()) + " param pointers but " + std::to_string(sizes.size()) + " sizes";
  for (size_t i = 0; i < params.size(); ++i) {
    if (!params[i])
      return "param pointer of tensor " + std::to_string(i) + " is null";
    if (sizes[i] == 0)
      return "tensor " + std::to_string(i) + " has size 0; every tensor needs elements";
    if (sizes[i] > static_cast<size_t>(std::numeric_limits<int64_t>::max()) / sizeof(float))
      return "tensor " + std::to_string(i) + " has size " + std::to_string(sizes[i]) +
             ", more than memory can hold";
  }
  return {};
}

/// rank, rows and cols of a tensor as a rule reads them (RuleKernels.h
/// kShapeScalars; optrt/Shape.h).
inline std::array<double, 3> shapeDimensions(const std::vector<size_t> &shape, size_t size) {
  MatrixView view = matrixView(shape, size);
  return {static_cast<double>(view.rank), static_cast<double>(view.rows), static_cast<double>(view.cols)};
}

/// The matrices, rows and cols a rule reading matrices sees in a tensor of
/// this shape (optrt/Shape.h).
inline std::array<int64_t, 3> matrixDimensions(const std::vector<size_t> &shape, size_t size) {
  MatrixView view = matrixView(shape, size);
  return {static_cast<int64_t>(view.batch), static_cast<int64_t>(view.rows), static_cast<int64_t>(view.cols)};
}

/// Writes a tensor's dimensions (shapeDimensions) into its scalar states
/// (`scalars`: numScalar of them) that hold the rule's rank, rows and cols.
inline void setShapeScalars(const RuleLayout &layout, const std::array<double, 3> &dims, double *scalars) {
  for (const StateInfo &state : layout.rule().states)
    if (int k = state.scalar ? shapeDimension(state.name) : -1; k >= 0)
      scalars[layout.scalarIndex(state.name, "optrt")] = dims[static_cast<size_t>(k)];
}

/// A step's inputs (StepInput, CudaStepInput), checked against the rule and
/// the groups: values[slot][g] is group g's pointers for the rule's input
/// `slot`, or null where the step gives none. Throws std::invalid_argument
/// naming the problem (an unknown input, one given twice, a wrong count of
/// groups or tensors, a null pointer, a required input missing) before the
/// caller changes anything.
template <typename Pointer, typename Input>
std::vector<std::vector<const std::vector<Pointer> *>>
validatedInputs(const RuleKernels &rule, const std::vector<Group> &groups, const std::vector<Input> &inputs,
                const char *caller) {
  std::vector<std::vector<const std::vector<Pointer> *>> values(
      rule.inputs.size(), std::vector<const std::vector<Pointer> *>(groups.size(), nullptr));
  std::vector<bool> seen(rule.inputs.size(), false);
  for (const Input &input : inputs) {
    size_t slot = 0;
    while (slot < rule.inputs.size() && rule.inputs[slot].name != input.name)
      ++slot;
    if (slot == rule.inputs.size()) {
      std::string known; // only for the message: a step allocates nothing it need not
      for (const InputInfo &info : rule.inputs)
        known += (known.empty() ? "'" : ", '") + info.name + "'";
      throw std::invalid_argument(std::string(caller) + ": rule '" + rule.name + "' has no input '" + input.name +
                                  "' (" + (known.empty() ? "it takes none" : "its inputs: " + known) + ")");
    }
    if (seen[slot])
      throw std::invalid_argument(std::string(caller) + ": input '" + input.name + "' is given twice");
    seen[slot] = true;
    if (input.perGroup.size() != groups.size())
      throw std::invalid_argument(std::string(caller) + ": input '" + input.name + "' has values for " +
                                  std::to_string(input.perGroup.size()) + " groups but the optimizer has " +
                                  std::to_string(groups.size()));
    for (size_t g = 0; g < groups.size(); ++g) {
      const std::vector<Pointer> &tensorsOfGroup = input.perGroup[g];
      if (tensorsOfGroup.empty())
        continue;
      if (tensorsOfGroup.size() != groups[g].numTensors)
        throw std::invalid_argument(std::string(caller) + ": input '" + input.name + "' has " +
                                    std::to_string(tensorsOfGroup.size()) + " tensors for group " + std::to_string(g) +
                                    ", which has " + std::to_string(groups[g].numTensors));
      for (size_t i = 0; i < tensorsOfGroup.size(); ++i)
        if (!tensorsOfGroup[i])
          throw std::invalid_argument(std::string(caller) + ": input '" + input.name + "' of " +
                                      tensorName(i, g) + " is null");
      values[slot][g] = &tensorsOfGroup;
    }
  }
  for (size_t slot = 0; slot < rule.inputs.size(); ++slot) {
    if (rule.inputs[slot].optional)
      continue;
    for (size_t g = 0; g < groups.size(); ++g)
      if (!values[slot][g])
        throw std::invalid_argument(std::string(caller) + ": rule '" + rule.name + "' needs input '" +
                                    rule.inputs[slot].name + "' at every step (it never tests given(" +
                                    rule.inputs[slot].name + ")), and group " + std::to_string(g) + " has none");
  }
  return values;
}

/// The bytes [begin, end) of one tensor's params.
struct ParamRange {
  uintptr_t begin, end;
  size_t group, tensor;
};

/// Two tensors whose params overlap would be stepped twice, or raced on by
/// two threads: the first such pair, or "" when there is none.
inline std::string firstOverlap(std::vector<ParamRange> ranges) {
  std::sort(ranges.begin(), ranges.end(), [](const ParamRange &a, const ParamRange &b) { return a.begin < b.begin; });
  for (size_t i = 1; i < ranges.size(); ++i)
    if (ranges[i].begin < ranges[i - 1].end)
      return "the params of " + tensorName(ranges[i - 1].tensor, ranges[i - 1].group) + " and " +
             tensorName(ranges[i].tensor, ranges[i].group) + " overlap";
  return {};
}

/// A new group's hypers: the rule's defaults with `overrides` applied, each
/// checked (known name, finite, not a change of a fixed hyper).
inline std::vector<double> groupHypers(const RuleLayout &layout, const std::map<std::string, double> &overrides,
                                       const char *caller) {
  std::vector<double> hypers;
  for (const HyperInfo &hyper : layout.rule().hypers)
    hypers.push_back(hyper.defaultValue);
  for (const auto &[name, value] : overrides) {
    refuseStepHyper(name, caller);
    size_t index = layout.hyperIndex(name, caller);
    layout.checkHyperValue(index, value, caller);
    hypers[index] = value;
  }
  return hypers;
}

/// Sets hyper `name` of one group, or of every group when group is -1, after
/// the same checks as groupHypers; std::out_of_range for a bad group.
inline void setGroupHyper(std::vector<Group> &groups, const RuleLayout &layout, const std::string &name,
                          double value, int group, const char *caller) {
  refuseStepHyper(name, caller);
  size_t index = layout.hyperIndex(name, caller);
  layout.checkHyperValue(index, value, caller);
  if (group != -1)
    checkedGroup(groups, group, caller);
  for (size_t g = 0; g < groups.size(); ++g)
    if ((group == -1 || static_cast<size_t>(group) == g) && groups[g].schedules.count(index))
      throw std::invalid_argument(std::string(caller) + ": hyper '" + name + "' of group " + std::to_string(g) +
                                  " follows " + groups[g].schedules.at(index).description() +
                                  "; unschedule it before setting a value");
  for (size_t g = 0; g < groups.size(); ++g)
    if (group == -1 || static_cast<size_t>(group) == g)
      groups[g].hypers[index] = value;
}

} // namespace optrt::detail
