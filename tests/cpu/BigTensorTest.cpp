// A tensor of 2^31 + 17 elements, past every 32-bit index, stepped by
// AdamW in `param=bf16,grad=bf16,master=remainder,state=q8` (8 bytes per
// element: 17 GB; with f32 gradients it would be 21.5 GB, more than the
// 24 GB machines this runs on can spare). Its last q8 block (the 17 elements
// past 2^31) must come out bit for bit as the same values stepped alone, and
// within the storage's error of the float64 interpreter.
//
// Opt-in (OPTDSL_BIG_TENSOR_TEST=1) and only with the memory free: it needs
// 17 GB and a minute, so ctest reports it skipped otherwise. The lit tests
// cpu/index-64-bit.opt and cuda/index-64-bit.opt check the address
// arithmetic of every build.
#include "common/JitKernels.h"
#include "optdsl/Interpreter.h"
#include "optrt/Optimizer.h"
#include "optrt/Storage.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <string>

namespace optdsl {
namespace {

size_t availableBytes() {
  std::ifstream in("/proc/meminfo");
  std::string key, unit;
  size_t kb = 0;
  while (in >> key >> kb >> unit)
    if (key == "MemAvailable:")
      return kb * 1024;
  return 0;
}

/// The value of element i of the test's params and gradients: varied, and
/// cheap to compute for any index.
float paramAt(size_t i) { return std::sin(0.001f * static_cast<float>(i % 100003)); }
float gradAt(size_t i) { return 1e-2f * std::cos(0.0007f * static_cast<float>(i % 99991)); }

TEST(BigTensor, StepsPast2To31Elements) {
  const char *wanted = std::getenv("OPTDSL_BIG_TENSOR_TEST");
  if (!wanted || std::string(wanted) != "1")
    GTEST_SKIP() << "opt-in: OPTDSL_BIG_TENSOR_TEST=1 (needs 17 GB free and about a minute)";
  const size_t n = (size_t{1} << 31) + 17;
  if (availableBytes() < size_t{18} << 30)
    GTEST_SKIP() << "needs 18 GB free, " << (availableBytes() >> 30) << " GB available";
  const std::string layout = "param=bf16,grad=bf16,master=remainder,state=q8";
  auto kernels = test::jitKernels("adamw", {layout}, {{"amsgrad", 0.0}});

  std::vector<uint16_t> params(n), grads(n);
  for (size_t i = 0; i < n; ++i) {
    params[i] = optrt::f32ToBf16(paramAt(i));
    grads[i] = optrt::f32ToBf16(gradAt(i));
  }
  const size_t tail = 17, first = n - tail;
  std::vector<uint16_t> smallParams(params.begin() + first, params.end());
  std::vector<uint16_t> smallGrads(grads.begin() + first, grads.end());
  const std::vector<uint16_t> initial = smallParams;

  optrt::Optimizer big(kernels, {.layout = layout});
  big.addGroupStored({params.data()}, {n}, {{"lr", 0.01}});
  // The same 17 values alone, quantised as one q8 block of their own (no
  // small-tensor fallback), as they are in the big tensor's last block.
  optrt::Optimizer alone(kernels, {.layout = layout, .smallTensorElements = 0});
  alone.addGroupStored({smallParams.data()}, {tail}, {{"lr", 0.01}});
  for (int step = 0; step < 2; ++step) {
    big.stepStored({{grads.data()}});
    alone.stepStored({{smallGrads.data()}});
  }
  // Equal bf16 params after the second step need equal masters and states
  // after the first (reading the big tensor's state would decode all of it).
  for (size_t i = 0; i < tail; ++i)
    ASSERT_EQ(params[first + i], smallParams[i]) << "element 2^31 + " << i;

  // The float64 interpreter on the same values: within the bf16 rounding of
  // the param plus 5 % of how far it moved (q8 moments err by under 2 % of
  // the step).
  CheckedRule rule = loadRuleFile(test::ruleLibraryDir() + "/adamw.opt");
  Interpreter interpreter(rule);
  HyperValues hypers = interpreter.defaultHypers();
  interpreter.setHyper(hypers, "lr", 0.01);
  std::vector<double> init, grad;
  for (size_t i = 0; i < tail; ++i) {
    init.push_back(optrt::bf16ToF32(initial[i]));
    grad.push_back(optrt::bf16ToF32(smallGrads[i]));
  }
  std::vector<TensorState> tensors{interpreter.initTensor(init, hypers)};
  for (int step = 1; step <= 2; ++step)
    interpreter.step(tensors, {grad}, step, hypers);
  for (size_t i = 0; i < tail; ++i) {
    double ours = optrt::bf16ToF32(params[first + i]), moved = std::fabs(tensors[0].param[i] - init[i]);
    EXPECT_NEAR(ours, tensors[0].param[i], std::ldexp(std::fabs(ours), -8) + 0.05 * moved) << "element 2^31 + " << i;
  }
}

} // namespace
} // namespace optdsl
