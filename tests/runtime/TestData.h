// Random tensors in groups, the pointer tables Optimizer takes, bitwise
// comparison, and Training: an Optimizer together with the parameter buffers
// it points into, so they live and die together.
#pragma once

#include "optrt/Optimizer.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace optrt::test {

using Tensors = std::vector<std::vector<float>>;                   // one group: [tensor][element]
using GroupedTensors = std::vector<Tensors>;                       // [group][tensor][element]
using Shape = std::vector<std::vector<size_t>>;                    // [group][tensor] element counts
using HyperOverrides = std::vector<std::map<std::string, double>>; // per group

/// Odd sizes in two groups: 70001 spans two default chunks (65536), and with
/// small chunkElements 1000 and 70001 are cut into many uneven chunks.
const Shape &oddShape();

/// Normally distributed values; the same seed gives the same tensors.
GroupedTensors randomTensors(const Shape &shape, uint32_t seed);

std::vector<std::vector<const float *>> pointersTo(const GroupedTensors &tensors);

::testing::AssertionResult bitwiseEqual(std::span<const float> actual,
                                        std::span<const float> expected);
::testing::AssertionResult bitwiseEqual(const GroupedTensors &actual,
                                        const GroupedTensors &expected);

struct Training {
  Training(std::shared_ptr<const RuleKernels> kernels, OptimizerOptions options,
           GroupedTensors initialParams, const HyperOverrides &overrides = {});
  Training(const Training &) = delete;
  Training &operator=(const Training &) = delete;

  void step(const GroupedTensors &grads) { optimizer.step(pointersTo(grads)); }

  GroupedTensors params; // declared first: the optimizer points into it
  Optimizer optimizer;
};

} // namespace optrt::test
