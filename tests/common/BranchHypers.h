// Hyper values of each library rule that switch every branch on; shared by
// the tests that run the rules' kernels.
#pragma once

#include <algorithm>
#include <map>
#include <string>
#include <vector>

namespace optdsl::test {

/// Hyper values that switch every branch on (flags set, decoupled weight
/// decay, warm-ups), so the kernels are tested where the rules are most
/// complex. Coupled L2 decay (g = grad + weight_decay * param) stays 0 here:
/// where grad is close to -weight_decay * param the sum cancels, and f32 loses
/// digits there that float64 keeps (torch's own f32 loses the same ones), so
/// an element-by-element bound from f32 rounding cannot hold. The golden
/// cases check coupled decay against the peers' f32 instead (adam_l2,
/// sgd_nesterov, sgd_dampening, rmsprop_centered_momentum, adagrad_decay,
/// nadam_basic, radam_basic all decay).
inline const std::map<std::string, std::map<std::string, double>> kBranchHypers = {
    {"sgd", {{"momentum", 0.9}, {"nesterov", 1}}},
    {"adam", {{"amsgrad", 1}}},
    {"adamw", {{"amsgrad", 1}}},
    {"ademamix", {{"alpha_warmup", 10}, {"beta3_warmup", 10}, {"weight_decay", 0.1}, {"alpha", 5}}},
    {"nadam", {}},
    {"radam", {}},
    {"rmsprop", {{"centered", 1}, {"momentum", 0.9}}},
    {"adagrad", {{"lr_decay", 0.01}, {"initial_accumulator_value", 0.1}}},
    {"lion", {{"weight_decay", 0.1}}},
    {"lamb", {}},
    {"adam_atan2", {{"weight_decay", 0.1}}},
    {"lookahead_adamw", {{"k", 2}}}, // a synchronisation every other step
    {"adabound", {{"ams_bound", 1}, {"weight_decay", 0.1}, {"gamma", 0.5}}}, // the clamp binds from step 1
    {"adamw_clip", {{"max_grad_norm", 0.5}}}, // the global norm is above it: clipped
    {"adopt", {{"weight_decay", 0.1}, {"weight_decouple", 1}}},
    {"mars", {{"ams_bound", 1}, {"weight_decay", 0.1}}}, // decoupled by default
    {"schedulefree_adamw", {{"warmup_steps", 3}, {"weight_decay", 0.1}, {"r", 0.5}}},
    {"adabelief", {{"rectify", 1}, {"ams_bound", 1}, {"weight_decay", 0.1}}}, // decoupled by default
    {"adan", {{"max_grad_norm", 0.5}, {"weight_decay", 0.1}, {"weight_decouple", 1}}}, // clipped
    // bias correction, decoupled decay and a growth rate that binds
    {"prodigy", {{"use_bias_correction", 1}, {"weight_decay", 0.1}, {"growth_rate", 1.02}, {"d0", 1e-3}}},
    // a small batch, so that the ratio is clamped for some elements and not others
    {"sophia", {{"bs", 8}, {"lr", 1e-3}}},
    // bias correction, decoupled decay and a growth rate that binds
    {"dadapt_adam", {{"bias_correction", 1}, {"weight_decouple", 1}, {"weight_decay", 0.1}, {"growth_rate", 1.02},
                     {"d0", 1e-3}}},
    {"adafactor", {{"beta1", 0.9}, {"weight_decay", 0.1}, {"warmup_init", 1}}},
    {"came", {{"weight_decay", 0.1}}},
};

/// The library rules with a group-wide reduction (group_sum, group_norm...)
/// (SemaTest checks the list: these, lamb and mars are the rules with more
/// than one pass). lamb's (its global clipping) folds away under
/// cudaFixedHypers, as the CUDA tests build it.
inline const std::vector<std::string> kGroupWideRules = {"adamw_clip", "adan", "prodigy", "dadapt_adam"};

/// The library rules that take inputs besides the gradient (`input NAME;`).
inline const std::vector<std::string> kInputRules = {"sophia"};

/// The library rules that read tensors as matrices (`state v[rows];`,
/// row_mean, col_mean): tests give their tensors shapes. The CPU kernels
/// (sharded too) take them in every layout, the CUDA kernels in f32, bf16
/// and f16 layouts, not q8 yet (the top CMakeLists.txt keeps the same list,
/// OPTDSL_MATRIX_RULES, for the ptxas tests' layouts).
inline const std::vector<std::string> kMatrixRules = {"adafactor", "came"};

/// Hypers a rule is built with for the CUDA optimizer: lamb's global
/// clipping is a group-wide reduction, which folds away with max_grad_norm
/// fixed to 0 (dsl/lamb.opt).
inline std::map<std::string, double> cudaFixedHypers(const std::string &rule) {
  if (rule == "lamb")
    return {{"max_grad_norm", 0}};
  return {};
}

/// Every rule of the library (dsl/<name>.opt): the tests that run each rule
/// take this list (SemaTest checks it against the directory, so a new rule
/// file without its entry above fails).
inline std::vector<std::string> libraryRules() {
  std::vector<std::string> names;
  for (const auto &[name, hypers] : kBranchHypers)
    names.push_back(name);
  return names;
}

/// The library rules with CPU kernels: every one.
inline std::vector<std::string> kernelRules() { return libraryRules(); }

} // namespace optdsl::test
