// random(stream) in the CPU kernels against the interpreter: the draws are
// a function of the seed, the optimizer's step, the tensor's index among
// all of the optimizer's and the element's, so the kernels' must be the
// interpreter's bit for bit (24-bit values, exact in f32), for any thread
// count and chunking, in a layout that rounds stochastically too (its key
// slot is the one random() reads).
#include "optdsl/Interpreter.h"
#include "optdsl/JIT.h"
#include "optdsl/Sema.h"
#include "optrt/Layout.h"
#include "optrt/Optimizer.h"
#include "optrt/Storage.h"

#include "common/CheckedText.h"

#include <gtest/gtest.h>

#include <random>
#include <sstream>

namespace optdsl {
namespace {

const char *kRule = R"(optimizer noisy {
  hyper lr = 0.1;
  state a;
  state b;
  a = random(0);
  b = random(3);
  param = param - lr * grad;
})";

CheckedRule checked() { return test::checkedText(kRule, "noisy.opt"); }

/// The states a and b of every tensor after `steps` steps of two groups,
/// params stored in the layout's param dtype.
std::vector<std::vector<float>> run(const std::string &layout, unsigned threads, int steps,
                                    const std::vector<std::vector<size_t>> &groups) {
  CheckedRule rule = checked();
  auto kernels = jitCompile(rule, {}, {layout});
  EXPECT_TRUE(kernels->usesRandom);
  optrt::OptimizerOptions options;
  options.threads = threads;
  options.chunkElements = 1000;
  options.layout = layout;
  options.seed = 11;
  optrt::Optimizer optimizer(kernels, options);
  optrt::Dtype paramDtype = optrt::Layout::parse(layout).param;
  std::vector<std::vector<char>> params;
  std::vector<std::vector<float>> grads;
  std::vector<std::vector<const void *>> gradPointers;
  for (const auto &sizes : groups) {
    std::vector<void *> pointers;
    std::vector<const void *> group;
    for (size_t n : sizes) {
      std::vector<float> values(n, 1.5f);
      params.emplace_back(optrt::elementBytes(paramDtype, n));
      optrt::encodeF32(paramDtype, values, params.back().data(), nullptr);
      pointers.push_back(params.back().data());
      grads.emplace_back(n, 0.5f);
      group.push_back(grads.back().data());
    }
    optimizer.addGroupStored(pointers, sizes);
    gradPointers.push_back(group);
  }
  for (int step = 1; step <= steps; ++step)
    optimizer.stepStored(gradPointers);
  std::vector<std::vector<float>> states;
  for (size_t g = 0; g < groups.size(); ++g)
    for (size_t i = 0; i < groups[g].size(); ++i)
      for (const char *name : {"a", "b"}) {
        auto span = optimizer.state(name, static_cast<int>(g), i);
        states.emplace_back(span.begin(), span.end());
      }
  return states;
}

TEST(Random, KernelsDrawWhatTheInterpreterDraws) {
  CheckedRule rule = checked();
  std::vector<std::vector<size_t>> groups{{5, 3001}, {17}};
  Interpreter interpreter(rule);
  HyperValues values = interpreter.defaultHypers();
  for (int steps = 1; steps <= 3; ++steps) {
    SCOPED_TRACE("after step " + std::to_string(steps));
    std::vector<std::vector<float>> kernel = run("f32", 2, steps, groups);
    size_t first = 0, row = 0;
    for (const auto &sizes : groups) {
      std::vector<TensorState> tensors;
      std::vector<std::vector<double>> grads;
      for (size_t n : sizes) {
        tensors.push_back(interpreter.initTensor(std::vector<double>(n, 0.0), values));
        grads.emplace_back(n, 0.5);
      }
      // The state after step `steps` is that step's draw.
      interpreter.step(tensors, grads, steps, values, {}, {11, steps, first});
      for (const TensorState &tensor : tensors)
        for (size_t s = 0; s < 2; ++s, ++row) {
          ASSERT_EQ(kernel[row].size(), tensor.states[s].size());
          for (size_t i = 0; i < kernel[row].size(); ++i)
            ASSERT_EQ(static_cast<double>(kernel[row][i]), tensor.states[s][i]) << "row " << row << " element " << i;
        }
      first += sizes.size();
    }
  }
}

TEST(Random, TheSameForAnyThreadCount) {
  std::vector<std::vector<size_t>> groups{{70001}, {3, 999}};
  std::vector<std::vector<float>> one = run("f32", 1, 2, groups);
  EXPECT_EQ(run("f32", 2, 2, groups), one);
  EXPECT_EQ(run("f32", 3, 2, groups), one);
}

// A layout that rounds stochastically reads its key from the same slot:
// the draws are those of the f32 layout.
TEST(Random, TheSameInAStochasticallyRoundingLayout) {
  std::vector<std::vector<size_t>> groups{{4097}, {33}};
  EXPECT_EQ(run("param=bf16,master=f32,rounding=stochastic", 2, 3, groups), run("f32", 2, 3, groups));
}

} // namespace
} // namespace optdsl
