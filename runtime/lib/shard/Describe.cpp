#include "Describe.h"

#include <cstdio>

namespace optrt::detail {

namespace {

std::string exact(double value) {
  char text[40];
  std::snprintf(text, sizeof text, "%a", value);
  return text;
}

} // namespace

std::string describeOptions(const RuleKernels *kernels, const OptimizerOptions &options) {
  std::string text = "rule " + (kernels ? kernels->name : std::string("(none)"));
  if (kernels) {
    text += " (hypers";
    for (const HyperInfo &hyper : kernels->hypers)
      text += " " + hyper.name;
    text += "; states";
    for (const StateInfo &state : kernels->states)
      text += " " + state.name;
    text += ")";
  }
  text += ", layout " + options.layout + ", chunkElements " + std::to_string(options.chunkElements) +
          ", smallTensorElements " + std::to_string(options.smallTensorElements) + ", seed " +
          std::to_string(options.seed) + ", gradients " +
          (options.gradients == ShardedGradients::Average ? "Average" : "Reduced");
  return text;
}

std::string describeGroup(int group, const std::vector<size_t> &sizes,
                          const std::map<std::string, double> &hyperOverrides) {
  std::string text = "group " + std::to_string(group) + ": " + std::to_string(sizes.size()) + " tensors of sizes";
  for (size_t size : sizes)
    text += " " + std::to_string(size);
  text += "; hypers";
  for (const auto &[name, value] : hyperOverrides)
    text += " " + name + "=" + exact(value);
  return text;
}

std::string describeStep(int64_t stepCount, size_t numTensors, const StepOptions &options) {
  std::string text = "step " + std::to_string(stepCount + 1) + " of " + std::to_string(numTensors) +
                     " tensors, lossScale " + exact(options.lossScale) +
                     ", checkFinite " + (options.checkFinite ? "true" : "false");
  text += ", maxGradNorm " + (options.maxGradNorm ? exact(*options.maxGradNorm) : std::string("none"));
  text += ", clipValue " + (options.clipValue ? exact(*options.clipValue) : std::string("none"));
  return text;
}

} // namespace optrt::detail
