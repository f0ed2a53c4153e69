#include "Describe.h"

#include <algorithm>
#include <charconv>

namespace optrt::detail {

namespace {

// The shortest text that reads back as the same double (std::to_chars):
// exact, and as readable as the value allows (0.001, not 0x1.0624dd2f1a9fcp-10).
std::string exact(double value) {
  char text[40];
  auto end = std::to_chars(text, text + sizeof text, value).ptr;
  return std::string(text, end);
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
                          const std::map<std::string, double> &hyperOverrides,
                          const std::vector<std::vector<size_t>> &shapes) {
  std::string text = "group " + std::to_string(group) + ": " + std::to_string(sizes.size()) + " tensors of sizes";
  for (size_t size : sizes)
    text += " " + std::to_string(size);
  if (!shapes.empty()) {
    text += "; shapes";
    for (const std::vector<size_t> &shape : shapes) {
      text += " ";
      for (size_t k = 0; k < shape.size(); ++k)
        text += (k ? "x" : "") + std::to_string(shape[k]);
    }
  }
  text += "; hypers";
  for (const auto &[name, value] : hyperOverrides)
    text += " " + name + "=" + exact(value);
  return text;
}

std::string describeStep(int64_t stepCount, size_t numTensors, const StepOptions &options,
                         const std::vector<Group> &groups, const std::vector<HyperInfo> &hypers) {
  std::string text = "step " + std::to_string(stepCount + 1) + " of " + std::to_string(numTensors) +
                     " tensors, lossScale " + exact(options.lossScale) +
                     ", checkFinite " + (options.checkFinite ? "true" : "false");
  text += ", maxGradNorm " + (options.maxGradNorm ? exact(*options.maxGradNorm) : std::string("none"));
  text += ", clipValue " + (options.clipValue ? exact(*options.clipValue) : std::string("none"));
  // Which groups get each input: the ranks must move the same ones.
  std::vector<const StepInput *> inputs;
  for (const StepInput &input : options.inputs)
    inputs.push_back(&input);
  std::sort(inputs.begin(), inputs.end(), [](const StepInput *a, const StepInput *b) { return a->name < b->name; });
  for (const StepInput *input : inputs) {
    text += ", input " + input->name + " for groups";
    for (size_t g = 0; g < input->perGroup.size(); ++g)
      if (!input->perGroup[g].empty())
        text += " " + std::to_string(g);
  }
  for (size_t g = 0; g < groups.size(); ++g) {
    text += "; group " + std::to_string(g) + " at step " + std::to_string(groups[g].steps + 1) + ":";
    for (size_t h = 0; h < hypers.size() && h < groups[g].hypers.size(); ++h)
      text += " " + hypers[h].name + "=" + exact(groups[g].hypers[h]);
  }
  return text;
}

} // namespace optrt::detail
