#include "optdsl/Codegen/ElementLoop.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/IR/BuiltinAttributes.h"

#include <limits>

namespace optdsl::codegen {

using namespace mlir;

optrt::ReductionKind reductionKind(llvm::StringRef name) {
  // A group-wide reduction accumulates like its per-tensor kind; the runtime
  // combines the tensors (ReductionInfo::groupWide).
  name.consume_front("group_");
  if (name == "sum")
    return optrt::ReductionKind::Sum;
  if (name == "mean")
    return optrt::ReductionKind::Mean;
  if (name == "norm")
    return optrt::ReductionKind::Norm;
  return optrt::ReductionKind::Max;
}

std::vector<optrt::ReductionKind> phaseReductionKinds(opt::PhaseOp phase) {
  std::vector<optrt::ReductionKind> kinds;
  for (Attribute kind : phase.getReduce())
    kinds.push_back(reductionKind(cast<StringAttr>(kind).getValue()));
  return kinds;
}

Value reductionIdentity(OpBuilder &builder, Location loc, optrt::ReductionKind kind, int64_t width) {
  double value = kind == optrt::ReductionKind::Max ? -std::numeric_limits<double>::infinity() : 0.0;
  FloatAttr scalar = builder.getF64FloatAttr(value);
  if (width == 1)
    return builder.create<arith::ConstantOp>(loc, scalar);
  auto type = VectorType::get({width}, builder.getF64Type());
  return builder.create<arith::ConstantOp>(loc, DenseElementsAttr::get(type, scalar));
}

Value accumulateReduction(OpBuilder &builder, Location loc, optrt::ReductionKind kind, Value accumulator,
                          Value input, int64_t width) {
  Value wide = builder.create<arith::ExtFOp>(loc, laneType(builder.getF64Type(), width), input);
  if (kind == optrt::ReductionKind::Max)
    return builder.create<arith::MaximumFOp>(loc, accumulator, wide);
  if (kind == optrt::ReductionKind::Norm)
    wide = builder.create<arith::MulFOp>(loc, wide, wide);
  return builder.create<arith::AddFOp>(loc, accumulator, wide);
}

Value uniformAsType(OpBuilder &builder, Location loc, Value slotValue, Type type) {
  if (!type.isInteger(1))
    return slotValue;
  Value zero = builder.create<arith::ConstantOp>(loc, builder.getF32FloatAttr(0));
  return builder.create<arith::CmpFOp>(loc, arith::CmpFPredicate::UNE, slotValue, zero);
}

LoopBody::LoopBody(OpBuilder &builder, scf::ForOp loop) : builder_(builder) {
  Block *body = loop.getBody();
  implicitYield_ = body->mightHaveTerminator() ? body->getTerminator() : nullptr;
  if (implicitYield_)
    builder.setInsertionPoint(implicitYield_);
  else
    builder.setInsertionPointToEnd(body);
}

void LoopBody::yield(Location loc, ValueRange values) {
  builder_.create<scf::YieldOp>(loc, values);
  if (implicitYield_)
    implicitYield_->erase();
}

FailureOr<std::vector<Value>> emitElementLoop(OpBuilder &builder, Location loc, opt::PhaseOp phase,
                                              const BufferLayout &buffers, Value lower, Value upper, Value step,
                                              int64_t width, const std::vector<optrt::ReductionKind> &kinds,
                                              const std::vector<Value> &initial,
                                              const std::function<ElementAccess(Value index)> &access) {
  auto loop = builder.create<scf::ForOp>(loc, lower, upper, step, initial);
  OpBuilder::InsertionGuard guard(builder);
  LoopBody body(builder, loop);
  FailureOr<SmallVector<Value>> inputs =
      emitElementBody(builder, phase, buffers, width, access(loop.getInductionVar()));
  if (failed(inputs))
    return failure();
  std::vector<Value> next;
  for (size_t r = 0; r < kinds.size(); ++r)
    next.push_back(accumulateReduction(builder, loc, kinds[r], loop.getRegionIterArgs()[r], (*inputs)[r], width));
  body.yield(loc, next);
  return std::vector<Value>(loop.getResults().begin(), loop.getResults().end());
}

} // namespace optdsl::codegen
