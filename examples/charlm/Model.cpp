#include "Model.h"

#include "Gemm.h"
#include "Rng.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace charlm {

size_t ModelConfig::numParams() const {
  size_t n = static_cast<size_t>(vocab) * embed, in = static_cast<size_t>(context) * embed;
  for (int width : hidden) {
    n += in * width + width;
    in = width;
  }
  return n + in * vocab + vocab;
}

namespace {

/// tanh for float as a rational function (Eigen's generic_fast_tanh_float:
/// odd degree-13 over even degree-6 polynomial on [-7.99, 7.99], where
/// tanh is 1 in float beyond). Unlike std::tanh it vectorises: the library
/// call was a quarter of a training step. Within a few float ulps of
/// std::tanh (tests/charlm/ThreadsTest.cpp checks 2e-7 absolute).
inline float activation(float x) {
  const float clamp = 7.99881172180175781f;
  x = std::min(std::max(x, -clamp), clamp);
  float x2 = x * x;
  // Explicit fused multiply-adds: the same rounding whether the compiler
  // evaluates a call at run time or folds it (x beyond the clamp).
  float p = std::fma(x2, -2.76076847742355e-16f, 2.00018790482477e-13f);
  p = std::fma(x2, p, -8.60467152213735e-11f);
  p = std::fma(x2, p, 5.12229709037114e-08f);
  p = std::fma(x2, p, 1.48572235717979e-05f);
  p = std::fma(x2, p, 6.37261928875436e-04f);
  p = std::fma(x2, p, 4.89352455891786e-03f);
  p = x * p;
  float q = std::fma(x2, 1.19825839466702e-06f, 1.18534705686654e-04f);
  q = std::fma(x2, q, 2.26843463243900e-03f);
  q = std::fma(x2, q, 4.89352518554385e-03f);
  return p / q;
}

/// double (the gradient check): the exact function.
inline double activation(double x) { return std::tanh(x); }

} // namespace

float fastTanh(float x) { return activation(x); }

template <typename T> Model<T>::Model(const ModelConfig &config, uint64_t seed) : config_(config) {
  if (config.vocab < 2 || config.vocab > 256 || config.context < 1 || config.embed < 1 || config.hidden.empty())
    throw std::invalid_argument("model: vocab in [2, 256], context >= 1, embed >= 1 and a hidden layer needed");
  Rng rng(seed);
  auto add = [&](std::string name, size_t rows, size_t cols, bool decay, double scale) {
    Tensor tensor{std::move(name), rows, cols, decay, std::vector<T>(rows * cols), std::vector<T>(rows * cols)};
    for (T &x : tensor.value)
      x = static_cast<T>(scale * rng.normal());
    tensors_.push_back(std::move(tensor));
  };
  size_t in = static_cast<size_t>(config.context) * config.embed;
  add("embedding", config.vocab, config.embed, false, 1.0);
  for (size_t l = 0; l < config.hidden.size(); ++l) {
    size_t width = config.hidden[l];
    if (width < 1)
      throw std::invalid_argument("model: a hidden layer needs at least one unit");
    add("hidden" + std::to_string(l) + ".weight", in, width, true, 1.0 / std::sqrt(double(in)));
    add("hidden" + std::to_string(l) + ".bias", 1, width, false, 0.0);
    in = width;
  }
  add("output.weight", in, config.vocab, true, 0.1 / std::sqrt(double(in)));
  add("output.bias", 1, config.vocab, false, 0.0);
  activations_.resize(config.hidden.size());
}

template <typename T>
double Model<T>::forward(const uint8_t *contexts, const uint8_t *targets, size_t batch, ThreadPool &pool) {
  const size_t context = config_.context, embed = config_.embed, vocab = config_.vocab;
  const size_t inWidth = context * embed, layers = config_.hidden.size();
  batch_ = batch;
  contexts_.assign(contexts, contexts + batch * context);
  targets_.assign(targets, targets + batch);
  for (size_t i = 0; i < batch * context; ++i)
    if (contexts[i] >= vocab)
      throw std::out_of_range("model: token id out of the vocabulary");
  for (size_t b = 0; b < batch; ++b)
    if (targets[b] >= vocab)
      throw std::out_of_range("model: token id out of the vocabulary");

  inputs_.resize(batch * inWidth);
  for (size_t l = 0; l < layers; ++l)
    activations_[l].resize(batch * config_.hidden[l]);
  probs_.resize(batch * vocab);
  rowLoss_.resize(batch);

  const T *embedding = tensors_[0].value.data();
  // Rows of the batch are independent: one task does a range of rows through
  // every layer, so its activations stay in cache between layers.
  pool.parallelFor(batch, 4, [&](size_t begin, size_t end) {
    for (size_t b = begin; b < end; ++b)
      for (size_t c = 0; c < context; ++c)
        std::copy_n(embedding + contexts[b * context + c] * embed, embed, &inputs_[b * inWidth + c * embed]);
    const T *below = inputs_.data();
    size_t belowWidth = inWidth;
    for (size_t l = 0; l < layers; ++l) {
      const Tensor &weight = tensors_[1 + 2 * l], &bias = tensors_[2 + 2 * l];
      size_t width = config_.hidden[l];
      T *out = activations_[l].data();
      for (size_t b = begin; b < end; ++b)
        std::copy_n(bias.value.data(), width, out + b * width);
      gemmRows(begin, end, width, belowWidth, below, belowWidth, weight.value.data(), width, out, width, true);
      for (size_t i = begin * width; i < end * width; ++i)
        out[i] = activation(out[i]);
      below = out;
      belowWidth = width;
    }
    const Tensor &weight = tensors_[1 + 2 * layers], &bias = tensors_[2 + 2 * layers];
    T *logits = probs_.data();
    for (size_t b = begin; b < end; ++b)
      std::copy_n(bias.value.data(), vocab, logits + b * vocab);
    gemmRows(begin, end, vocab, belowWidth, below, belowWidth, weight.value.data(), vocab, logits, vocab, true);
    // Softmax and cross-entropy, shifted by the row maximum so exp never
    // overflows: loss = log(sum exp(z - max)) - (z_target - max).
    for (size_t b = begin; b < end; ++b) {
      T *row = logits + b * vocab;
      T max = *std::max_element(row, row + vocab);
      T target = row[targets[b]] - max;
      T sum = 0;
      for (size_t j = 0; j < vocab; ++j)
        sum += row[j] = std::exp(row[j] - max);
      rowLoss_[b] = std::log(sum) - target;
      for (size_t j = 0; j < vocab; ++j)
        row[j] /= sum;
    }
  });
  // The mean in a fixed order, in double: the same for any thread count.
  double total = 0;
  for (size_t b = 0; b < batch; ++b)
    total += rowLoss_[b];
  return total / static_cast<double>(batch);
}

