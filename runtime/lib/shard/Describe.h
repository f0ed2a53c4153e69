// What the ranks of a sharded optimizer must agree on (Agreement.h), written
// out so that a difference is a readable message: the rule and options at
// construction, a new group's sizes and hypers, a step's counts, options and
// the groups' hyper values.
// Doubles are written exactly (the shortest text that reads back as the
// same double), so "the same" means bitwise.
#pragma once

#include "../GroupTable.h"

#include "optrt/Optimizer.h"

#include <map>
#include <string>
#include <vector>

namespace optrt::detail {

std::string describeOptions(const RuleKernels *kernels, const OptimizerOptions &options);
std::string describeGroup(int group, const std::vector<size_t> &sizes,
                          const std::map<std::string, double> &hyperOverrides,
                          const std::vector<std::vector<size_t>> &shapes = {});
/// Also every group's hyper values and step count: a setHyper made on one
/// rank only would otherwise step its parts with other values.
std::string describeStep(int64_t stepCount, size_t numTensors, const StepOptions &options,
                         const std::vector<Group> &groups, const std::vector<HyperInfo> &hypers);

} // namespace optrt::detail
