// opt-hoist-uniforms: per-tensor work of each phase moves out of the element
// region (see Passes.td).
#include "optdsl/Transforms/Passes.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/Matchers.h"

namespace optdsl {

#define GEN_PASS_DEF_HOISTUNIFORMS
#include "optdsl/Transforms/Passes.h.inc"

namespace {

using namespace mlir;

/// Reads an element's buffer: where per-element values start.
bool readsElement(Operation *op) {
  if (isa<opt::ParamOp, opt::GradOp, opt::GetInputOp, opt::RandomOp, opt::ReloadOp>(op))
    return true;
  auto load = dyn_cast<opt::LoadStateOp>(op);
  return load && load.getType().isF32();
}

class PhaseHoister {
public:
  explicit PhaseHoister(opt::PhaseOp phase)
      : phase_(phase), uniforms_(phase.getUniformBody()), elements_(phase.getElementBody()),
        yield_(uniforms_.getTerminator()) {}

  void run() {
    DenseSet<Value> perElement;
    for (Operation &op : elements_.without_terminator())
      if (readsElement(&op) || llvm::any_of(op.getOperands(), [&](Value v) { return perElement.contains(v); }))
        perElement.insert(op.getResults().begin(), op.getResults().end());
    for (Operation &op : llvm::make_early_inc_range(elements_.without_terminator())) {
      bool uniform = op.getNumResults() > 0 && !perElement.contains(op.getResult(0));
      if (uniform && !matchPattern(&op, m_Constant()))
        hoist(op);
    }
    // Element code reading a hoisted value now gets it as an argument.
    elements_.walk([&](Operation *op) {
      for (OpOperand &use : op->getOpOperands())
        if (use.get().getParentBlock() == &uniforms_)
          use.set(argumentFor(use.get()));
    });
    dropUnused();
  }

private:
  void hoist(Operation &op) {
    for (OpOperand &use : op.getOpOperands()) {
      Value operand = use.get();
      if (auto argument = dyn_cast<BlockArgument>(operand); argument && argument.getOwner() == &elements_)
        use.set(yield_->getOperand(argument.getArgNumber()));
      else if (Operation *constant = operand.getDefiningOp(); constant && constant->getBlock() == &elements_)
        use.set(uniformCopy(constant, operand));
    }
    op.moveBefore(yield_);
  }

  /// A constant of the element region, also materialised in the uniform one.
  Value uniformCopy(Operation *constant, Value value) {
    auto [it, inserted] = constants_.try_emplace(value);
    if (inserted) {
      OpBuilder builder(yield_);
      it->second = builder.clone(*constant)->getResult(0);
    }
    return it->second;
  }

  Value argumentFor(Value uniform) {
    for (auto [k, yielded] : llvm::enumerate(yield_->getOperands()))
      if (yielded == uniform)
        return elements_.getArgument(k);
    yield_->insertOperands(yield_->getNumOperands(), uniform);
    return elements_.addArgument(uniform.getType(), uniform.getLoc());
  }

  /// Element arguments, constants and inputs that nothing reads any more.
  void dropUnused() {
    SmallVector<Operation *> ops;
    for (Operation &op : elements_.without_terminator())
      ops.push_back(&op);
    for (Operation *op : llvm::reverse(ops))
      if (isOpTriviallyDead(op))
        op->erase();
    for (int k = static_cast<int>(elements_.getNumArguments()) - 1; k >= 0; --k)
      if (elements_.getArgument(k).use_empty()) {
        elements_.eraseArgument(k);
        yield_->eraseOperand(k);
      }
    for (int k = static_cast<int>(uniforms_.getNumArguments()) - 1; k >= 0; --k)
      if (uniforms_.getArgument(k).use_empty()) {
        uniforms_.eraseArgument(k);
        phase_->eraseOperand(k);
      }
  }

  opt::PhaseOp phase_;
  Block &uniforms_;
  Block &elements_;
  Operation *yield_;
  DenseMap<Value, Value> constants_;
};

struct HoistUniformsPass : impl::HoistUniformsBase<HoistUniformsPass> {
  void runOnOperation() override {
    getOperation().walk([](opt::PhaseOp phase) { PhaseHoister(phase).run(); });
  }
};

} // namespace
} // namespace optdsl
