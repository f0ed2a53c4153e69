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

/// What memoryReport assumes beyond the layout.
struct MemoryOptions {
  /// Tensors with fewer elements keep their q8 states in f32, as
  /// bitsandbytes does (its min_8bit_size, 4096). bf16/f16 states have no
  /// such fallback: they cost nothing extra to keep at any size.
  size_t smallTensorElements = 4096;
  uint32_t blockElements = 256; ///< absmax block of a q8 state
  /// A rank of a sharded optimizer: the elements of each tensor whose master
  /// and state it keeps (empty: all of them). Params and gradients stay
  /// whole on every rank, scalar states too; the small-tensor fallback is
  /// still decided by a tensor's full size.
  std::vector<size_t> ownedElements;
  /// Per tensor its dimensions (empty: every tensor 1-D): what a [rows] or
  /// [cols] state (StateSpan) holds. Their products must be the sizes.
  std::vector<std::vector<size_t>> shapes;
};

/// One state's share of a MemoryReport.
struct StateMemory {
  std::string name; ///< the state's name
  bool scalar = false; ///< one f64 per tensor rather than a value per element
  double bytesPerParam = 0; ///< its bytes over the parameters (q8 absmax included)
};

/// Bytes per parameter of a layout over a set of tensors.
struct MemoryReport {
  size_t numParams = 0; ///< elements of every tensor
  size_t numTensors = 0; ///< tensors counted
  double param = 0;  ///< bytes per parameter of the params, over every tensor
  double grad = 0;   ///< bytes per parameter of the gradients
  double master = 0; ///< bytes per parameter of the master copies
  double state = 0;  ///< bytes per parameter of every optimizer state
  std::vector<StateMemory> states; ///< declaration order
  /// Bytes per parameter of all parts together.
  double total() const { return param + grad + master + state; }
  /// One line per part, e.g. "param 2.000 B/param".
  std::string str() const;
};

/// Validates the layout against the states first (validateLayout). A q8
/// state of a tensor of n >= smallTensorElements elements costs n bytes plus
/// 4 per block of blockElements (the absmax); a scalar state 8 bytes per
/// tensor; a [rows] or [cols] state 4 bytes per row or column of each
/// matrix, whatever the layout (factored states stay f32). Throws std::invalid_argument for an empty tensor list, a zero
/// size, or ownedElements of another length or above a tensor's size.
MemoryReport memoryReport(const std::vector<StateInfo> &states, const Layout &layout,
                          const std::vector<size_t> &tensorSizes,
                          const MemoryOptions &options = {});

/// GPT-2 small's tensors as gpt2SmallTensorSizes, with their dimensions
/// (Hugging Face's order and Conv1D layout: c_attn.weight is 768x2304).
std::vector<std::vector<size_t>> gpt2SmallTensorShapes();

/// GPT-2 small's 148 parameter tensors (124,439,808 parameters): token and
/// position embeddings, 12 blocks (ln_1 w/b, c_attn w/b, c_proj w/b, ln_2
/// w/b, c_fc w/b, c_proj w/b), final ln w/b. The default of `optc --memory`.
std::vector<size_t> gpt2SmallTensorSizes();

} // namespace optrt
