#include "optdsl/Builtins.h"

#include "optdsl/AST.h"

#include <array>

namespace optdsl {

static constexpr std::array<BuiltinInfo, 32> kBuiltins = {{
    {"sqrt", Builtin::Sqrt, 1, false},      {"rsqrt", Builtin::Rsqrt, 1, false},
    {"exp", Builtin::Exp, 1, false},        {"log", Builtin::Log, 1, false},
    {"abs", Builtin::Abs, 1, false},        {"sign", Builtin::Sign, 1, false},
    {"min", Builtin::Min, 2, false},        {"max", Builtin::Max, 2, false},
    {"clamp", Builtin::Clamp, 3, false},    {"lerp", Builtin::Lerp, 3, false},
    {"pow", Builtin::Pow, 2, false},        {"floor", Builtin::Floor, 1, false},
    {"mod", Builtin::Mod, 2, false},        {"atan2", Builtin::Atan2, 2, false},
    {"cos", Builtin::Cos, 1, false},        {"sin", Builtin::Sin, 1, false},
    {"tanh", Builtin::Tanh, 1, false},      {"initial", Builtin::Initial, 1, false},
    {"given", Builtin::Given, 1, false},     {"random", Builtin::Random, 1, false},
    {"sum", Builtin::ReduceSum, 1, true},
    {"norm", Builtin::ReduceNorm, 1, true}, {"mean", Builtin::ReduceMean, 1, true},
    {"max", Builtin::ReduceMax, 1, true},
    {"group_sum", Builtin::GroupSum, 1, true, true},
    {"group_norm", Builtin::GroupNorm, 1, true, true},
    {"group_mean", Builtin::GroupMean, 1, true, true},
    {"group_max", Builtin::GroupMax, 1, true, true},
    {"row_sum", Builtin::RowSum, 1, true, false, kColAxis},
    {"row_mean", Builtin::RowMean, 1, true, false, kColAxis},
    {"col_sum", Builtin::ColSum, 1, true, false, kRowAxis},
    {"col_mean", Builtin::ColMean, 1, true, false, kRowAxis},
}};

Builtin perTensorReduction(Builtin builtin) {
  switch (builtin) {
  case Builtin::GroupSum: return Builtin::ReduceSum;
  case Builtin::GroupNorm: return Builtin::ReduceNorm;
  case Builtin::GroupMean: return Builtin::ReduceMean;
  case Builtin::GroupMax: return Builtin::ReduceMax;
  default: return builtin;
  }
}

const BuiltinInfo *lookupBuiltin(const std::string &name, unsigned arity) {
  for (const BuiltinInfo &info : kBuiltins)
    if (name == info.name && arity == info.arity)
      return &info;
  return nullptr;
}

std::vector<const BuiltinInfo *> builtinsNamed(const std::string &name) {
  std::vector<const BuiltinInfo *> found;
  for (const BuiltinInfo &info : kBuiltins)
    if (name == info.name)
      found.push_back(&info);
  return found;
}

const BuiltinInfo &builtinInfo(Builtin id) {
  for (const BuiltinInfo &info : kBuiltins)
    if (info.id == id)
      return info;
  return kBuiltins[0];
}

std::vector<std::string> builtinNames() {
  std::vector<std::string> names;
  for (const BuiltinInfo &info : kBuiltins)
    if (names.empty() || names.back() != info.name)
      names.push_back(info.name);
  return names;
}

} // namespace optdsl
