#include "RuleSource.h"

#include "optdsl/JIT.h"
#include "optrt/Artifact.h"
#include "optrt/Spelling.h"

#include <algorithm>
#include <filesystem>
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
  static const std::vector<std::string> layouts{"f32",
                                                "state=bf16",
                                                "state=q8",
                                                "param=bf16,master=f32",
                                                "param=f16,grad=f16,master=f32",
                                                "param=bf16,grad=bf16,master=f32",
                                                "param=bf16,grad=bf16,master=f32,state=q8"};
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
  // A bare word that is no file is a misspelt built-in rather than a path.
  bool looksLikePath = spec.find('/') != std::string::npos || spec.ends_with(".opt");
  if (!looksLikePath && !std::filesystem::exists(spec)) {
    std::string names;
    for (const std::string &name : builtins)
      names += (names.empty() ? "" : ", ") + name;
    throw std::runtime_error("unknown rule '" + spec + "'" + optrt::didYouMean(spec, builtins) +
                             " (built-in rules: " + names + "; any other --rule is the path of a .opt file)");
  }
  auto kernels = optdsl::jitCompileFile(spec, {}, layouts);
  return {kernels->name, spec, kernels};
}

} // namespace charlm
