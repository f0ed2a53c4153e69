#include "optdsl/Dialect/OptDialect.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/OpImplementation.h"
#include "llvm/ADT/StringSwitch.h"

using namespace mlir;
using namespace optdsl::opt;

#include "optdsl/Dialect/OptOpsDialect.cpp.inc"

void OptDialect::initialize() {
  addOperations<
#define GET_OP_LIST
#include "optdsl/Dialect/OptOps.cpp.inc"
      >();
}

/// The declaration `name` refers to, if it is of kind T in the enclosing rule.
template <typename T> static T lookupInRule(Operation *user, FlatSymbolRefAttr name) {
  auto rule = user->getParentOfType<RuleOp>();
  return rule ? dyn_cast_or_null<T>(SymbolTable::lookupSymbolIn(rule, name)) : T();
}

LogicalResult GetHyperOp::verifySymbolUses(SymbolTableCollection &) {
  if (!lookupInRule<HyperOp>(*this, getHyperAttr()))
    return emitOpError("refers to '") << getHyper() << "', which is not a hyper of this rule";
  return success();
}

static LogicalResult verifyStateUse(Operation *op, FlatSymbolRefAttr name, Type type) {
  StateOp state = lookupInRule<StateOp>(op, name);
  if (!state)
    return op->emitOpError("refers to '") << name.getValue() << "', which is not a state of this rule";
  Type expected = state.getScalar() ? Type(Float64Type::get(op->getContext()))
                                    : Type(Float32Type::get(op->getContext()));
  if (type != expected)
    return op->emitOpError("state '") << name.getValue() << "' holds " << expected << ", not "
                                      << type;
  return success();
}

LogicalResult LoadStateOp::verifySymbolUses(SymbolTableCollection &) {
  return verifyStateUse(*this, getStateAttr(), getType());
}

LogicalResult StoreStateOp::verifySymbolUses(SymbolTableCollection &) {
  return verifyStateUse(*this, getStateAttr(), getValue().getType());
}

LogicalResult ReduceOp::verify() {
  bool known = llvm::StringSwitch<bool>(getKind())
                   .Cases("sum", "norm", "mean", "max", true)
                   .Default(false);
  if (!known)
    return emitOpError("unknown reduction '") << getKind() << "' (expected sum, norm, mean or max)";
  return success();
}

#define GET_OP_CLASSES
#include "optdsl/Dialect/OptOps.cpp.inc"
