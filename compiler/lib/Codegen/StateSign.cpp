#include "optdsl/Codegen/StateSign.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Math/IR/Math.h"

#include "llvm/ADT/DenseMap.h"

namespace optdsl::codegen {

using namespace mlir;

namespace {

/// Proves values >= 0 (or NaN) under the hypothesis that state `state`'s
/// start-of-step value is.
class SignProver {
public:
  explicit SignProver(StringRef state) : state_(state) {}

  bool nonNegative(Value value) {
    auto [it, inserted] = memo_.try_emplace(value, false);
    if (!inserted)
      return it->second; // a cycle cannot happen in SSA; false is the safe answer
    bool result = compute(value);
    memo_[value] = result;
    return result;
  }

private:
  bool compute(Value value) {
    if (auto argument = dyn_cast<BlockArgument>(value)) {
      // An element-region argument is the uniform region's yield of the
      // same number; uniform-region arguments are reductions: unknown.
      auto phase = dyn_cast<opt::PhaseOp>(argument.getOwner()->getParentOp());
      if (!phase || argument.getOwner() != &phase.getElementBody())
        return false;
      Operation *yield = phase.getUniformBody().getTerminator();
      return nonNegative(yield->getOperand(argument.getArgNumber()));
    }
    Operation *op = value.getDefiningOp();
    if (auto constant = dyn_cast<arith::ConstantOp>(op)) {
      auto number = dyn_cast<FloatAttr>(constant.getValue());
      return number && !number.getValue().isNegative();
    }
    if (auto load = dyn_cast<opt::LoadStateOp>(op))
      return load.getState() == state_;
    if (auto reload = dyn_cast<opt::ReloadOp>(op))
      return reload.getState() && *reload.getState() == state_;
    if (isa<opt::StepOp, math::SqrtOp, math::AbsFOp, math::ExpOp>(op))
      return true;
    auto all = [&] { return llvm::all_of(op->getOperands(), [&](Value v) { return nonNegative(v); }); };
    if (isa<arith::MulFOp>(op))
      return productNonNegative(op);
    if (isa<arith::DivFOp, arith::AddFOp, arith::MinimumFOp, arith::MinNumFOp,
            arith::ExtFOp, arith::TruncFOp>(op))
      return all();
    if (isa<arith::MaximumFOp, arith::MaxNumFOp>(op))
      return nonNegative(op->getOperand(0)) || nonNegative(op->getOperand(1));
    if (auto select = dyn_cast<arith::SelectOp>(op))
      return nonNegative(select.getTrueValue()) && nonNegative(select.getFalseValue());
    if (isa<math::PowFOp>(op))
      return nonNegative(op->getOperand(0));
    return false;
  }

  /// A product is >= 0 when every factor that occurs an odd number of times
  /// is: c * g * g (the EMA of grad² as written) has g twice.
  bool productNonNegative(Operation *mul) {
    llvm::DenseMap<Value, int> count;
    SmallVector<Value> work(mul->getOperands());
    while (!work.empty()) {
      Value factor = work.pop_back_val();
      if (auto inner = factor.getDefiningOp<arith::MulFOp>())
        work.append(inner->operand_begin(), inner->operand_end());
      else
        ++count[factor];
    }
    for (auto &[factor, times] : count)
      if (times % 2 == 1 && !nonNegative(factor))
        return false;
    return true;
  }

  StringRef state_;
  llvm::DenseMap<Value, bool> memo_;
};

bool provedForState(opt::RuleOp rule, opt::StateOp state) {
  SignProver prover(state.getSymName());
  if (!state.getInit().empty()) {
    auto yield = cast<opt::YieldOp>(state.getInit().front().getTerminator());
    if (!prover.nonNegative(yield.getValues().front()))
      return false;
  }
  bool proved = true;
  rule.walk([&](opt::StoreStateOp store) {
    if (store.getState() == state.getSymName() && !prover.nonNegative(store.getValue()))
      proved = false;
  });
  return proved;
}

} // namespace

std::vector<bool> provedNonNegative(opt::RuleOp rule) {
  std::vector<bool> result;
  for (opt::StateOp state : rule.getBody().getOps<opt::StateOp>())
    result.push_back(!state.getScalar() && provedForState(rule, state));
  return result;
}

} // namespace optdsl::codegen
