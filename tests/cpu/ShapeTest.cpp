// Tensor shapes through the runtime (Optimizer::addGroup's shapes): what a
// rule's `rank`, `rows` and `cols` read in the kernels, checked against the
// interpreter on matrices, vectors and a rank-3 tensor; the shapes are the
// optimizer's, not a checkpoint's; and a shape that does not hold its tensor
// is refused by name with nothing changed. The golden case mars_1d checks a
// library rule that branches on `rank` against its peer.
#include "optdsl/Interpreter.h"
#include "optdsl/JIT.h"
#include "optdsl/Sema.h"
#include "optrt/Optimizer.h"

#include "common/RandomValues.h"

#include "common/CheckedText.h"

#include <gtest/gtest.h>

#include <random>
#include <sstream>
#include <stdexcept>

namespace optdsl {
namespace {

// Each dimension moves the params differently, so a wrong one shows.
constexpr const char *kShapeRule = R"(optimizer shaped {
  hyper lr = 0.01;
  state m;
  m = 0.9 * m + grad;
  let scale = rank >= 2 ? 1 / sqrt(rows * cols) : 1 + rank;
  param = param - lr * scale * m + 1e-3 * rows - 1e-4 * cols;
})";

CheckedRule checked(const std::string &text) { return test::checkedText(text, "shaped.opt"); }

const std::vector<std::vector<size_t>> kShapes = {{6, 10}, {17}, {2, 3, 4}};
const std::vector<size_t> kSizes = {60, 17, 24};

struct Tensors : test::NormalTensors {
  explicit Tensors(uint32_t seed) : NormalTensors(kSizes, seed) {}
};

std::vector<std::vector<float>> gradsOf(int step) {
  std::mt19937 rng(100 + step);
  std::vector<std::vector<float>> grads;
  for (size_t n : kSizes)
    grads.push_back(test::normalValues(n, rng));
  return grads;
}

std::vector<const float *> pointersOf(const std::vector<std::vector<float>> &grads) {
  std::vector<const float *> result;
  for (const auto &g : grads)
    result.push_back(g.data());
  return result;
}

TEST(Shapes, KernelsReadRankRowsAndColsAsTheInterpreterDoes) {
  CheckedRule rule = checked(kShapeRule);
  EXPECT_FALSE(rule.matrixShaped); // the dimensions alone: every backend takes it
  optrt::Optimizer optimizer(jitCompile(rule));
  Tensors tensors(1);
  optimizer.addGroup(tensors.pointers(), kSizes, {}, kShapes);
  EXPECT_EQ(optimizer.scalarState("shape(rank)", 0, 2), 3.0);
  EXPECT_EQ(optimizer.scalarState("shape(rows)", 0, 2), 3.0);
  EXPECT_EQ(optimizer.scalarState("shape(cols)", 0, 1), 17.0);
  EXPECT_EQ(optimizer.scalarState("shape(rows)", 0, 1), 1.0); // a vector is one row

  Interpreter interpreter(rule);
  HyperValues hypers = interpreter.defaultHypers();
  std::vector<TensorState> reference;
  for (size_t k = 0; k < kSizes.size(); ++k)
    reference.push_back(interpreter.initTensor(std::vector<double>(tensors.params[k].begin(), tensors.params[k].end()),
                                               hypers, std::vector<int64_t>(kShapes[k].begin(), kShapes[k].end())));
  for (int step = 1; step <= 3; ++step) {
    std::vector<std::vector<float>> grads = gradsOf(step);
    optimizer.step({pointersOf(grads)});
    std::vector<std::vector<double>> wide;
    for (const auto &g : grads)
      wide.emplace_back(g.begin(), g.end());
    interpreter.step(reference, wide, step, hypers);
  }
  for (size_t k = 0; k < kSizes.size(); ++k)
    for (size_t i = 0; i < kSizes[k]; ++i)
      EXPECT_NEAR(tensors.params[k][i], reference[k].param[i], 1e-5 * (1 + std::fabs(reference[k].param[i])))
          << "tensor " << k << " element " << i;
}

TEST(Shapes, WithoutShapesEveryTensorIsOneRow) {
  optrt::Optimizer optimizer(jitCompile(checked(kShapeRule)));
  Tensors tensors(2);
  optimizer.addGroup(tensors.pointers(), kSizes);
  for (size_t t = 0; t < kSizes.size(); ++t) {
    EXPECT_EQ(optimizer.scalarState("shape(rank)", 0, t), 1.0);
    EXPECT_EQ(optimizer.scalarState("shape(rows)", 0, t), 1.0);
    EXPECT_EQ(optimizer.scalarState("shape(cols)", 0, t), static_cast<double>(kSizes[t]));
  }
}

TEST(Shapes, ACheckpointKeepsTheLoadingOptimizersShapes) {
  auto kernels = jitCompile(checked(kShapeRule));
  optrt::Optimizer first(kernels), second(kernels);
  Tensors a(3), b(3);
  first.addGroup(a.pointers(), kSizes, {}, kShapes);
  // The same sizes read another way: 10 x 6, 17, 4 x 6.
  second.addGroup(b.pointers(), kSizes, {}, {{10, 6}, {17}, {4, 6}});
  std::vector<std::vector<float>> grads = gradsOf(1);
  first.step({pointersOf(grads)});
  std::stringstream saved;
  first.saveState(saved);
  second.loadState(saved);
  EXPECT_EQ(second.scalarState("shape(rows)", 0, 0), 10.0);
  EXPECT_EQ(second.scalarState("shape(cols)", 0, 2), 6.0);
  EXPECT_EQ(second.scalarState("shape(rank)", 0, 2), 2.0);
  EXPECT_EQ(second.stepCount(), 1);
}

TEST(Shapes, AShapeThatDoesNotHoldItsTensorIsRefusedByName) {
  optrt::Optimizer optimizer(jitCompile(checked(kShapeRule)));
  Tensors tensors(4);
  auto message = [&](std::vector<std::vector<size_t>> shapes) {
    try {
      optimizer.addGroup(tensors.pointers(), kSizes, {}, std::move(shapes));
    } catch (const std::invalid_argument &e) {
      return std::string(e.what());
    }
    return std::string("(accepted)");
  };
  EXPECT_EQ(message({{6, 10}, {17}, {2, 3, 5}}),
            "optrt::Optimizer::addGroup: group 0: tensor 2 has shape 2x3x5, which does not hold its 24 elements");
  EXPECT_EQ(message({{6, 10}, {17}}), "optrt::Optimizer::addGroup: group 0: 2 shapes but 3 tensors");
  EXPECT_EQ(message({{6, 10}, {}, {24}}),
            "optrt::Optimizer::addGroup: group 0: tensor 1 has an empty shape; a 1-D tensor of n elements is {n}");
  EXPECT_EQ(optimizer.numGroups(), 0);
  EXPECT_EQ(optimizer.addGroup(tensors.pointers(), kSizes, {}, kShapes), 0);
}

} // namespace
} // namespace optdsl
