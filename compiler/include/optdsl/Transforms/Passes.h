// The passes over the opt dialect (declared in Passes.td) and the pipeline
// that prepares a rule for the backends: a flat opt.update in, one opt.phase
// per pass over memory out, uniform work hoisted, fixed hypers folded.
#pragma once

#include "optdsl/Dialect/OptDialect.h"
#include "optdsl/FixedHypers.h"
#include "optdsl/Sema.h"

#include "mlir/Pass/Pass.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"
#include "mlir/Pass/PassManager.h"

#include <map>
#include <string>

namespace optdsl {

#define GEN_PASS_DECL
#include "optdsl/Transforms/Passes.h.inc"

/// Throws std::invalid_argument when `fixed` names a hyper the rule does not
/// have or a value that is not finite (the pass reports the same as an IR
/// error; callers with a C++ API check first).
void checkFixedHypers(const CheckedRule &rule, const FixedHypers &fixed);

/// opt-specialize-hypers{fix}, canonicalize, cse, opt-split-phases,
/// opt-hoist-uniforms, canonicalize, cse: what the backends expect.
void buildKernelPrepPipeline(mlir::OpPassManager &pm, const FixedHypers &fixed);

/// MLIRGen's module of `rule` after buildKernelPrepPipeline: what every
/// backend starts from. Checks `fixed` first (checkFixedHypers: throws
/// std::invalid_argument). When a stage fails, returns null and sets
/// `failure` to what failed; the located errors went to the context's
/// diagnostic handler (an MLIRDiagnosticBridge).
mlir::OwningOpRef<mlir::ModuleOp> buildPreparedModule(mlir::MLIRContext &context, const CheckedRule &rule,
                                                      const FixedHypers &fixed, std::string &failure);

/// Registers the passes and the `opt-kernel-prep{fix=...}` pipeline with
/// MLIR's command-line registry (optc-opt).
void registerOptDSLPasses();

} // namespace optdsl
