#include "optrt/MemoryReport.h"

#include "optrt/LayoutCheck.h"
#include "optrt/Shape.h"
#include "optrt/Storage.h"

#include <cstdio>
#include <stdexcept>

namespace optrt {

namespace {

// The bytes of `owned` elements of a state of a tensor of n elements.
size_t stateBytes(Dtype dtype, size_t n, size_t owned, const MemoryOptions &options) {
  bool q8 = dtype == Dtype::Q8Signed || dtype == Dtype::Q8Unsigned;
  if (!q8)
    return elementBytes(dtype, owned);
  if (n < options.smallTensorElements)
    return elementBytes(Dtype::F32, owned);
  return owned + 4 * q8Blocks(owned, options.blockElements);
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
  if (!options.ownedElements.empty() && options.ownedElements.size() != tensorSizes.size())
    throw std::invalid_argument("memoryReport: " + std::to_string(options.ownedElements.size()) +
                                " owned counts for " + std::to_string(tensorSizes.size()) + " tensors");
  if (std::string problem = shapeProblem(options.shapes, tensorSizes); !problem.empty())
    throw std::invalid_argument("memoryReport: " + problem);
  std::vector<size_t> perState(states.size(), 0);
  for (size_t t = 0; t < tensorSizes.size(); ++t) {
    size_t n = tensorSizes[t];
    MatrixView view = matrixView(options.shapes.empty() ? std::vector<size_t>{} : options.shapes[t], n);
    if (n == 0)
      throw std::invalid_argument("memoryReport: a tensor of size 0");
    size_t owned = options.ownedElements.empty() ? n : options.ownedElements[t];
    if (owned > n)
      throw std::invalid_argument("memoryReport: tensor " + std::to_string(t) + " owns " + std::to_string(owned) +
                                  " of its " + std::to_string(n) + " elements");
    report.numParams += n;
    paramBytes += elementBytes(layout.param, n);
    gradBytes += elementBytes(layout.grad, n);
    masterBytes += layout.master ? elementBytes(*layout.master, owned) : 0;
    for (size_t s = 0; s < states.size(); ++s)
      perState[s] += states[s].scalar                        ? sizeof(double)
                     : states[s].span == StateSpan::Rows ? sizeof(float) * view.batch * view.rows
                     : states[s].span == StateSpan::Cols ? sizeof(float) * view.batch * view.cols
                     : states[s].span == StateSpan::Matrices ? sizeof(float) * view.batch
                                                             : stateBytes(layout.stateDtype(states[s].name), n, owned, options);
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

std::vector<std::vector<size_t>> gpt2SmallTensorShapes() {
  std::vector<std::vector<size_t>> shapes = {{50257, 768}, {1024, 768}};
  for (int layer = 0; layer < 12; ++layer)
    for (std::vector<size_t> shape : std::vector<std::vector<size_t>>{
             {768}, {768}, {768, 2304}, {2304}, {768, 768}, {768}, {768}, {768}, {768, 3072}, {3072}, {3072, 768}, {768}})
      shapes.push_back(shape);
  shapes.push_back({768});
  shapes.push_back({768});
  return shapes;
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
