#include "RuleSource.h"

#include "optdsl/JIT.h"

#include <algorithm>
#include <stdexcept>

#ifndef CHARLM_DSL_DIR
#error "CHARLM_DSL_DIR must name the rule library directory"
#endif

namespace charlm {

const std::vector<std::string> &builtinRules() {
  static const std::vector<std::string> names{"adamw", "ademamix"};
  return names;
}

LoadedRule loadRule(const std::string &spec) {
  const auto &builtins = builtinRules();
  if (std::find(builtins.begin(), builtins.end(), spec) != builtins.end()) {
    // AMSGrad is off in this trainer: fixing the flag folds its branch away.
    optdsl::FixedHypers fixed;
    if (spec == "adamw")
      fixed["amsgrad"] = 0;
    auto kernels = optdsl::jitCompileFile(std::string(CHARLM_DSL_DIR) + "/" + spec + ".opt", fixed);
    return {kernels->name, "built-in", kernels};
  }
  auto kernels = optdsl::jitCompileFile(spec);
  return {kernels->name, spec, kernels};
}

} // namespace charlm
