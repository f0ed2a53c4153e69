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
