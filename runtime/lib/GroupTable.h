// Parameter groups and their tensors, as both optimizers (optrt::Optimizer
// on the CPU, optrt::CudaOptimizer on a GPU) keep them: tensors of all
// groups in one list, each group a contiguous slice of it. The lookups
// validate indices with messages that name what exists.
#pragma once

#include <cstddef>
#include <stdexcept>
#include <string>
#include <vector>

namespace optrt::detail {

struct Group {
  std::vector<double> hypers; // by HyperInfo index
  size_t firstTensor;
  size_t numTensors;
};

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

} // namespace optrt::detail
