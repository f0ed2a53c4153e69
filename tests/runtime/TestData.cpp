#include "TestData.h"

#include <bit>
#include <cmath>
#include <random>

namespace optrt::test {

const Shape &oddShape() {
  static const Shape shape = {{1, 70001, 17}, {7, 1000}};
  return shape;
}

GroupedTensors randomTensors(const Shape &shape, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  GroupedTensors tensors;
  for (const std::vector<size_t> &group : shape) {
    Tensors &out = tensors.emplace_back();
    for (size_t size : group) {
      std::vector<float> &tensor = out.emplace_back(size);
      for (float &x : tensor)
        x = normal(rng);
    }
  }
  return tensors;
}

std::vector<std::vector<const float *>> pointersTo(const GroupedTensors &tensors) {
  std::vector<std::vector<const float *>> pointers;
  for (const Tensors &group : tensors) {
    std::vector<const float *> &out = pointers.emplace_back();
    for (const std::vector<float> &tensor : group)
      out.push_back(tensor.data());
  }
  return pointers;
}

::testing::AssertionResult bitwiseEqual(std::span<const float> actual,
                                        std::span<const float> expected) {
  if (actual.size() != expected.size())
    return ::testing::AssertionFailure()
           << "sizes differ: " << actual.size() << " vs " << expected.size();
  for (size_t i = 0; i < actual.size(); ++i)
    if (std::bit_cast<uint32_t>(actual[i]) != std::bit_cast<uint32_t>(expected[i]))
      return ::testing::AssertionFailure()
             << "element " << i << " differs: " << actual[i] << " vs " << expected[i] << " (hex "
             << std::hexfloat << actual[i] << " vs " << expected[i] << ")";
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult bitwiseEqual(const GroupedTensors &actual,
                                        const GroupedTensors &expected) {
  if (actual.size() != expected.size())
    return ::testing::AssertionFailure() << "group counts differ";
  for (size_t g = 0; g < actual.size(); ++g) {
    if (actual[g].size() != expected[g].size())
      return ::testing::AssertionFailure() << "tensor counts of group " << g << " differ";
    for (size_t t = 0; t < actual[g].size(); ++t)
      if (auto result = bitwiseEqual(actual[g][t], expected[g][t]); !result)
        return result << " (tensor " << t << " of group " << g << ")";
  }
  return ::testing::AssertionSuccess();
}

Training::Training(std::shared_ptr<const RuleKernels> kernels, OptimizerOptions options,
                   GroupedTensors initialParams, const HyperOverrides &overrides)
    : params(std::move(initialParams)), optimizer(std::move(kernels), options) {
  for (size_t g = 0; g < params.size(); ++g) {
    std::vector<float *> pointers;
    std::vector<size_t> sizes;
    for (std::vector<float> &tensor : params[g]) {
      pointers.push_back(tensor.data());
      sizes.push_back(tensor.size());
    }
    optimizer.addGroup(pointers, sizes,
                       g < overrides.size() ? overrides[g] : std::map<std::string, double>{});
  }
}

} // namespace optrt::test
