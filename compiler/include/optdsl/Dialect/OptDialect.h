// The opt dialect: C++ declarations generated from OptOps.td.
#pragma once

#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Dialect.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/PatternMatch.h"
#include "mlir/IR/SymbolTable.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#include "optdsl/Dialect/OptOpsDialect.h.inc"

#define GET_OP_CLASSES
#include "optdsl/Dialect/OptOps.h.inc"

#include "optrt/HyperRange.h"

namespace optdsl::opt {

/// The range an opt.hyper declares (unbounded without one).
optrt::HyperRange hyperRange(HyperOp hyper);
/// Sets the range attributes of `hyper`; an infinite bound is left absent.
void setHyperRange(HyperOp hyper, const optrt::HyperRange &range);

} // namespace optdsl::opt
