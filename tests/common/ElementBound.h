// The per-step bound every backend's f32 kernels meet against the float64
// interpreter when both start from the kernels' own state (see
// tests/cpu/CpuKernelTest.cpp for the derivation):
//   |ours - ref| <= 1e-5 * (the largest change of this tensor in this step)
//                 + 4 * 2^-24 * |ref|  (roundings at the value's magnitude)
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

namespace optdsl::test {

/// `backend` names the kernels in failure messages ("kernel", "GPU").
inline void expectWithinElementBound(const std::vector<double> &before,
                                     const std::vector<double> &reference, const float *ours,
                                     const std::string &what, const char *backend = "kernel") {
  double largestChange = 0;
  for (size_t i = 0; i < reference.size(); ++i)
    largestChange = std::max(largestChange, std::fabs(reference[i] - before[i]));
  size_t bad = 0;
  for (size_t i = 0; i < reference.size(); ++i) {
    double bound = 1e-5 * largestChange + 4 * std::ldexp(std::fabs(reference[i]), -24);
    if (!(std::fabs(ours[i] - reference[i]) <= bound) && bad++ < 3)
      ADD_FAILURE() << what << " element " << i << ": " << backend << " " << ours[i]
                    << ", interpreter " << reference[i] << ", bound " << bound;
  }
  EXPECT_EQ(bad, 0u) << what << ": elements outside the bound";
}

} // namespace optdsl::test
