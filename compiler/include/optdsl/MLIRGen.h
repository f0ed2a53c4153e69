// Builds the opt-dialect module of a checked rule. Every operation carries a
// FileLineColLoc into the user's .opt file, so IR diagnostics point there.
#pragma once

#include "optdsl/Sema.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/OwningOpRef.h"

#include <map>
#include <string>

namespace optdsl {

/// The dialects a rule's module uses: opt, arith, math.
void registerOptDSLDialects(mlir::DialectRegistry &registry);

/// Hypers whose value is fixed when the kernels are built: their reads
/// become constants, so branches on them fold away (AdamW's amsgrad = 0
/// drops max_exp_avg_sq's loads and stores).
using FixedHypers = std::map<std::string, double>;

/// Returns the module, verified; null (after emitting the verifier's
/// diagnostics through the context) if it does not verify. Throws
/// std::invalid_argument when `fixed` names a hyper the rule does not have.
mlir::OwningOpRef<mlir::ModuleOp> buildModule(mlir::MLIRContext &context, const CheckedRule &rule,
                                              const FixedHypers &fixed = {});

} // namespace optdsl
