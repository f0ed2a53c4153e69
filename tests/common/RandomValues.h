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

/// One tensor of normal values per size, drawn from `seed`: params a test
/// hands to addGroup (pointers()).
struct NormalTensors {
  NormalTensors(const std::vector<size_t> &sizes, uint32_t seed) {
    std::mt19937 rng(seed);
    for (size_t n : sizes)
      params.push_back(normalValues(n, rng));
  }
  std::vector<float *> pointers() {
    std::vector<float *> result;
    for (auto &p : params)
      result.push_back(p.data());
    return result;
  }
  std::vector<std::vector<float>> params;
};

} // namespace optdsl::test
