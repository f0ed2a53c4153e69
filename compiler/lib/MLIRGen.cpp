#include "optdsl/MLIRGen.h"

#include "optdsl/Dialect/OptDialect.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/Verifier.h"
#include "optrt/RuleKernels.h"

#include <limits>
#include <set>
#include <stdexcept>


namespace optdsl {

using namespace mlir;

void registerOptDSLDialects(DialectRegistry &registry) {
  registry.insert<opt::OptDialect, arith::ArithDialect, math::MathDialect>();
}

namespace {

const char *reductionKind(Builtin builtin) {
  switch (builtin) {
  case Builtin::ReduceSum: return "sum";
  case Builtin::ReduceNorm: return "norm";
  case Builtin::ReduceMean: return "mean";
  case Builtin::GroupSum: return "group_sum";
  case Builtin::GroupNorm: return "group_norm";
  case Builtin::GroupMean: return "group_mean";
  case Builtin::GroupMax: return "group_max";
  default: return "max";
  }
}

/// Uniform values are f64 (like torch's Python scalars), per-element values
/// f32, truth values i1; conversions are inserted where kinds meet.
class Generator {
public:
  Generator(MLIRContext &context, const CheckedRule &rule)
      : context_(context), rule_(rule), builder_(&context),
        current_(rule.symbols.size()) {}

  OwningOpRef<ModuleOp> run() {
    OwningOpRef<ModuleOp> module = ModuleOp::create(loc(rule_.ast.range));
    builder_.setInsertionPointToEnd(module->getBody());
    auto ruleOp = builder_.create<opt::RuleOp>(loc(rule_.ast.nameRange),
                                               builder_.getStringAttr(rule_.name()),
                                               builder_.getI64IntegerAttr(rule_.numPhases));
    builder_.setInsertionPointToStart(&ruleOp.getBody().emplaceBlock());
    declarations();
    stepHypers();
    update();
    return module;
  }

private:
  Location loc(SourceRange range) {
    auto [file, offset] = rule_.source->locate(range.begin);
    LineCol at = file->lineCol(offset);
    return FileLineColLoc::get(&context_, file->name(), at.line, at.column);
  }

  void declarations() {
    for (const ast::Stmt &stmt : rule_.ast.stmts) {
      if (stmt.kind == ast::StmtKind::Hyper) {
        const Symbol &symbol = rule_.symbol(stmt.symbol);
        auto hyper = builder_.create<opt::HyperOp>(loc(stmt.range), builder_.getStringAttr(stmt.name),
                                                   builder_.getF64FloatAttr(symbol.defaultValue),
                                                   /*fixed=*/UnitAttr(), FloatAttr(), FloatAttr(), UnitAttr(),
                                                   UnitAttr());
        opt::setHyperRange(hyper, symbol.range);
      } else if (stmt.kind == ast::StmtKind::Input) {
        builder_.create<opt::InputOp>(loc(stmt.range), builder_.getStringAttr(stmt.name),
                                      rule_.symbol(stmt.symbol).tested ? builder_.getUnitAttr() : UnitAttr());
      } else if (stmt.kind == ast::StmtKind::State || stmt.kind == ast::StmtKind::Scalar) {
        auto state = builder_.create<opt::StateOp>(
            loc(stmt.range), builder_.getStringAttr(stmt.name),
            stmt.kind == ast::StmtKind::Scalar ? builder_.getUnitAttr() : UnitAttr(),
            axisAttr(rule_.symbol(stmt.symbol).axes), UnitAttr());
        // No init region: 0, and a state set from the params gets its
        // value on the first step (firstStepInits).
        if (!stmt.value || rule_.symbol(stmt.symbol).initOnFirstStep)
          continue;
        OpBuilder::InsertionGuard guard(builder_);
        builder_.setInsertionPointToStart(&state.getInit().emplaceBlock());
        std::fill(current_.begin(), current_.end(), Value());
        Value init = toFloat(gen(*stmt.value), /*elementwise=*/false, stmt.value->range);
        builder_.create<opt::YieldOp>(loc(stmt.value->range), init);
      }
    }
    // The hidden scalar states of initial(HYPER), after the declared ones
    // (their slots follow them): the hyper's value when the group is added.
    for (int id : rule_.scalarStates) {
      const Symbol &symbol = rule_.symbol(id);
      if (symbol.shapeDimension >= 0) {
        // rank, rows, cols: 0 here; the runtime sets it from the shape.
        builder_.create<opt::StateOp>(loc(rule_.ast.nameRange), builder_.getStringAttr(symbol.name),
                                      builder_.getUnitAttr(), StringAttr(), UnitAttr());
        continue;
      }
      if (symbol.initialOfHyper < 0)
        continue;
      Location at = loc(symbol.init->range);
      auto state = builder_.create<opt::StateOp>(at, builder_.getStringAttr(symbol.name), builder_.getUnitAttr(),
                                                 StringAttr(), UnitAttr());
      OpBuilder::InsertionGuard guard(builder_);
      builder_.setInsertionPointToStart(&state.getInit().emplaceBlock());
      std::fill(current_.begin(), current_.end(), Value());
      builder_.create<opt::YieldOp>(at, toFloat(gen(*symbol.init), /*elementwise=*/false, symbol.init->range));
    }
  }

