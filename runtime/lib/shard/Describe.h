// What the ranks of a sharded optimizer must agree on (Agreement.h), written
// out so that a difference is a readable message: the rule and options at
// construction, a new group's sizes and hypers, a step's counts and options.
// Doubles are written exactly (hexadecimal), so "the same" means bitwise.
#pragma once

#include "optrt/Optimizer.h"

#include <map>
#include <string>
#include <vector>

namespace optrt::detail {

std::string describeOptions(const RuleKernels *kernels, const OptimizerOptions &options);
std::string describeGroup(int group, const std::vector<size_t> &sizes,
                          const std::map<std::string, double> &hyperOverrides);
std::string describeStep(int64_t stepCount, size_t numTensors, const StepOptions &options);

} // namespace optrt::detail
