#include "optrt/MemoryReport.h"

#include "optrt/LayoutCheck.h"
#include "optrt/Storage.h"

#include <cstdio>
#include <stdexcept>

namespace optrt {

namespace {

size_t stateBytes(Dtype dtype, size_t n, const MemoryOptions &options) {
  bool q8 = dtype == Dtype::Q8Signed || dtype == Dtype::Q8Unsigned;
  if (!q8)
    return elementBytes(dtype, n);
  if (n < options.smallTensorElements)
    return elementBytes(Dtype::F32, n);
  return n + 4 * q8Blocks(n, options.blockElements);
}

} // namespace

MemoryReport memoryReport(const std::vector<StateInfo> &states, const Layout &layout,
                          const std::vector<size_t> &tensorSizes, const MemoryOptions &options) {
  validateLayout(layout, states);
  if (tensorSizes.empty())
    throw std::invalid_argument("memoryReport: no tensors");
  if (options.blockElements == 0)
    throw std::invalid_argument("memoryReport: blockElements is 0");
  MemoryReport report;
  report.numTensors = tensorSizes.size();
  size_t paramBytes = 0, gradBytes = 0, masterBytes = 0, allStateBytes = 0;
  std::vector<size_t> perState(states.size(), 0);
  for (size_t n : tensorSizes) {
    if (n == 0)
      throw std::invalid_argument("memoryReport: a tensor of size 0");
    report.numParams += n;
    paramBytes += elementBytes(layout.param, n);
    gradBytes += elementBytes(layout.grad, n);
    masterBytes += layout.master ? elementBytes(*layout.master, n) : 0;
    for (size_t s = 0; s < states.size(); ++s)
      perState[s] += states[s].scalar ? sizeof(double)
                                      : stateBytes(layout.stateDtype(states[s].name), n, options);
  }
  double params = static_cast<double>(report.numParams);
  for (size_t s = 0; s < states.size(); ++s) {
    allStateBytes += perState[s];
    report.states.push_back({states[s].name, states[s].scalar, perState[s] / params});
  }
  report.param = paramBytes / params;
  report.grad = gradBytes / params;
  report.master = masterBytes / params;
  report.state = allStateBytes / params;
  return report;
}

std::vector<size_t> gpt2SmallTensorSizes() {
  std::vector<size_t> sizes = {50257 * 768, 1024 * 768};
  for (int layer = 0; layer < 12; ++layer)
    for (size_t n : {768, 768, 768 * 2304, 2304, 768 * 768, 768, 768, 768, 768 * 3072, 3072,
                     3072 * 768, 768})
      sizes.push_back(n);
  sizes.push_back(768);
  sizes.push_back(768);
  return sizes;
}

std::string MemoryReport::str() const {
  char line[160];
  std::string text;
  auto add = [&](const char *part, double value) {
    std::snprintf(line, sizeof line, "%-16s %8.3f B/param\n", part, value);
    text += line;
  };
  add("param", param);
  add("grad", grad);
  add("master", master);
  add("state", state);
  for (const StateMemory &s : states)
    add(("  " + s.name).c_str(), s.bytesPerParam);
  add("total", total());
  std::snprintf(line, sizeof line, "(%zu parameters in %zu tensors)\n", numParams, numTensors);
  return text + line;
}

} // namespace optrt