  /// The hypers the runtime sets each step (optrt::kGradScaleHyper): loss
  /// scaling and clipping reach every rule through them, unedited.
  void stepHypers() {
    Location at = loc(rule_.ast.nameRange);
    auto declare = [&](std::string_view name, double value) {
      auto hyper = builder_.create<opt::HyperOp>(at, builder_.getStringAttr(name), builder_.getF64FloatAttr(value),
                                                 UnitAttr(), FloatAttr(), FloatAttr(), UnitAttr(), UnitAttr());
      opt::setHyperRange(hyper, optrt::HyperRange{0.0, std::numeric_limits<double>::infinity(), true, true});
    };
    declare(optrt::kGradScaleHyper, optrt::kGradScaleDefault);
    declare(optrt::kGradClipHyper, optrt::kGradClipDefault);
    // given(INPUT): 1 on the steps the trainer passes the input.
    for (int id : rule_.inputs) {
      if (!rule_.symbol(id).tested)
        continue;
      auto hyper = builder_.create<opt::HyperOp>(at, builder_.getStringAttr(optrt::givenHyper(rule_.symbol(id).name)),
                                                 builder_.getF64FloatAttr(0.0), UnitAttr(), FloatAttr(), FloatAttr(),
                                                 UnitAttr(), UnitAttr());
      opt::setHyperRange(hyper, optrt::HyperRange{0.0, 1.0, false, false});
    }
  }

  /// Whether the trainer passed input `name` this step (i1, uniform).
  Value inputGiven(Location at, const std::string &name) {
    Value flag = builder_.create<opt::GetHyperOp>(at, builder_.getF64Type(), symbolRef(optrt::givenHyper(name)));
    Value zero = builder_.create<arith::ConstantOp>(at, builder_.getF64FloatAttr(0.0));
    return builder_.create<arith::CmpFOp>(at, arith::CmpFPredicate::UNE, flag, zero);
  }

  /// The gradient a rule sees: clamp(g * grad_scale, -grad_clip, grad_clip)
  /// of the stored one, in f32 (the factors are per-step uniforms).
  Value stepGradient(Location at) {
    Type f32 = builder_.getF32Type(), f64 = builder_.getF64Type();
    auto hyper = [&](std::string_view name) {
      return builder_.create<opt::GetHyperOp>(at, f64, symbolRef(std::string(name)));
    };
    Value grad = builder_.create<opt::GradOp>(at, f32);
    Value scale = builder_.create<arith::TruncFOp>(at, f32, hyper(optrt::kGradScaleHyper));
    Value clip = hyper(optrt::kGradClipHyper);
    Value upper = builder_.create<arith::TruncFOp>(at, f32, clip);
    Value lower = builder_.create<arith::TruncFOp>(at, f32, builder_.create<arith::NegFOp>(at, clip));
    Value scaled = builder_.create<arith::MulFOp>(at, grad, scale);
    // The clamp as compare-and-select, not minimumf/maximumf: the bounds are
    // never NaN or zero (grad_clip's range is (0, inf)), so the two agree bit
    // for bit (a NaN gradient stays NaN, as in torch), and the selects
    // become one vmaxps/vminps each where the IEEE maximum needs a blend
    // sequence (the clamp is in every rule's every pass that reads grad).
    Value below = builder_.create<arith::CmpFOp>(at, arith::CmpFPredicate::OLT, scaled, lower);
    Value raised = builder_.create<arith::SelectOp>(at, below, lower, scaled);
    Value above = builder_.create<arith::CmpFOp>(at, arith::CmpFPredicate::OGT, raised, upper);
    return builder_.create<arith::SelectOp>(at, above, upper, raised);
  }

