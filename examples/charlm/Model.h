// The language model: a character MLP over a context window (Bengio et al.
// 2003, without the direct connections). The previous `context` characters
// are looked up in an embedding table and concatenated, pass through one or
// more tanh layers, and a linear layer gives the logits of the next
// character; the loss is the mean cross-entropy (nats per character).
//
// The forward and backward passes are written out. Templated on the scalar
// type: float for training, double for the finite-difference gradient check
// of the very same code.
//
// Parameters and gradients live here, in one vector per tensor, as in any
// framework; the optimizer (optrt) only gets pointers to them.
#pragma once

#include "ThreadPool.h"

#include <cstdint>
#include <string>
#include <vector>

namespace charlm {

struct ModelConfig {
  int vocab = 0;
  int context = 16;             // characters the model sees
  int embed = 16;               // embedding width per character
  std::vector<int> hidden{512}; // widths of the tanh layers

  /// Parameters in all tensors.
  size_t numParams() const;
};

template <typename T> class Model {
public:
  struct Tensor {
    std::string name;
    size_t rows, cols;
    /// Weight matrices decay; embeddings and biases do not (the usual
    /// AdamW practice: decay pulls what multiplies activations toward zero).
    bool decay;
    std::vector<T> value, grad;
  };

  /// Initialises every tensor from seed: embeddings N(0, 1), weights
  /// N(0, 1/fan_in) (LeCun, suits tanh), biases 0, output weights scaled
  /// down so that the first predictions are close to uniform.
  Model(const ModelConfig &config, uint64_t seed);

  const ModelConfig &config() const { return config_; }
  std::vector<Tensor> &tensors() { return tensors_; }
  const std::vector<Tensor> &tensors() const { return tensors_; }

  /// Mean cross-entropy of predicting targets[b] from contexts[b * context
  /// .. + context), b < batch. Keeps the activations for backward().
  double forward(const uint8_t *contexts, const uint8_t *targets, size_t batch, ThreadPool &pool);
  /// Gradients of the last forward()'s loss times lossScale (mixed-precision
  /// loss scaling: the scale enters at the top, as autograd's of a scaled
  /// loss), written (not added) to every tensor's grad.
  void backward(ThreadPool &pool, T lossScale = T(1));

private:
  ModelConfig config_;
  std::vector<Tensor> tensors_;
  // Activations of the last forward: inputs_ is the concatenated embeddings;
  // activations_[l] the output of tanh layer l; probs_ the softmax.
  size_t batch_ = 0;
  std::vector<uint8_t> contexts_, targets_;
  std::vector<T> inputs_, probs_, rowLoss_;
  std::vector<std::vector<T>> activations_;
  // Backward scratch: the gradient flowing down, its next value, transposes.
  std::vector<T> delta_, deltaBelow_, transposed_;
};

/// The float model's tanh (a vectorisable rational approximation).
float fastTanh(float x);

extern template class Model<float>;
extern template class Model<double>;

} // namespace charlm
