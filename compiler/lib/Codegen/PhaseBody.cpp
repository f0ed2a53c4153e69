#include "optdsl/Codegen/PhaseBody.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/IRMapping.h"

#include <map>

namespace optdsl::codegen {

using namespace mlir;

BufferLayout::BufferLayout(opt::RuleOp rule) {
  for (opt::StateOp state : rule.getBody().getOps<opt::StateOp>())
    if (!state.getScalar()) {
      int buffer = 2 + static_cast<int>(stateBuffer_.size());
      stateBuffer_[state.getSymName()] = buffer;
      if (state.getAxis())
        axis_[buffer] = state.getAxis()->str();
    }
  // Every state is numbered by now, so input(index) is final.
  for (opt::InputOp input : rule.getBody().getOps<opt::InputOp>())
    inputBuffer_[input.getSymName()] = this->input(static_cast<int>(inputBuffer_.size()));
}

Type laneType(Type scalar, int64_t width) {
  return width == 1 ? scalar : VectorType::get({width}, scalar);
}

namespace {

bool isLaneScalar(Type type) { return type.isF32() || type.isInteger(1); }

class BodyEmitter {
public:
  BodyEmitter(OpBuilder &builder, const BufferLayout &buffers, int64_t width, const ElementAccess &access,
              SmallVector<Value> *accumulated, const DenseMap<Value, Value> *known)
      : builder_(builder), buffers_(buffers), width_(width), access_(access), accumulated_(accumulated),
        known_(known) {}

  FailureOr<SmallVector<Value>> run(opt::PhaseOp phase) {
    Block &body = phase.getElementBody();
    for (BlockArgument argument : body.getArguments()) {
      if (!isLaneScalar(argument.getType()))
        return phase.emitOpError("passes a ")
               << argument.getType() << " to its element region; run opt-hoist-uniforms first";
      Location loc = argument.getLoc();
      Value scalar = access_.uniform(builder_, loc, argument.getArgNumber(), argument.getType());
      scalarOf_[argument] = scalar;
      mapping_.map(argument, splat(loc, scalar));
    }
    // The last write to each buffer, emitted after every read: reads see
    // the buffer as the phase found it.
    std::map<int, std::pair<Location, Value>> writes;
    for (Operation &op : body.without_terminator()) {
      if (auto store = dyn_cast<opt::StoreParamOp>(op)) {
        writes.insert_or_assign(BufferLayout::kParam, std::make_pair(op.getLoc(), mapping_.lookup(store.getValue())));
      } else if (auto store = dyn_cast<opt::StoreStateOp>(op)) {
        writes.insert_or_assign(buffers_.state(store.getState()),
                                std::make_pair(op.getLoc(), mapping_.lookup(store.getValue())));
      } else if (auto accumulate = dyn_cast<opt::AccumulateOp>(op)) {
        if (!accumulated_)
          return accumulate.emitOpError("reduces rows or columns, which this backend does not build");
        accumulated_->push_back(mapping_.lookup(accumulate.getValue()));
      } else if (known_ && op.getNumResults() == 1 && known_->count(op.getResult(0))) {
        mapping_.map(op.getResult(0), known_->lookup(op.getResult(0)));
      } else if (failed(emit(op))) {
        return failure();
      }
    }
    for (const auto &[buffer, write] : writes)
      access_.store(builder_, write.first, buffer, write.second);
    SmallVector<Value> reductionInputs;
    for (Value input : body.getTerminator()->getOperands())
      reductionInputs.push_back(mapping_.lookup(input));
    return reductionInputs;
  }

private:
  Value splat(Location loc, Value scalar) {
    if (width_ == 1)
      return scalar;
    return builder_.create<vector::BroadcastOp>(loc, laneType(scalar.getType(), width_), scalar);
  }

  Value load(Location loc, int buffer) {
    auto [it, inserted] = loaded_.try_emplace(buffer);
    if (inserted)
      it->second = access_.load(builder_, loc, buffer);
    return it->second;
  }

