// The model's analytic gradients against central finite differences, in
// double precision, for every element of every parameter tensor of a tiny
// model with two tanh layers (so the hidden-to-hidden path is covered).
#include "GradCheck.h"
#include "Rng.h"

#include <gtest/gtest.h>

#include <iostream>

namespace charlm {
namespace {

ModelConfig tinyConfig() {
  ModelConfig config;
  config.vocab = 7;
  config.context = 3;
  config.embed = 4;
  config.hidden = {6, 5};
  return config;
}

// A batch whose contexts repeat characters, so that the embedding gradient
// must sum several contributions into one row.
void tinyBatch(std::vector<uint8_t> &contexts, std::vector<uint8_t> &targets) {
  Rng rng(42);
  targets.resize(5);
  contexts.resize(targets.size() * 3);
  for (auto &id : contexts)
    id = static_cast<uint8_t>(rng.below(4)); // ids 4..6 never occur: their rows must get 0
  for (auto &id : targets)
    id = static_cast<uint8_t>(rng.below(7));
}

// The limit: with h = 1e-5 the central difference's truncation error is
// about h^2 |L'''| ~ 1e-10 and its rounding error about 1e-16 / h ~ 1e-11,
// both far below 1e-6 of a gradient of size >= 1e-7 (the floor below which
// errors count absolutely). A wrong term in backward() (a missing tanh',
// a transposed index, a missing 1/batch) gives errors of order 1: dropping
// tanh' in backward() gives 0.9 to 2 in every tensor below the output.
// Measured here: at most 8e-8.
TEST(GradCheck, EveryTensorMatchesFiniteDifferences) {
  Model<double> model(tinyConfig(), 7);
  std::vector<uint8_t> contexts, targets;
  tinyBatch(contexts, targets);
  auto checks = gradCheck(model, contexts, targets);
  ASSERT_EQ(checks.size(), 1u + 2 * 2 + 2); // embedding, two hidden layers, output
  for (const auto &check : checks) {
    EXPECT_TRUE(check.passed) << check.name << ": max relative error " << check.maxRelError
                              << ", max absolute error " << check.maxAbsError;
    EXPECT_LE(check.maxRelError, 1e-6) << check.name;
    std::cout << check.name << ": " << check.elements << " elements, max relative error " << check.maxRelError
              << "\n";
  }
}

// The check can fail: a gradient that is off by 1e-4 in one element of any
// tensor (relative error far above the limit) is reported for that tensor
// alone.
TEST(GradCheck, CatchesAWrongGradientInEachTensor) {
  std::vector<uint8_t> contexts, targets;
  tinyBatch(contexts, targets);
  size_t numTensors = Model<double>(tinyConfig(), 7).tensors().size();
  for (size_t bad = 0; bad < numTensors; ++bad) {
    Model<double> model(tinyConfig(), 7);
    auto checks = gradCheck(model, contexts, targets, {}, [&](Model<double> &m) {
      auto &grad = m.tensors()[bad].grad;
      grad[grad.size() / 2] += 1e-4;
    });
    for (size_t t = 0; t < checks.size(); ++t)
      EXPECT_EQ(checks[t].passed, t != bad) << "tampered tensor " << bad << ", checked " << checks[t].name;
  }
}

// float and double run the same code: their losses agree to float precision.
TEST(GradCheck, FloatModelComputesTheSameLoss) {
  Model<double> reference(tinyConfig(), 7);
  Model<float> model(tinyConfig(), 7);
  std::vector<uint8_t> contexts, targets;
  tinyBatch(contexts, targets);
  ThreadPool pool(1);
  for (size_t t = 0; t < model.tensors().size(); ++t)
    for (size_t i = 0; i < model.tensors()[t].value.size(); ++i)
      model.tensors()[t].value[i] = static_cast<float>(reference.tensors()[t].value[i]);
  double expected = reference.forward(contexts.data(), targets.data(), targets.size(), pool);
  double actual = model.forward(contexts.data(), targets.data(), targets.size(), pool);
  EXPECT_NEAR(actual, expected, 1e-5 * expected);
}

} // namespace
} // namespace charlm
