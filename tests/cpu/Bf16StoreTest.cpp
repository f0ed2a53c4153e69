// The bf16 stores of the CPU kernels, value class by value class, against
// optrt::f32ToBf16: on a host with AVX512-BF16 the 16-lane stores use
// vcvtneps2bf16, which treats subnormal inputs as zero, and a vector holding
// a subnormal must be stored again by the bit arithmetic (cpu::storeBf16Fast).
// The rule stores the gradient itself (`m = grad`), so the stored state is
// exactly f32ToBf16(grad) for every lane; 16-lane vectors mix one subnormal
// with normal values (the slow branch) or hold none (the instruction), and
// the unaligned tail runs the scalar path.
#include "optdsl/JIT.h"
#include "optdsl/Sema.h"
#include "optrt/Optimizer.h"
#include "optrt/Storage.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <random>
#include <sstream>

namespace optdsl {
namespace {

std::vector<float> awkwardValues(std::mt19937 &rng) {
  std::vector<float> values;
  const float inf = std::numeric_limits<float>::infinity();
  for (float v : {0.0f, -0.0f, inf, -inf, std::numeric_limits<float>::denorm_min(), -1e-40f, 1.17e-38f,
                  std::numeric_limits<float>::min(), std::numeric_limits<float>::max(), -3.4e38f, 1.0f, -1.0f})
    values.push_back(v);
  // NaNs with payloads in the bits bf16 keeps and in those it drops.
  for (uint32_t bits : {0x7FC00000u, 0xFFC00001u, 0x7F800001u, 0x7FA5A5A5u, 0xFF812345u})
    values.push_back(std::bit_cast<float>(bits));
  // Ties and near-ties of the rounding: low halves 0x8000, 0x7FFF, 0x8001
  // under even and odd high halves, and the carry into the exponent.
  for (uint32_t high : {0x3F80u, 0x3F81u, 0x7F7Fu, 0x0080u, 0xBF80u})
    for (uint32_t low : {0x8000u, 0x7FFFu, 0x8001u, 0xFFFFu, 0x0000u})
      values.push_back(std::bit_cast<float>(high << 16 | low));
  std::uniform_int_distribution<uint32_t> anyBits;
  while (values.size() < 4096)
    values.push_back(std::bit_cast<float>(anyBits(rng)));
  return values;
}

TEST(Bf16Store, EveryValueClassAsTheReference) {
  auto source = std::make_shared<SourceFile>("copy.opt", "optimizer copy {\n  hyper lr = 0;\n  state m;\n"
                                                         "  m = grad;\n  param = param - lr * m;\n}\n");
  std::ostringstream diagnostics;
  auto rule = compileSource(source, diagnostics);
  ASSERT_TRUE(rule) << diagnostics.str();
  auto kernels = jitCompile(*rule, {}, {"state=bf16"});

  std::mt19937 rng(20261123);
  std::vector<float> values = awkwardValues(rng);
  // Three layouts of the same values: whole vectors without subnormals
  // (sorted so that they gather in a few vectors), vectors with exactly one,
  // and a tensor whose size leaves a scalar tail.
  std::vector<float> noSubnormalFirst = values;
  std::stable_partition(noSubnormalFirst.begin(), noSubnormalFirst.end(),
                        [](float v) { return std::fpclassify(v) != FP_SUBNORMAL; });
  for (const std::vector<float> &grads : {values, noSubnormalFirst}) {
    for (size_t size : {grads.size(), grads.size() - 7}) {
      optrt::OptimizerOptions options;
      options.layout = "state=bf16";
      options.threads = 1;
      optrt::Optimizer optimizer(kernels, options);
      std::vector<float> params(size, 1.0f);
      optimizer.addGroup({params.data()}, {size});
      optimizer.step({{grads.data()}});
      std::vector<float> stored = optimizer.readState("m", 0, 0);
      ASSERT_EQ(stored.size(), size);
      size_t subnormals = 0;
      for (size_t i = 0; i < size; ++i) {
        subnormals += std::fpclassify(grads[i]) == FP_SUBNORMAL;
        uint16_t expected = optrt::f32ToBf16(grads[i]);
        uint16_t got = static_cast<uint16_t>(std::bit_cast<uint32_t>(stored[i]) >> 16);
        ASSERT_EQ(got, expected) << "element " << i << " of " << size << ": grad bits 0x" << std::hex
                                 << std::bit_cast<uint32_t>(grads[i]);
        ASSERT_EQ(std::bit_cast<uint32_t>(stored[i]) & 0xFFFF, 0u) << "a bf16 value decodes with a zero low half";
      }
      EXPECT_GT(subnormals, 2u) << "the data must exercise the subnormal branch";
    }
  }
}

} // namespace
} // namespace optdsl