  /// `state s = f(param);`: on the group's first step, before the body,
  /// s = f(param) (stored, so that it holds even where the body leaves s
  /// alone); on later steps the stored value.
  void firstStepInits() {
    for (int id : rule_.states) {
      const Symbol &symbol = rule_.symbol(id);
      if (!symbol.initOnFirstStep)
        continue;
      Location at = loc(symbol.init->range);
      Value step = builder_.create<opt::StepOp>(at, builder_.getF64Type());
      Value one = builder_.create<arith::ConstantOp>(at, builder_.getF64FloatAttr(1.0));
      Value first = builder_.create<arith::CmpFOp>(at, arith::CmpFPredicate::OEQ, step, one);
      Value initial = toFloat(gen(*symbol.init), /*elementwise=*/true, symbol.init->range);
      Value stored = builder_.create<opt::LoadStateOp>(at, builder_.getF32Type(), symbolRef(symbol.name));
      Value value = builder_.create<arith::SelectOp>(at, first, initial, stored);
      builder_.create<opt::StoreStateOp>(at, symbolRef(symbol.name), value, builder_.getI64IntegerAttr(0));
      current_[id] = value;
    }
  }

  /// A state's `axis`: none for one per element, else rows, cols or
  /// matrices (what a [rows]/[cols] state or a row/column reduction's result
  /// varies along).
  StringAttr axisAttr(Axes axes) {
    switch (axes) {
    case kBatchAxis | kRowAxis: return builder_.getStringAttr("rows");
    case kBatchAxis | kColAxis: return builder_.getStringAttr("cols");
    case kBatchAxis: return builder_.getStringAttr("matrices");
    default: return StringAttr();
    }
  }

  void update() {
    auto update = builder_.create<opt::UpdateOp>(loc(rule_.ast.range));
    update_ = update;
    builder_.setInsertionPointToStart(&update.getBody().emplaceBlock());
    std::fill(current_.begin(), current_.end(), Value());
    firstStepInits();
    for (int index : rule_.body) {
      const ast::Stmt &stmt = rule_.ast.stmts[index];
      Value value = gen(*stmt.value);
      const Symbol &target = rule_.symbol(stmt.symbol);
      Location at = loc(stmt.range);
      switch (target.cls) {
      case SymbolClass::Let:
        break;
      case SymbolClass::Param:
        value = toFloat(value, true, stmt.range);
        builder_.create<opt::StoreParamOp>(at, value, builder_.getI64IntegerAttr(stmt.phase));
        break;
      case SymbolClass::Grad: // what the rest of the step reads as grad; nothing is stored
        value = toFloat(value, true, stmt.range);
        break;
      case SymbolClass::State:
      case SymbolClass::ScalarState:
        value = toFloat(value, target.cls == SymbolClass::State, stmt.range);
        builder_.create<opt::StoreStateOp>(at, symbolRef(stmt.name), value,
                                           builder_.getI64IntegerAttr(stmt.phase));
        break;
      default:
        break; // sema rejects assignments to anything else
      }
      current_[stmt.symbol] = value;
    }
  }

  /// The value of a name at this point: the latest assignment, or a read of
  /// the step's input.
  Value read(const ast::Expr &expr) {
    Value &value = current_[expr.symbol];
    if (value)
      return value;
    const Symbol &symbol = rule_.symbol(expr.symbol);
    Location at = loc(expr.range);
    Type f32 = builder_.getF32Type(), f64 = builder_.getF64Type();
    switch (symbol.cls) {
    case SymbolClass::Param: value = builder_.create<opt::ParamOp>(at, f32); break;
    case SymbolClass::Grad: value = stepGradient(at); break;
    case SymbolClass::Step: value = builder_.create<opt::StepOp>(at, f64); break;
    case SymbolClass::Dimension:
      value = builder_.create<opt::LoadStateOp>(at, f64, symbolRef(rule_.symbol(symbol.shapeScalar).name));
      break;
    case SymbolClass::Hyper: value = builder_.create<opt::GetHyperOp>(at, f64, symbolRef(symbol.name)); break;
    case SymbolClass::State: value = builder_.create<opt::LoadStateOp>(at, f32, symbolRef(symbol.name)); break;
    case SymbolClass::ScalarState:
      value = builder_.create<opt::LoadStateOp>(at, f64, symbolRef(symbol.name));
      break;
    case SymbolClass::Input:
      value = builder_.create<opt::GetInputOp>(at, f32, symbolRef(symbol.name),
                                               symbol.tested ? inputGiven(at, symbol.name) : Value());
      break;
    case SymbolClass::Let: break; // always assigned before use (sema)
    }
    return value;
  }

