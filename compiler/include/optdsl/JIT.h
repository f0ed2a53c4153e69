// In-process compilation of a rule to host code: opt dialect → kernels →
// LLVM → native code in this process (MLIR ExecutionEngine, O3, host CPU).
// The returned table keeps the compiled code alive.
#pragma once

#include "optdsl/Sema.h"
#include "optdsl/Transforms/Passes.h"
#include "optrt/RuleKernels.h"

#include <memory>
#include <string>

namespace optdsl {

/// Throws std::runtime_error carrying the compiler's diagnostics on failure,
/// std::invalid_argument for a fixed hyper the rule does not have.
std::shared_ptr<const optrt::RuleKernels> jitCompile(const CheckedRule &rule,
                                                      const FixedHypers &fixed = {});

/// Loads, checks and compiles a .opt file.
std::shared_ptr<const optrt::RuleKernels> jitCompileFile(const std::string &path,
                                                          const FixedHypers &fixed = {});

} // namespace optdsl
