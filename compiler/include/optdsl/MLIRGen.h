// Builds the opt-dialect module of a checked rule. Every operation carries a
// FileLineColLoc into the user's .opt file, so IR diagnostics point there.
#pragma once

#include "optdsl/Sema.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/OwningOpRef.h"


namespace optdsl {

/// The dialects a rule's module uses: opt, arith, math.
void registerOptDSLDialects(mlir::DialectRegistry &registry);

/// Returns the module with the flat update (every hyper read as
/// opt.get_hyper; fixing hypers is opt-specialize-hypers' job), verified;
/// null (after emitting the verifier's diagnostics through the context) if
/// it does not verify.
mlir::OwningOpRef<mlir::ModuleOp> buildModule(mlir::MLIRContext &context, const CheckedRule &rule);

} // namespace optdsl
