// The values at which a q8 quantiser must decide exactly like the reference
// (optrt::quantizeBlockwise): every threshold of the map and its f32
// neighbours, with both signs, every entry, zeros, tiny and subnormal values,
// +-1, +-Inf, NaN, and a dense log-uniform sweep of both signs over
// 1e-9 ... 1. All within [-1, 1] or non-finite, so a block led by 1.0 keeps
// absmax 1 and n is the value itself.
#pragma once

#include "optrt/Storage.h"

#include <cmath>
#include <random>
#include <vector>

namespace optdsl::test {

inline std::vector<float> q8BoundaryValues(const optrt::Q8Map &map, unsigned seed) {
  std::vector<float> values = {0.0f, -0.0f, 1e-30f, -1e-30f, 1e-40f, -1e-40f, 1.0f, -1.0f, INFINITY, -INFINITY, NAN};
  for (float t : map.thresholds())
    for (float x : {t, std::nextafter(t, -2.0f), std::nextafter(t, 2.0f)})
      for (float sign : {1.0f, -1.0f})
        values.push_back(sign * x);
  for (float v : map.values())
    values.push_back(v);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> exponent(-9.0f, 0.0f);
  for (int i = 0; i < 40000; ++i)
    values.push_back((i % 2 ? -1.0f : 1.0f) * std::pow(10.0f, exponent(rng)));
  return values;
}

} // namespace optdsl::test
