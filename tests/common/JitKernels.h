// The JIT-compiled kernels of a library rule (dsl/<rule>.opt) for some
// layouts, compiled once per process and kept: tests step many optimizers
// over the same rule.
#pragma once

#include "common/RuleLibrary.h"
#include "optdsl/JIT.h"

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace optdsl::test {

inline std::shared_ptr<const optrt::RuleKernels> jitKernels(const std::string &rule,
                                                            const std::vector<std::string> &layouts,
                                                            const FixedHypers &fixed = {}) {
  // Never destroyed: JIT engines torn down during static destruction would
  // run after LLVM's own globals are gone.
  static auto &cache = *new std::map<std::string, std::shared_ptr<const optrt::RuleKernels>>();
  std::string key = rule;
  for (const std::string &layout : layouts)
    key += ";" + layout;
  for (const auto &[name, value] : fixed)
    key += ";" + name + "=" + std::to_string(value);
  auto &entry = cache[key];
  if (!entry)
    entry = jitCompileFile(ruleLibraryDir() + "/" + rule + ".opt", fixed, layouts);
  return entry;
}

} // namespace optdsl::test
