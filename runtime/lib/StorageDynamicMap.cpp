// bitsandbytes' dynamic 8-bit map, create_dynamic_map(signed,
// max_exponent_bits=7, total_bits=8), rebuilt step by step in f32 exactly as
// torch evaluates it (tests/layouts compare it bit for bit with a dump of
// bitsandbytes 0.50.2 under torch 2.5.1):
//
//   for i in 0..6:                       # decades 1e-6 .. 1e0
//     n = 2^i + 1 (signed) or 2^(i+1) + 1 (unsigned)
//     b = torch.linspace(0.1, 1, n, dtype=float32)
//     means = (b[:-1] + b[1:]) / 2.0     # f32
//     entries += float32(10^(i-6)) * means   (and its negation if signed)
//   entries += [0, 1.0]; sort
#include "optrt/Storage.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

namespace optrt {

namespace {

// torch's CPU linspace kernel: start + step * i below half way, end - step *
// (n - i - 1) from there, in f32; AVX2/AVX-512 builds fuse each into an FMA.
std::vector<float> torchLinspace(float start, float end, int n, bool fused) {
  float step = (end - start) / static_cast<float>(n - 1);
  int halfway = n / 2;
  std::vector<float> out(n);
  for (int i = 0; i < n; ++i) {
    float k = static_cast<float>(i < halfway ? i : n - i - 1);
    if (i < halfway)
      out[i] = fused ? std::fma(step, k, start) : start + step * k;
    else
      out[i] = fused ? std::fma(-step, k, end) : end - step * k;
  }
  return out;
}

} // namespace

std::array<float, 256> dynamicMap(bool isSigned, bool fusedLinspace) {
  // Python's 10 ** (i - 6) is a correctly rounded double; torch multiplies
  // an f32 tensor by it as an f32 scalar.
  static const double kDecades[7] = {1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1e0};
  std::vector<float> entries;
  for (int i = 0; i < 7; ++i) {
    int n = isSigned ? (1 << i) + 1 : (1 << (i + 1)) + 1;
    std::vector<float> b = torchLinspace(0.1f, 1.0f, n, fusedLinspace);
    float scale = static_cast<float>(kDecades[i]);
    for (int k = 0; k + 1 < n; ++k) {
      float mean = (b[k] + b[k + 1]) / 2.0f;
      entries.push_back(scale * mean);
      if (isSigned)
        entries.push_back(-scale * mean);
    }
  }
  entries.push_back(0.0f);
  entries.push_back(1.0f);
  std::array<float, 256> map{};
  if (entries.size() != map.size())
    throw std::logic_error("dynamicMap: built " + std::to_string(entries.size()) + " entries");
  std::sort(entries.begin(), entries.end());
  std::copy(entries.begin(), entries.end(), map.begin());
  return map;
}

} // namespace optrt
