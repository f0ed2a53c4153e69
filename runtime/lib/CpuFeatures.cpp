// The instruction-set check behind loadArtifact: kernels compiled for
// AVX-512 die with SIGILL on a CPU without it, so an artifact names the
// features it needs and the loader refuses it up front instead.
#include "optrt/Artifact.h"

#include <string_view>

namespace optrt {

namespace {

// __builtin_cpu_supports wants a literal, hence one line per feature.
bool cpuHas(std::string_view feature) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (feature == "sse4.2")
    return __builtin_cpu_supports("sse4.2");
  if (feature == "avx")
    return __builtin_cpu_supports("avx");
  if (feature == "avx2")
    return __builtin_cpu_supports("avx2");
  if (feature == "fma")
    return __builtin_cpu_supports("fma");
  if (feature == "f16c")
    return __builtin_cpu_supports("f16c");
  if (feature == "avx512f")
    return __builtin_cpu_supports("avx512f");
  if (feature == "avx512bw")
    return __builtin_cpu_supports("avx512bw");
  if (feature == "avx512dq")
    return __builtin_cpu_supports("avx512dq");
  if (feature == "avx512vl")
    return __builtin_cpu_supports("avx512vl");
  if (feature == "avx512vbmi")
    return __builtin_cpu_supports("avx512vbmi");
  if (feature == "avx512bf16")
    return __builtin_cpu_supports("avx512bf16");
#endif
  return false;
}

} // namespace

std::string missingCpuFeatures(const std::string &features) {
  std::string missing;
  std::string_view rest = features;
  while (!rest.empty()) {
    size_t comma = rest.find(',');
    std::string_view feature = rest.substr(0, comma);
    if (!feature.empty() && !cpuHas(feature))
      missing += (missing.empty() ? "" : ",") + std::string(feature);
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
  }
  return missing;
}

} // namespace optrt