  FlatSymbolRefAttr symbolRef(const std::string &name) {
    return FlatSymbolRefAttr::get(&context_, name);
  }

  Value toFloat(Value value, bool elementwise, SourceRange range) {
    Location at = loc(range);
    Type target = elementwise ? Type(builder_.getF32Type()) : Type(builder_.getF64Type());
    if (value.getType().isInteger(1))
      return builder_.create<arith::UIToFPOp>(at, target, value);
    if (value.getType() == target)
      return value;
    if (elementwise)
      return builder_.create<arith::TruncFOp>(at, target, value);
    return builder_.create<arith::ExtFOp>(at, target, value);
  }

  Value toBool(Value value, SourceRange range) {
    if (value.getType().isInteger(1))
      return value;
    Value zero = builder_.create<arith::ConstantOp>(
        loc(range), builder_.getFloatAttr(value.getType(), 0.0));
    return builder_.create<arith::CmpFOp>(loc(range), arith::CmpFPredicate::UNE, value, zero);
  }

  Value constant(double x, bool elementwise, SourceRange range) {
    Type type = elementwise ? Type(builder_.getF32Type()) : Type(builder_.getF64Type());
    return builder_.create<arith::ConstantOp>(loc(range), builder_.getFloatAttr(type, x));
  }

  Value gen(const ast::Expr &expr) {
    bool ew = expr.valueKind == ValueKind::Elementwise;
    Location at = loc(expr.range);
    auto operand = [&](size_t i) { return toFloat(gen(*expr.operands[i]), ew, expr.operands[i]->range); };
    switch (expr.kind) {
    case ast::ExprKind::Number:
      return constant(expr.number, false, expr.range);
    case ast::ExprKind::Name:
      return read(expr);
    case ast::ExprKind::Unary:
      if (expr.unaryOp == ast::UnaryOp::Not) {
        Value truth = toBool(gen(*expr.operands[0]), expr.range);
        Value one = builder_.create<arith::ConstantIntOp>(at, 1, 1);
        return builder_.create<arith::XOrIOp>(at, truth, one);
      }
      if (expr.unaryOp == ast::UnaryOp::Negate)
        return builder_.create<arith::NegFOp>(at, operand(0));
      return operand(0);
    case ast::ExprKind::Binary:
      return binary(expr, ew);
    case ast::ExprKind::Conditional: {
      Value test = toBool(gen(*expr.operands[0]), expr.operands[0]->range);
      return builder_.create<arith::SelectOp>(at, test, operand(1), operand(2));
    }
    case ast::ExprKind::Call:
      return call(expr, ew);
    }
    return Value();
  }

  Value binary(const ast::Expr &expr, bool ew) {
    Location at = loc(expr.range);
    ast::BinaryOp op = expr.binaryOp;
    if (op == ast::BinaryOp::And || op == ast::BinaryOp::Or) {
      Value a = toBool(gen(*expr.operands[0]), expr.operands[0]->range);
      Value b = toBool(gen(*expr.operands[1]), expr.operands[1]->range);
      return op == ast::BinaryOp::And ? Value(builder_.create<arith::AndIOp>(at, a, b))
                                      : Value(builder_.create<arith::OrIOp>(at, a, b));
    }
    // Comparisons compare in the wider of the operands' kinds.
    bool operandsEw = expr.operands[0]->valueKind == ValueKind::Elementwise ||
                      expr.operands[1]->valueKind == ValueKind::Elementwise;
    Value a = toFloat(gen(*expr.operands[0]), operandsEw, expr.operands[0]->range);
    Value b = toFloat(gen(*expr.operands[1]), operandsEw, expr.operands[1]->range);
    auto compare = [&](arith::CmpFPredicate predicate) -> Value {
      return builder_.create<arith::CmpFOp>(at, predicate, a, b);
    };
    switch (op) {
    case ast::BinaryOp::Add: return builder_.create<arith::AddFOp>(at, a, b);
    case ast::BinaryOp::Sub: return builder_.create<arith::SubFOp>(at, a, b);
    case ast::BinaryOp::Mul: return builder_.create<arith::MulFOp>(at, a, b);
    case ast::BinaryOp::Div: return builder_.create<arith::DivFOp>(at, a, b);
    case ast::BinaryOp::Pow: return builder_.create<math::PowFOp>(at, a, b);
    case ast::BinaryOp::Lt: return compare(arith::CmpFPredicate::OLT);
    case ast::BinaryOp::Le: return compare(arith::CmpFPredicate::OLE);
    case ast::BinaryOp::Gt: return compare(arith::CmpFPredicate::OGT);
    case ast::BinaryOp::Ge: return compare(arith::CmpFPredicate::OGE);
    case ast::BinaryOp::Eq: return compare(arith::CmpFPredicate::OEQ);
    case ast::BinaryOp::Ne: return compare(arith::CmpFPredicate::UNE);
    default: break;
    }
    (void)ew;
    return Value();
  }

