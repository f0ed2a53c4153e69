#include "RuleSource.h"

#include "optdsl/JIT.h"
#include "optrt/Artifact.h"

#include <algorithm>
#include <stdexcept>

#if !defined(CHARLM_ADAMW_SO) || !defined(CHARLM_ADEMAMIX_SO)
#error "CHARLM_ADAMW_SO and CHARLM_ADEMAMIX_SO must name the built-in rules' artifacts"
#endif

namespace charlm {

const std::vector<std::string> &builtinRules() {
  static const std::vector<std::string> names{"adamw", "ademamix"};
  return names;
}

const std::vector<std::string> &builtinLayouts() {
  // Keep in step with LAYOUTS in examples/charlm/CMakeLists.txt.
  static const std::vector<std::string> layouts{"f32", "state=bf16", "state=q8", "param=bf16,master=f32",
                                                "param=f16,grad=f16,master=f32"};
  return layouts;
}

LoadedRule loadRule(const std::string &spec, const std::vector<std::string> &layouts) {
  const auto &builtins = builtinRules();
  if (std::find(builtins.begin(), builtins.end(), spec) != builtins.end()) {
    // AMSGrad is fixed off in the AdamW artifact: its branch and its
    // state are folded away.
    auto kernels = optrt::loadArtifact(spec == "adamw" ? CHARLM_ADAMW_SO : CHARLM_ADEMAMIX_SO);
    return {kernels->name, "built-in", kernels};
  }
  auto kernels = optdsl::jitCompileFile(spec, {}, layouts);
  return {kernels->name, spec, kernels};
}

} // namespace charlm
