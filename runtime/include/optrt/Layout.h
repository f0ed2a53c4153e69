// A precision layout: how each buffer of a rule is stored between steps
// (arithmetic is always f32). Its written form is shared by optc (--layout),
// CMake (optdsl_add_rule LAYOUTS) and the runtime (OptimizerOptions::layout):
//
//   f32                          everything f32 (the default)
//   param=bf16,master=f32        bf16 params with an f32 master copy
//   state=q8                     every elementwise state 8-bit block-wise
//   m1=q8,nu=f32                 per state, by name
//
//   param=bf16,master=f32,state=bf16,rounding=stochastic
//                                bf16 writes round stochastically
//
// Keys: param, grad, master, state (all states), or a state's name; values:
// f32 bf16 f16 q8; for master f32, remainder (with param=bf16: the 16 low
// bits that with the bf16 param are the exact f32 master, 2 bytes) or none;
// rounding=nearest|stochastic (how
// bf16/f16 writes round; default nearest). Later keys override earlier ones.
// The canonical form lists only what differs from f32, in the order param,
// grad, master, state, then named states in alphabetical order, then
// rounding=stochastic.
#pragma once

#include "optrt/artifact_abi.h"

#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace optrt {

enum class Dtype : uint32_t {
  F32 = OPTDSL_DTYPE_F32,
  BF16 = OPTDSL_DTYPE_BF16,
  F16 = OPTDSL_DTYPE_F16,
  Q8Signed = OPTDSL_DTYPE_Q8_SIGNED,
  Q8Unsigned = OPTDSL_DTYPE_Q8_UNSIGNED,
  Remainder = OPTDSL_DTYPE_REMAINDER, ///< master only: see artifact_abi.h
};

enum class BufferRole : uint32_t {
  Param = OPTDSL_BUFFER_PARAM,
  Grad = OPTDSL_BUFFER_GRAD,
  Master = OPTDSL_BUFFER_MASTER,
  State = OPTDSL_BUFFER_STATE,
  StateAbsmax = OPTDSL_BUFFER_STATE_ABSMAX,
  Input = OPTDSL_BUFFER_INPUT, ///< an input of the rule (`state` is its index), stored as the grad
  Dims = OPTDSL_BUFFER_DIMS, ///< int64_t matrices, rows, cols of the tensor
  AxisState = OPTDSL_BUFFER_AXIS_STATE, ///< an f32 state per row, column or matrix (`state` is its index)
};

/// "f32", "bf16", "f16", "q8" (either signedness), "q8s"/"q8u" when it matters.
std::string dtypeName(Dtype dtype);

/// One buffer a kernel receives, in the order of its buffers argument.
struct BufferDesc {
  BufferRole role; ///< what the buffer holds
  Dtype dtype; ///< how its values are stored
  int state = -1;              ///< index into RuleKernels::states for State/StateAbsmax, inputs for Input
  uint32_t blockElements = 0;  ///< absmax block of a q8 state
  bool operator==(const BufferDesc &) const = default; ///< field by field
};

/// A parsed layout, before it meets a rule (which says whether a named state
/// exists and whether q8 is signed).
struct Layout {
  Dtype param = Dtype::F32; ///< the params' storage
  Dtype grad = Dtype::F32; ///< the gradients' storage
  std::optional<Dtype> master; ///< none unless written
  std::optional<Dtype> states; ///< every state, unless overridden by name
  std::map<std::string, Dtype> stateOverrides; ///< per state name, overriding `states`
  /// bf16/f16 writes round stochastically (seeded, reproducible:
  /// docs/layouts.md) instead of to nearest even.
  bool stochastic = false;

  /// Throws std::invalid_argument naming the offending item: an unknown key
  /// or dtype, an empty item, a dtype the key cannot take (q8 params, a
  /// master that is not f32).
  static Layout parse(std::string_view text);
  /// The canonical written form ("f32" when everything is f32).
  std::string str() const;
  /// The storage of state `name`.
  Dtype stateDtype(const std::string &name) const;
  /// Whether every buffer is f32 (the written form is "f32").
  bool allF32() const { return str() == "f32"; }
};

} // namespace optrt