  Value call(const ast::Expr &expr, bool ew) {
    Location at = loc(expr.range);
    if (expr.builtin == Builtin::Initial) // the hidden scalar state
      return builder_.create<opt::LoadStateOp>(at, builder_.getF64Type(),
                                               symbolRef(rule_.symbol(expr.symbol).name));
    if (expr.builtin == Builtin::Given)
      return inputGiven(at, rule_.symbol(expr.operands[0]->symbol).name);
    if (expr.builtin == Builtin::Random)
      return builder_.create<opt::RandomOp>(at, builder_.getF32Type(),
                                            builder_.getI64IntegerAttr(static_cast<int64_t>(expr.operands[0]->number)));
    if (const BuiltinInfo &info = builtinInfo(expr.builtin); info.isReduction) {
      const ast::Expr &argument = *expr.operands[0];
      Value input = toFloat(gen(argument), true, argument.range);
      if (info.reducedAxis)
        return axisReduction(expr, input);
      return builder_.create<opt::ReduceOp>(
          at, builder_.getF64Type(), builder_.getStringAttr(reductionKind(expr.builtin)), input,
          builder_.getI64IntegerAttr(argument.phase), FlatSymbolRefAttr());
    }
    std::vector<Value> x;
    for (const auto &argument : expr.operands)
      x.push_back(toFloat(gen(*argument), ew, argument->range));
    switch (expr.builtin) {
    case Builtin::Sqrt: return builder_.create<math::SqrtOp>(at, x[0]);
    case Builtin::Rsqrt: return builder_.create<math::RsqrtOp>(at, x[0]);
    case Builtin::Exp: return builder_.create<math::ExpOp>(at, x[0]);
    case Builtin::Log: return builder_.create<math::LogOp>(at, x[0]);
    case Builtin::Abs: return builder_.create<math::AbsFOp>(at, x[0]);
    case Builtin::Sign: {
      // +1 / -1 / the argument itself for ±0 and NaN, as the interpreter.
      Value zero = constant(0, ew, expr.range), one = constant(1, ew, expr.range);
      Value minusOne = constant(-1, ew, expr.range);
      Value positive = builder_.create<arith::CmpFOp>(at, arith::CmpFPredicate::OGT, x[0], zero);
      Value negative = builder_.create<arith::CmpFOp>(at, arith::CmpFPredicate::OLT, x[0], zero);
      Value otherwise = builder_.create<arith::SelectOp>(at, negative, minusOne, x[0]);
      return builder_.create<arith::SelectOp>(at, positive, one, otherwise);
    }
    case Builtin::Min: return builder_.create<arith::MinimumFOp>(at, x[0], x[1]);
    case Builtin::Max: return builder_.create<arith::MaximumFOp>(at, x[0], x[1]);
    case Builtin::Clamp: {
      Value low = builder_.create<arith::MaximumFOp>(at, x[0], x[1]);
      return builder_.create<arith::MinimumFOp>(at, low, x[2]);
    }
    case Builtin::Lerp: {
      Value difference = builder_.create<arith::SubFOp>(at, x[1], x[0]);
      Value scaled = builder_.create<arith::MulFOp>(at, x[2], difference);
      return builder_.create<arith::AddFOp>(at, x[0], scaled);
    }
    case Builtin::Pow: return builder_.create<math::PowFOp>(at, x[0], x[1]);
    case Builtin::Floor: return builder_.create<math::FloorOp>(at, x[0]);
    case Builtin::Mod: {
      // The sign of b, as Python's and torch's `%`: frem (fmod, exact), then
      // + b when the remainder is non-zero and its sign differs from b's.
      Value zero = constant(0, ew, expr.range);
      Value r = builder_.create<arith::RemFOp>(at, x[0], x[1]);
      Value nonZero = builder_.create<arith::CmpFOp>(at, arith::CmpFPredicate::ONE, r, zero);
      Value rNegative = builder_.create<arith::CmpFOp>(at, arith::CmpFPredicate::OLT, r, zero);
      Value bNegative = builder_.create<arith::CmpFOp>(at, arith::CmpFPredicate::OLT, x[1], zero);
      Value signsDiffer = builder_.create<arith::XOrIOp>(at, rNegative, bNegative);
      Value move = builder_.create<arith::AndIOp>(at, nonZero, signsDiffer);
      Value moved = builder_.create<arith::AddFOp>(at, r, x[1]);
      return builder_.create<arith::SelectOp>(at, move, moved, r);
    }
    case Builtin::Atan2: return builder_.create<math::Atan2Op>(at, x[0], x[1]);
    case Builtin::Cos: return builder_.create<math::CosOp>(at, x[0]);
    case Builtin::Sin: return builder_.create<math::SinOp>(at, x[0]);
    case Builtin::Tanh: return builder_.create<math::TanhOp>(at, x[0]);
    default: return Value();
    }
  }

