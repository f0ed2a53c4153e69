#include "Trainer.h"

#include "Rng.h"
#include "optrt/LossScaler.h"
#include "optrt/Optimizer.h"
#include "optrt/Storage.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <optional>

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

/// Tensors kept in a 16-bit dtype beside the model's f32 ones: the params of
/// a param=bf16/f16 layout (the optimizer updates them; the model computes
/// with their f32 values) or the grads of a grad=bf16/f16 layout.
struct Stored16 {
  optrt::Dtype dtype = optrt::Dtype::F32;
  std::vector<std::vector<uint16_t>> tensors;

  bool active() const { return dtype != optrt::Dtype::F32; }
  void encode(const std::vector<std::vector<float> *> &from) {
    tensors.resize(from.size());
    for (size_t t = 0; t < from.size(); ++t) {
      tensors[t].resize(from[t]->size());
      optrt::encodeF32(dtype, *from[t], tensors[t].data(), nullptr);
    }
  }
  void decode(const std::vector<std::vector<float> *> &into) const {
    for (size_t t = 0; t < into.size(); ++t)
      optrt::decodeToF32(dtype, tensors[t].data(), nullptr, *into[t]);
  }
};

/// The mean of every rank's value (equal slices: the batch's mean loss), added
/// in rank order so every rank gets the same bits; `value` without ranks.
double meanOverRanks(double value, const std::shared_ptr<optrt::Communicator> &communicator) {
  if (!communicator)
    return value;
  std::vector<double> all(static_cast<size_t>(communicator->size()));
  communicator->allGather(&value, all.data(), sizeof value);
  double sum = 0;
  for (double x : all)
    sum += x;
  return sum / static_cast<double>(all.size());
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
  // embeddings and biases do not. A 16-bit param layout keeps the params in
  // 16 bits (the optimizer's) and the model computes with their values.
  optrt::Layout layout = optrt::Layout::parse(spec.rule.layout);
  std::vector<std::vector<float> *> values, gradValues;
  for (auto &tensor : model.tensors()) {
    values.push_back(&tensor.value);
    gradValues.push_back(&tensor.grad);
  }
  Stored16 params{layout.param, {}}, grads16{layout.grad, {}};
  if (params.active()) {
    params.encode(values);
    params.decode(values);
  }
  if (grads16.active())
    grads16.encode(gradValues);
  std::vector<void *> decayParams, plainParams;
  std::vector<size_t> decaySizes, plainSizes;
  std::vector<std::vector<size_t>> decayShapes, plainShapes;
  std::vector<const void *> decayGrads, plainGrads;
  for (size_t t = 0; t < model.tensors().size(); ++t) {
    auto &tensor = model.tensors()[t];
    void *param = params.active() ? static_cast<void *>(params.tensors[t].data()) : tensor.value.data();
    const void *grad = grads16.active() ? static_cast<const void *>(grads16.tensors[t].data()) : tensor.grad.data();
    (tensor.decay ? decayParams : plainParams).push_back(param);
    (tensor.decay ? decaySizes : plainSizes).push_back(tensor.value.size());
    // As torch holds them: a bias is a vector (a rule's rank reads 1), a
    // weight a matrix.
    (tensor.decay ? decayShapes : plainShapes)
        .push_back(tensor.rows == 1 ? std::vector<size_t>{tensor.cols} : std::vector<size_t>{tensor.rows, tensor.cols});
    (tensor.decay ? decayGrads : plainGrads).push_back(grad);
  }
  optrt::OptimizerOptions options;
  options.threads = config.threads;
  options.layout = spec.rule.layout;
  options.communicator = config.communicator; // gradients averaged across ranks by the step
  // Ranks' shares are cut between chunks: smaller chunks even them out on a
  // model of a few hundred thousand parameters.
  if (config.communicator)
    options.chunkElements = 16384;
  optrt::Optimizer optimizer(spec.rule.kernels, options);
  std::map<std::string, double> plainHypers = spec.hypers;
  if (hasHyper(*spec.rule.kernels, "weight_decay"))
    plainHypers["weight_decay"] = 0;
  optimizer.addGroupStored(decayParams, decaySizes, spec.hypers, decayShapes);
  optimizer.addGroupStored(plainParams, plainSizes, plainHypers, plainShapes);
  const std::vector<std::vector<const void *>> grads{decayGrads, plainGrads};

  // Linear warm-up from 0 to the peak, then a cosine to minLrFraction x peak
  // at the last step (optax's warmup_cosine_decay_schedule; its count is the
  // step - 1). The schedule
  // scales the rule's lr; a rule without one runs as it is.
  bool scheduled = hasHyper(*spec.rule.kernels, "lr");
  if (scheduled) {
    double peak = optimizer.hyper("lr", 0);
    optimizer.schedule("lr", optrt::warmupCosine(0.0, peak, config.warmupSteps,
                                                 std::max(config.steps - 1, config.warmupSteps + 1),
                                                 config.minLrFraction * peak));
  }
  std::optional<optrt::DynamicLossScaler> scaler;
  if (config.lossScale < 0)
    scaler.emplace();
  optrt::StepOptions stepOptions;
  if (config.clip > 0)
    stepOptions.maxGradNorm = config.clip;
  if (config.lossScale > 0)
    stepOptions.lossScale = config.lossScale;

  RunResult result;
  result.label = spec.rule.runName();
  result.rule = spec.rule.label;
  result.layout = spec.rule.layout;
  result.memory = optimizer.memoryReport();
  result.memoryAllRanks = optimizer.memoryReportAllRanks();
  result.params = optimizer.numParams();
  result.stateBytesPerParam = optimizer.stateBytesPerParam();
  std::vector<size_t> curvePositions = validationPositions(corpus, config.model.context, config.evalPositions);
  result.curve.push_back({0, std::numeric_limits<double>::quiet_NaN(),
                          evaluate(model, corpus.validation, curvePositions, pool)});

  // Every rank draws the whole batch (the same Rng) and keeps its slice.
  Rng batches(config.seed ^ 0x5eed5eed5eed5eedull);
  size_t ranks = config.communicator ? static_cast<size_t>(config.communicator->size()) : 1;
  size_t sliceBegin = config.communicator ? static_cast<size_t>(config.communicator->rank()) * batch / ranks : 0;
  size_t slice = batch / ranks;
  std::vector<uint8_t> contexts(slice * context), targets(slice);
  // Two intervals: a curve point's (its mean training loss) and a progress
  // line's (speed, gradient norm, skipped steps), a whole number of points.
  double intervalLoss = 0, intervalModel = 0, intervalOptimizer = 0, intervalNorm = 0;
  int intervalSteps = 0, intervalSkipped = 0, intervalNorms = 0, pointSteps = 0;
  double pointLoss = 0;
  const int printEvery = std::max(1, (config.printEvery + config.evalEvery - 1) / config.evalEvery) * config.evalEvery;
  for (int step = 1; step <= config.steps; ++step) {
    auto t0 = Clock::now();
    for (size_t b = 0; b < batch; ++b) {
      size_t p = context + batches.below(corpus.train.size() - context);
      if (b < sliceBegin || b >= sliceBegin + slice)
        continue;
      std::copy_n(&corpus.train[p - context], context, &contexts[(b - sliceBegin) * context]);
      targets[b - sliceBegin] = corpus.train[p];
    }
    double loss = meanOverRanks(model.forward(contexts.data(), targets.data(), slice, pool), config.communicator);
    optrt::StepOptions current = scaler ? scaler->stepOptions(stepOptions) : stepOptions;
    model.backward(pool, static_cast<float>(current.lossScale));
    if (grads16.active())
      grads16.encode(gradValues);
    auto t1 = Clock::now();
    optrt::StepResult stepped = optimizer.stepStored(grads, current);
    if (scaler)
      scaler->update(stepped);
    if (params.active() && !stepped.skipped)
      params.decode(values);
    auto t2 = Clock::now();
    if (stepped.skipped) {
      ++result.skippedSteps;
      ++intervalSkipped;
    }
    if (std::isfinite(stepped.gradNorm)) {
      intervalNorm += stepped.gradNorm;
      ++intervalNorms;
    }

    intervalModel += seconds(t0, t1);
    intervalOptimizer += seconds(t1, t2);
    intervalLoss += loss;
    ++intervalSteps;
    pointLoss += loss;
    ++pointSteps;
    if (!std::isfinite(loss))
      throw std::runtime_error("the training loss is " + std::to_string(loss) +
                               " at step " + std::to_string(step) + " (diverged; try a smaller lr)");
    if (step % config.evalEvery != 0 && step != config.steps)
      continue;
    double valLoss = evaluate(model, corpus.validation, curvePositions, pool);
    result.curve.push_back({step, pointLoss / pointSteps, valLoss});
    pointLoss = 0;
    pointSteps = 0;
    if (step % printEvery == 0 || step == config.steps) {
      result.modelSeconds += intervalModel;
      result.optimizerSeconds += intervalOptimizer;
      if (progress) {
        // The gradient norm (mean over the interval, unscaled, before
        // clipping) when the step reads it: with clipping or loss scaling.
        char norm[64] = "", skipped[64] = "";
        if (intervalNorms > 0)
          std::snprintf(norm, sizeof norm, "  grad-norm %.3f", intervalNorm / intervalNorms);
        if (config.lossScale != 0)
          std::snprintf(skipped, sizeof skipped, "  skipped %d (scale %g)", intervalSkipped,
                        scaler ? static_cast<double>(scaler->scale()) : config.lossScale);
        char line[320];
        std::snprintf(line, sizeof line,
                      "  %-10s step %5d/%d  lr %.2e  train %.3f  val %.3f%s%s  %6.1f steps/s  optimizer %.3f ms/step\n",
                      spec.rule.runName().c_str(), step, config.steps, scheduled ? optimizer.hyper("lr", 0) : 0.0,
                      intervalLoss / intervalSteps, valLoss, norm, skipped,
                      intervalSteps / (intervalModel + intervalOptimizer), 1e3 * intervalOptimizer / intervalSteps);
        *progress << line << std::flush;
      }
      intervalLoss = intervalModel = intervalOptimizer = intervalNorm = 0;
      intervalSteps = intervalSkipped = intervalNorms = 0;
    }
  }
  result.steps = config.steps;
  result.finalValLoss = evaluate(model, corpus.validation, validationPositions(corpus, config.model.context, 0), pool);
  result.wallSeconds = seconds(wallStart, Clock::now());
  return result;
}

} // namespace charlm
