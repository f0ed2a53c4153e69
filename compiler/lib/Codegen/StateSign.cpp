#include "optdsl/Codegen/StateSign.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Math/IR/Math.h"

#include "llvm/ADT/DenseMap.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace optdsl::codegen {

using namespace mlir;

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

/// Real bounds of a value that is not NaN (NaN is allowed anywhere: both q8
/// maps store it as 0). Only `lower >= 0` is ever used as a conclusion, and
/// every operation below is monotone in each operand where it is used, with
/// 0 representable: rounding the exact result of an op whose exact bounds
/// are >= 0 gives a result >= 0. Endpoints are computed in double, which can
/// only matter for a product that underflows to -0 (refused by signbit).
struct Bounds {
  double lower = -kInf, upper = kInf;

  static Bounds unknown() { return {}; }
  static Bounds nonNegative() { return {0.0, kInf}; }
  bool provesNonNegative() const { return lower > 0 || (lower == 0 && !std::signbit(lower)); }
  /// inf - inf and 0 * inf make NaN endpoints: widen them.
  Bounds sane() const { return {std::isnan(lower) ? -kInf : lower, std::isnan(upper) ? kInf : upper}; }
};

double product(double a, double b) { return a == 0 || b == 0 ? 0.0 : a * b; }

Bounds multiply(Bounds a, Bounds b) {
  double c[4] = {product(a.lower, b.lower), product(a.lower, b.upper), product(a.upper, b.lower),
                 product(a.upper, b.upper)};
  return Bounds{*std::min_element(c, c + 4), *std::max_element(c, c + 4)}.sane();
}

/// An f64 bound as the f32 it truncates to, rounded outward.
double toF32(double v, bool up) {
  float f = static_cast<float>(v);
  if (up ? f < v : f > v)
    f = std::nextafter(f, up ? INFINITY : -INFINITY);
  return f;
}

/// Bounds of values under the hypothesis that state `state`'s start-of-step
/// value is >= 0.
class BoundsProver {
public:
  explicit BoundsProver(StringRef state) : state_(state) {}

  bool nonNegative(Value value) { return bounds(value).provesNonNegative(); }

  Bounds bounds(Value value) {
    auto [it, inserted] = memo_.try_emplace(value, Bounds::unknown());
    if (!inserted)
      return it->second; // a cycle cannot happen in SSA; unknown is the safe answer
    Bounds result = compute(value);
    memo_[value] = result;
    return result;
  }

private:
  Bounds compute(Value value) {
    if (auto argument = dyn_cast<BlockArgument>(value)) {
      // An element-region argument is the uniform region's yield of the
      // same number; uniform-region arguments are reductions: unknown.
      auto phase = dyn_cast<opt::PhaseOp>(argument.getOwner()->getParentOp());
      if (!phase || argument.getOwner() != &phase.getElementBody())
        return Bounds::unknown();
      Operation *yield = phase.getUniformBody().getTerminator();
      return bounds(yield->getOperand(argument.getArgNumber()));
    }
    Operation *op = value.getDefiningOp();
    auto operand = [&](unsigned i) { return bounds(op->getOperand(i)); };
    if (auto constant = dyn_cast<arith::ConstantOp>(op)) {
      auto number = dyn_cast<FloatAttr>(constant.getValue());
      if (!number)
        return Bounds::unknown();
      double v = number.getValueAsDouble();
      return std::isnan(v) ? Bounds::unknown() : Bounds{v, v};
    }
    if (auto hyper = dyn_cast<opt::GetHyperOp>(op)) {
      auto declared = SymbolTable::lookupNearestSymbolFrom<opt::HyperOp>(op, hyper.getHyperAttr());
      if (!declared)
        return Bounds::unknown();
      optrt::HyperRange range = opt::hyperRange(declared);
      return {range.lower, range.upper};
    }
    if (auto load = dyn_cast<opt::LoadStateOp>(op))
      return load.getState() == state_ ? Bounds::nonNegative() : Bounds::unknown();
    if (auto reload = dyn_cast<opt::ReloadOp>(op))
      return reload.getState() && *reload.getState() == state_ ? Bounds::nonNegative() : Bounds::unknown();
    if (isa<opt::StepOp>(op))
      return {1.0, kInf};
    if (isa<opt::RandomOp>(op))
      return {0.0, 1.0};
    if (isa<math::SqrtOp>(op)) {
      Bounds x = operand(0); // sqrt of a negative is NaN: allowed
      return {std::sqrt(std::max(x.lower, 0.0)), std::sqrt(std::max(x.upper, 0.0))};
    }
    if (isa<math::AbsFOp>(op)) {
      Bounds x = operand(0);
      double low = x.lower >= 0 ? x.lower : x.upper <= 0 ? -x.upper : 0.0;
      return {low, std::max(std::fabs(x.lower), std::fabs(x.upper))};
    }
    if (isa<math::ExpOp>(op)) {
      Bounds x = operand(0);
      return {std::exp(x.lower), std::exp(x.upper)};
    }
    if (isa<arith::AddFOp>(op))
      return Bounds{operand(0).lower + operand(1).lower, operand(0).upper + operand(1).upper}.sane();
    if (isa<arith::SubFOp>(op))
      return Bounds{operand(0).lower - operand(1).upper, operand(0).upper - operand(1).lower}.sane();
    if (isa<arith::NegFOp>(op))
      return {-operand(0).upper, -operand(0).lower};
    if (isa<arith::MulFOp>(op)) {
      Bounds result = multiply(operand(0), operand(1));
      return result.provesNonNegative() || !productOfEvenPowers(op) ? result : Bounds::nonNegative();
    }
    if (isa<arith::DivFOp>(op))
      return nonNegative(op->getOperand(0)) && nonNegative(op->getOperand(1)) ? Bounds::nonNegative()
                                                                               : Bounds::unknown();
    if (isa<arith::MinimumFOp, arith::MinNumFOp>(op))
      return {std::min(operand(0).lower, operand(1).lower), std::min(operand(0).upper, operand(1).upper)};
    if (isa<arith::MaximumFOp, arith::MaxNumFOp>(op))
      return {std::max(operand(0).lower, operand(1).lower), std::max(operand(0).upper, operand(1).upper)};
    if (isa<arith::ExtFOp>(op))
      return operand(0);
    if (isa<arith::TruncFOp>(op))
      return {toF32(operand(0).lower, false), toF32(operand(0).upper, true)};
    if (auto select = dyn_cast<arith::SelectOp>(op)) {
      Bounds t = bounds(select.getTrueValue()), e = bounds(select.getFalseValue());
      return {std::min(t.lower, e.lower), std::max(t.upper, e.upper)};
    }
    if (isa<math::PowFOp>(op)) {
      // x^y for x >= 0 is >= 0; for x in [0, 1] and y >= 0 it is in [0, 1]
      // (beta ^ step, so that 1 - beta ^ step is >= 0 too).
      Bounds base = operand(0), exponent = operand(1);
      if (!base.provesNonNegative())
        return Bounds::unknown();
      return base.upper <= 1 && exponent.provesNonNegative() ? Bounds{0.0, 1.0} : Bounds::nonNegative();
    }
    return Bounds::unknown();
  }

  /// A product is >= 0 when every factor that occurs an odd number of times
  /// is: c * g * g (the EMA of grad² as written) has g twice.
  bool productOfEvenPowers(Operation *mul) {
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
  llvm::DenseMap<Value, Bounds> memo_;
};

bool provedForState(opt::RuleOp rule, opt::StateOp state) {
  BoundsProver prover(state.getSymName());
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