  /// row_sum, row_mean, col_sum, col_mean: the result is kept in a scratch
  /// state of the axes left (declared before the update), which later
  /// phases read.
  Value axisReduction(const ast::Expr &expr, Value input) {
    const ast::Expr &argument = *expr.operands[0];
    const BuiltinInfo &info = builtinInfo(expr.builtin);
    if (!(argument.axes & info.reducedAxis)) {
      // The same along the axis it reduces: the mean is the value, the sum
      // the value times the axis's length (columns for a row).
      bool mean = expr.builtin == Builtin::RowMean || expr.builtin == Builtin::ColMean;
      if (mean)
        return input;
      Location at = loc(expr.range);
      Value length = builder_.create<arith::TruncFOp>(
          at, builder_.getF32Type(), dimension(expr.builtin == Builtin::RowSum ? rule_.colsSymbol : rule_.rowsSymbol));
      return builder_.create<arith::MulFOp>(at, input, length);
    }
    std::string name = std::string(info.name) + "(" + std::to_string(numScratch_++) + ")";
    {
      OpBuilder::InsertionGuard guard(builder_);
      builder_.setInsertionPoint(update_);
      builder_.create<opt::StateOp>(loc(expr.range), builder_.getStringAttr(name), UnitAttr(),
                                    axisAttr(argument.axes & ~info.reducedAxis), builder_.getUnitAttr());
    }
    return builder_.create<opt::ReduceOp>(loc(expr.range), builder_.getF32Type(), builder_.getStringAttr(info.name),
                                          input, builder_.getI64IntegerAttr(argument.phase), symbolRef(name));
  }

  /// A tensor's `rows` or `cols` (f64): the hidden scalar state sema declared
  /// for a rule that reads it, or one declared here (the runtime sets every
  /// state of that name from the tensor's shape).
  Value dimension(int symbol) {
    std::string name = std::string(optrt::kShapeScalars[symbol == rule_.rowsSymbol ? 1 : 2]);
    if (rule_.symbol(symbol).shapeScalar < 0 && !declaredDimensions_.count(name)) {
      OpBuilder::InsertionGuard guard(builder_);
      builder_.setInsertionPoint(update_);
      builder_.create<opt::StateOp>(loc(rule_.ast.nameRange), builder_.getStringAttr(name), builder_.getUnitAttr(),
                                    StringAttr(), UnitAttr());
      declaredDimensions_.insert(name);
    }
    return builder_.create<opt::LoadStateOp>(loc(rule_.ast.nameRange), builder_.getF64Type(), symbolRef(name));
  }

  MLIRContext &context_;
  const CheckedRule &rule_;
  opt::UpdateOp update_;
  int numScratch_ = 0;
  std::set<std::string> declaredDimensions_;
  OpBuilder builder_;
  std::vector<Value> current_; // per symbol: its value at this point of the update
};

} // namespace

OwningOpRef<ModuleOp> buildModule(MLIRContext &context, const CheckedRule &rule) {
  if (rule.ast.transform)
    throw std::invalid_argument("'" + rule.name() + "' is a transform, not an optimizer: apply it in one ('apply " +
                                rule.name() + ";') to build kernels");
  DialectRegistry registry;
  registerOptDSLDialects(registry);
  context.appendDialectRegistry(registry);
  context.loadAllAvailableDialects();
  OwningOpRef<ModuleOp> module = Generator(context, rule).run();
  if (!module || failed(verify(*module)))
    return nullptr;
  return module;
}

} // namespace optdsl
