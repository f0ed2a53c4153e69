// Fresh normal random values for tests that feed kernels random data.
#pragma once

#include <random>
#include <vector>

namespace optdsl::test {

/// n values drawn from N(0, scale^2).
inline std::vector<float> normalValues(size_t n, std::mt19937 &rng, float scale = 1.0f) {
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> values(n);
  for (float &x : values)
    x = normal(rng);
  return values;
}

} // namespace optdsl::test