template <typename T> void Model<T>::backward(ThreadPool &pool, T lossScale) {
  const size_t batch = batch_, context = config_.context, embed = config_.embed, vocab = config_.vocab;
  const size_t inWidth = context * embed, layers = config_.hidden.size();
  if (batch == 0)
    throw std::logic_error("model: backward() without forward()");

  // d (lossScale * loss) / d logits = (softmax - onehot) * lossScale / batch.
  delta_.resize(batch * vocab);
  const T scale = lossScale / static_cast<T>(batch);
  for (size_t b = 0; b < batch; ++b)
    for (size_t j = 0; j < vocab; ++j)
      delta_[b * vocab + j] = (probs_[b * vocab + j] - (j == targets_[b] ? T(1) : T(0))) * scale;

  // One linear layer y = x·W + bias, from the top down: given delta = dL/dy
  // (batch x out), dW = xᵀ·delta, dbias = column sums of delta, and
  // dL/dx = delta·Wᵀ, times tanh'(z) = 1 - tanh² when x is a tanh output.
  size_t outWidth = vocab;
  for (size_t layer = layers + 1; layer-- > 0;) {
    Tensor &weight = tensors_[1 + 2 * layer], &bias = tensors_[2 + 2 * layer];
    const std::vector<T> &below = layer == 0 ? inputs_ : activations_[layer - 1];
    size_t belowWidth = layer == 0 ? inWidth : config_.hidden[layer - 1];

    // dW (belowWidth x out) = belowᵀ (belowWidth x batch) · delta (batch x out):
    // each task owns a range of rows of dW, summed over the batch in order.
    transposed_.resize(belowWidth * batch);
    transpose(batch, belowWidth, below.data(), transposed_.data());
    pool.parallelFor(belowWidth, 4, [&](size_t begin, size_t end) {
      gemmRows(begin, end, outWidth, batch, transposed_.data(), batch, delta_.data(), outWidth,
               weight.grad.data(), outWidth, false);
    });
    pool.parallelFor(outWidth, 16, [&](size_t begin, size_t end) {
      for (size_t j = begin; j < end; ++j)
        bias.grad[j] = 0;
      for (size_t b = 0; b < batch; ++b)
        for (size_t j = begin; j < end; ++j)
          bias.grad[j] += delta_[b * outWidth + j];
    });

    // dL/dbelow (batch x belowWidth) = delta · Wᵀ.
    transposed_.resize(outWidth * belowWidth);
    transpose(belowWidth, outWidth, weight.value.data(), transposed_.data());
    deltaBelow_.resize(batch * belowWidth);
    pool.parallelFor(batch, 4, [&](size_t begin, size_t end) {
      gemmRows(begin, end, belowWidth, outWidth, delta_.data(), outWidth, transposed_.data(), belowWidth,
               deltaBelow_.data(), belowWidth, false);
      if (layer > 0)
        for (size_t i = begin * belowWidth; i < end * belowWidth; ++i)
          deltaBelow_[i] *= T(1) - below[i] * below[i];
    });
    delta_.swap(deltaBelow_);
    outWidth = belowWidth;
  }

  // Embeddings: each context slot adds its slice of dL/dinputs to the row of
  // its character. Serial: rows repeat within a batch, and it is cheap.
  std::vector<T> &embeddingGrad = tensors_[0].grad;
  std::fill(embeddingGrad.begin(), embeddingGrad.end(), T(0));
  for (size_t b = 0; b < batch; ++b)
    for (size_t c = 0; c < context; ++c) {
      T *row = &embeddingGrad[contexts_[b * context + c] * embed];
      const T *slice = &delta_[b * inWidth + c * embed];
      for (size_t e = 0; e < embed; ++e)
        row[e] += slice[e];
    }
}

template class Model<float>;
template class Model<double>;

} // namespace charlm