  LogicalResult emit(Operation &op) {
    Location loc = op.getLoc();
    Value result;
    if (isa<opt::ParamOp>(op)) {
      result = load(loc, BufferLayout::kParam);
    } else if (isa<opt::GradOp>(op)) {
      result = load(loc, BufferLayout::kGrad);
    } else if (auto input = dyn_cast<opt::GetInputOp>(op)) {
      result = loadInput(loc, input);
    } else if (auto random = dyn_cast<opt::RandomOp>(op)) {
      result = access_.random(builder_, loc, static_cast<int64_t>(random.getStream()));
    } else if (auto read = dyn_cast<opt::LoadStateOp>(op); read && read.getType().isF32()) {
      result = load(loc, buffers_.state(read.getState()));
    } else if (auto reload = dyn_cast<opt::ReloadOp>(op)) {
      result = load(loc, reload.getState() ? buffers_.state(*reload.getState()) : BufferLayout::kParam);
    } else if (auto constant = dyn_cast<arith::ConstantOp>(op); constant && isLaneScalar(constant.getType())) {
      result = splatConstant(constant);
    } else if (isa<arith::ArithDialect, math::MathDialect>(op.getDialect()) && op.getNumRegions() == 0 &&
               llvm::all_of(op.getResultTypes(), isLaneScalar)) {
      Operation *clone = builder_.clone(op, mapping_);
      for (OpResult lane : clone->getResults())
        lane.setType(laneType(lane.getType(), width_));
      return success();
    } else {
      return op.emitOpError("cannot run per element; run opt-hoist-uniforms first");
    }
    mapping_.map(op.getResult(0), result);
    return success();
  }

  /// An optional input is read only on the steps it was given (a branch on
  /// a uniform, the same for every element): otherwise 0, and no memory
  /// touched, so the trainer need not pass a buffer.
  Value loadInput(Location loc, opt::GetInputOp input) {
    int buffer = buffers_.input(input.getInput());
    if (!input.getGiven())
      return load(loc, buffer);
    auto [it, inserted] = loaded_.try_emplace(buffer);
    if (!inserted)
      return it->second;
    Type type = laneType(builder_.getF32Type(), width_);
    Value given = scalarOf_.lookup(input.getGiven());
    if (!given) // folded to a constant: the element region kept it
      given = builder_.clone(*input.getGiven().getDefiningOp())->getResult(0);
    auto branch = builder_.create<scf::IfOp>(
        loc, given,
        [&](OpBuilder &inner, Location at) { inner.create<scf::YieldOp>(at, access_.load(inner, at, buffer)); },
        [&](OpBuilder &inner, Location at) {
          Value zero = inner.create<arith::ConstantOp>(at, inner.getZeroAttr(type));
          inner.create<scf::YieldOp>(at, zero);
        });
    it->second = branch.getResult(0);
    return it->second;
  }

  Value splatConstant(arith::ConstantOp constant) {
    if (width_ == 1)
      return builder_.clone(*constant)->getResult(0);
    auto type = VectorType::get({width_}, constant.getType());
    return builder_.create<arith::ConstantOp>(constant.getLoc(),
                                              DenseElementsAttr::get(type, constant.getValue()));
  }

  OpBuilder &builder_;
  const BufferLayout &buffers_;
  int64_t width_;
  const ElementAccess &access_;
  SmallVector<Value> *accumulated_;
  const DenseMap<Value, Value> *known_;
  IRMapping mapping_;
  llvm::DenseMap<Value, Value> scalarOf_; // uniform argument -> its scalar, before the splat
  std::map<int, Value> loaded_;
};

} // namespace

FailureOr<SmallVector<Value>> emitElementBody(OpBuilder &builder, opt::PhaseOp phase, const BufferLayout &buffers,
                                              int64_t width, const ElementAccess &access,
                                              SmallVector<Value> *accumulated, const DenseMap<Value, Value> *known) {
  return BodyEmitter(builder, buffers, width, access, accumulated, known).run(phase);
}

SmallVector<opt::AccumulateOp> phaseAccumulations(opt::PhaseOp phase) {
  return llvm::to_vector(phase.getElementBody().getOps<opt::AccumulateOp>());
}

} // namespace optdsl::codegen
