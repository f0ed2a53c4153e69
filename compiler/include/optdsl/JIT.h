// In-process compilation of a rule to host code: opt dialect → kernels →
// LLVM → native code in this process (MLIR ExecutionEngine, O3, host CPU).
// The returned table keeps the compiled code alive.
#pragma once

#include "optdsl/Sema.h"
#include "optdsl/Transforms/Passes.h"
#include "optrt/RuleKernels.h"

#include <memory>
#include <string>
#include <vector>

namespace optdsl {

/// Builds the kernels of every written layout in `layouts` (optrt/Layout.h),
/// plus each q8 layout's small-tensor fallback. Throws std::runtime_error
/// carrying the compiler's diagnostics on failure, std::invalid_argument for
/// a fixed hyper the rule does not have or a layout it cannot take.
std::shared_ptr<const optrt::RuleKernels> jitCompile(const CheckedRule &rule,
                                                      const FixedHypers &fixed = {},
                                                      const std::vector<std::string> &layouts = {"f32"});

/// Loads, checks and compiles a .opt file.
std::shared_ptr<const optrt::RuleKernels> jitCompileFile(const std::string &path,
                                                          const FixedHypers &fixed = {},
                                                          const std::vector<std::string> &layouts = {"f32"});

} // namespace optdsl
