// In-process compilation of a rule to host code: opt dialect → kernels →
// LLVM → native code in this process (MLIR ExecutionEngine, LLVM O2, host CPU).
// The returned table keeps the compiled code alive. The header names no
// MLIR or LLVM type, so a trainer that includes it compiles as fast as one
// that includes the runtime's headers (CheckedRule, from optdsl/Sema.h, is
// needed only to call jitCompile).
#pragma once

#include "optdsl/FixedHypers.h"
#include "optrt/RuleKernels.h"

#include <memory>
#include <string>
#include <vector>

namespace optdsl {

struct CheckedRule;

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
