// Bytes per parameter that a layout (Layout.h) costs for one rule's states
// over a set of tensors: param, grad, master and state separately, the
// numbers `optc --memory` and the runtime's report print.
#pragma once

#include "optrt/Layout.h"
#include "optrt/RuleKernels.h"

#include <cstddef>
#include <string>
#include <vector>

namespace optrt {

struct MemoryOptions {
  /// Tensors with fewer elements keep their q8 states in f32, as
  /// bitsandbytes does (its min_8bit_size, 4096). bf16/f16 states have no
  /// such fallback: they cost nothing extra to keep at any size.
  size_t smallTensorElements = 4096;
  uint32_t blockElements = 256; ///< absmax block of a q8 state
};

struct StateMemory {
  std::string name;
  bool scalar = false;
  double bytesPerParam = 0;
};

struct MemoryReport {
  size_t numParams = 0;
  size_t numTensors = 0;
  // Bytes per parameter, over every tensor.
  double param = 0, grad = 0, master = 0, state = 0;
  std::vector<StateMemory> states; ///< declaration order
  double total() const { return param + grad + master + state; }
  /// One line per part, e.g. "param 2.000 B/param".
  std::string str() const;
};

/// Validates the layout against the states first (validateLayout). A q8
/// state of a tensor of n >= smallTensorElements elements costs n bytes plus
/// 4 per block of blockElements (the absmax); a scalar state 8 bytes per
/// tensor. Throws std::invalid_argument for an empty tensor list or a zero
/// size.
MemoryReport memoryReport(const std::vector<StateInfo> &states, const Layout &layout,
                          const std::vector<size_t> &tensorSizes,
                          const MemoryOptions &options = {});

/// GPT-2 small's 148 parameter tensors (124,439,808 parameters): token and
/// position embeddings, 12 blocks (ln_1 w/b, c_attn w/b, c_proj w/b, ln_2
/// w/b, c_fc w/b, c_proj w/b), final ln w/b. The default of `optc --memory`.
std::vector<size_t> gpt2SmallTensorSizes();

} // namespace optrt
