// The language's functions and reductions: one table serves sema (names,
// arity, "did you mean"), the interpreter and the code generators.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace optdsl {

enum class Builtin {
  Sqrt, Rsqrt, Exp, Log, Abs, Sign, Min, Max, Clamp, Lerp, Pow,
  Floor, Mod, Atan2, Cos, Sin, Tanh,
  Initial, // initial(hyper): its value when the group was added (a hidden scalar state)
  Given,   // given(input): 1 when the trainer passed the input this step, else 0
  Random,  // random(stream): per element, uniform in [0, 1), counter-based (seeded, reproducible)
  ReduceSum, ReduceNorm, ReduceMean, ReduceMax,
  // Over every tensor of the parameter group (BuiltinInfo::groupWide).
  GroupSum, GroupNorm, GroupMean, GroupMax,
  // Along one axis of each matrix (BuiltinInfo::reducedAxis): row_sum(x) is
  // each row's sum (over its columns), col_sum(x) each column's.
  RowSum, RowMean, ColSum, ColMean,
};

struct BuiltinInfo {
  const char *name;
  Builtin id;
  unsigned arity;
  bool isReduction;
  /// A reduction over every tensor of the parameter group, not one tensor.
  bool groupWide = false;
  /// Reduces along this axis only (optdsl::Axes; 0: over the whole tensor).
  unsigned reducedAxis = 0;
};

/// The per-tensor reduction a group-wide one combines like (group_sum: sum).
Builtin perTensorReduction(Builtin builtin);

/// The builtin called `name` with `arity` arguments (`max` is the elementwise
/// maximum with two arguments and a reduction with one).
const BuiltinInfo *lookupBuiltin(const std::string &name, unsigned arity);
/// Every builtin spelled `name`, whatever its arity (for arity errors).
std::vector<const BuiltinInfo *> builtinsNamed(const std::string &name);
const BuiltinInfo &builtinInfo(Builtin id);
std::vector<std::string> builtinNames();

} // namespace optdsl
