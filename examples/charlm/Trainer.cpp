#include "Trainer.h"

#include "Rng.h"
#include "optrt/Optimizer.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>

namespace charlm {
namespace {

using Clock = std::chrono::steady_clock;

double seconds(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

bool hasHyper(const optrt::RuleKernels &rule, const std::string &name) {
  for (const auto &hyper : rule.hypers)
    if (hyper.name == name)
      return true;
  return false;
}

} // namespace

std::vector<size_t> validationPositions(const Corpus &corpus, int context, size_t count) {
  std::vector<size_t> all;
  for (size_t p = context; p < corpus.validation.size(); ++p)
    if (corpus.validationWindowKnown(p, context))
      all.push_back(p);
  if (count == 0 || count >= all.size())
    return all;
  std::vector<size_t> spread;
  for (size_t i = 0; i < count; ++i)
    spread.push_back(all[i * all.size() / count]);
  return spread;
}

double evaluate(Model<float> &model, const std::vector<uint8_t> &stream, const std::vector<size_t> &positions,
                ThreadPool &pool) {
  const size_t context = model.config().context, chunk = 1024;
  std::vector<uint8_t> contexts, targets;
  double total = 0;
  for (size_t start = 0; start < positions.size(); start += chunk) {
    size_t n = std::min(chunk, positions.size() - start);
    contexts.resize(n * context);
    targets.resize(n);
    for (size_t i = 0; i < n; ++i) {
      size_t p = positions[start + i];
      std::copy_n(&stream[p - context], context, &contexts[i * context]);
      targets[i] = stream[p];
    }
    total += model.forward(contexts.data(), targets.data(), n, pool) * static_cast<double>(n);
  }
  return total / static_cast<double>(positions.size());
}

RunResult train(const Corpus &corpus, const TrainConfig &config, const RunSpec &spec, std::ostream *progress) {
  auto wallStart = Clock::now();
  const size_t context = config.model.context, batch = config.batch;
  ThreadPool pool(config.threads);
  Model<float> model(config.model, config.seed);

  // Two groups, as a trainer sets them up in torch: weight matrices decay,
  // embeddings and biases do not.
  std::vector<float *> decayParams, plainParams;
  std::vector<size_t> decaySizes, plainSizes;
  std::vector<const float *> decayGrads, plainGrads;
  for (auto &tensor : model.tensors()) {
    (tensor.decay ? decayParams : plainParams).push_back(tensor.value.data());
    (tensor.decay ? decaySizes : plainSizes).push_back(tensor.value.size());
    (tensor.decay ? decayGrads : plainGrads).push_back(tensor.grad.data());
  }
  optrt::OptimizerOptions options;
  options.threads = config.threads;
  options.layout = spec.rule.layout;
  optrt::Optimizer optimizer(spec.rule.kernels, options);
  std::map<std::string, double> plainHypers = spec.hypers;
  if (hasHyper(*spec.rule.kernels, "weight_decay"))
    plainHypers["weight_decay"] = 0;
  optimizer.addGroup(decayParams, decaySizes, spec.hypers);
  optimizer.addGroup(plainParams, plainSizes, plainHypers);
  const std::vector<std::vector<const float *>> grads{decayGrads, plainGrads};

  // The schedule scales the rule's lr; a rule without one runs as it is.
  bool scheduled = hasHyper(*spec.rule.kernels, "lr");
  Schedule schedule{scheduled ? optimizer.hyper("lr", 0) : 0, config.warmupSteps, config.steps,
                    config.minLrFraction};

  RunResult result;
  result.label = spec.rule.runName();
  result.params = optimizer.numParams();
  result.stateBytesPerParam = optimizer.stateBytesPerParam();
  std::vector<size_t> curvePositions = validationPositions(corpus, config.model.context, config.evalPositions);
  result.curve.push_back({0, std::numeric_limits<double>::quiet_NaN(),
                          evaluate(model, corpus.validation, curvePositions, pool)});

  Rng batches(config.seed ^ 0x5eed5eed5eed5eedull);
  std::vector<uint8_t> contexts(batch * context), targets(batch);
  double intervalLoss = 0, intervalModel = 0, intervalOptimizer = 0;
  int intervalSteps = 0;
  for (int step = 1; step <= config.steps; ++step) {
    auto t0 = Clock::now();
    for (size_t b = 0; b < batch; ++b) {
      size_t p = context + batches.below(corpus.train.size() - context);
      std::copy_n(&corpus.train[p - context], context, &contexts[b * context]);
      targets[b] = corpus.train[p];
    }
    double loss = model.forward(contexts.data(), targets.data(), batch, pool);
    model.backward(pool);
    auto t1 = Clock::now();
    if (scheduled)
      optimizer.setHyper("lr", schedule.at(step));
    optimizer.step(grads);
    auto t2 = Clock::now();

    intervalModel += seconds(t0, t1);
    intervalOptimizer += seconds(t1, t2);
    intervalLoss += loss;
    ++intervalSteps;
    if (!std::isfinite(loss))
      throw std::runtime_error("the training loss is " + std::to_string(loss) +
                               " at step " + std::to_string(step) + " (diverged; try a smaller lr)");
    if (step % config.evalEvery == 0 || step == config.steps) {
      double valLoss = evaluate(model, corpus.validation, curvePositions, pool);
      result.curve.push_back({step, intervalLoss / intervalSteps, valLoss});
      result.modelSeconds += intervalModel;
      result.optimizerSeconds += intervalOptimizer;
      if (progress) {
        char line[256];
        std::snprintf(line, sizeof line,
                      "  %-10s step %5d/%d  lr %.2e  train %.3f  val %.3f  %6.1f steps/s  optimizer %.3f ms/step\n",
                      spec.rule.runName().c_str(), step, config.steps, scheduled ? schedule.at(step) : 0.0,
                      intervalLoss / intervalSteps, valLoss, intervalSteps / (intervalModel + intervalOptimizer),
                      1e3 * intervalOptimizer / intervalSteps);
        *progress << line << std::flush;
      }
      intervalLoss = intervalModel = intervalOptimizer = 0;
      intervalSteps = 0;
    }
  }
  result.steps = config.steps;
  result.finalValLoss = evaluate(model, corpus.validation, validationPositions(corpus, config.model.context, 0), pool);
  result.wallSeconds = seconds(wallStart, Clock::now());
  return result;
}

} // namespace charlm
