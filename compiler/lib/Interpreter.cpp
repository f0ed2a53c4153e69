#include "optdsl/Interpreter.h"

#include "optrt/Shape.h"
#include "optrt/Storage.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <limits>
#include <stdexcept>

namespace optdsl {
namespace {

/// A uniform value is one number for the tensor; an elementwise one a vector.
struct Value {
  bool uniform = true;
  double scalar = 0;
  std::vector<double> elements;

  double at(size_t i) const { return uniform ? scalar : elements[i]; }
  static Value of(double x) { return Value{true, x, {}}; }
  static Value of(std::vector<double> xs) { return Value{false, 0, std::move(xs)}; }
};

double truth(bool b) { return b ? 1.0 : 0.0; }

/// min/max propagate NaN like torch.minimum/maximum.
double minimum(double a, double b) { return std::isnan(a) || std::isnan(b) ? NAN : std::min(a, b); }
double maximum(double a, double b) { return std::isnan(a) || std::isnan(b) ? NAN : std::max(a, b); }

double applyUnary(ast::UnaryOp op, double x) {
  switch (op) {
  case ast::UnaryOp::Negate: return -x;
  case ast::UnaryOp::Plus: return x;
  case ast::UnaryOp::Not: return truth(x == 0);
  }
  return x;
}

double applyBinary(ast::BinaryOp op, double a, double b) {
  switch (op) {
  case ast::BinaryOp::Add: return a + b;
  case ast::BinaryOp::Sub: return a - b;
  case ast::BinaryOp::Mul: return a * b;
  case ast::BinaryOp::Div: return a / b;
  case ast::BinaryOp::Pow: return std::pow(a, b);
  case ast::BinaryOp::Lt: return truth(a < b);
  case ast::BinaryOp::Le: return truth(a <= b);
  case ast::BinaryOp::Gt: return truth(a > b);
  case ast::BinaryOp::Ge: return truth(a >= b);
  case ast::BinaryOp::Eq: return truth(a == b);
  case ast::BinaryOp::Ne: return truth(a != b);
  case ast::BinaryOp::And: return truth(a != 0 && b != 0);
  case ast::BinaryOp::Or: return truth(a != 0 || b != 0);
  }
  return 0;
}

/// a mod b with the sign of b, as Python's and torch's `%`: fmod (exact),
/// moved by b when its sign differs from b's.
double floorMod(double a, double b) {
  double r = std::fmod(a, b);
  return r != 0 && (r < 0) != (b < 0) ? r + b : r;
}

double applyBuiltin(Builtin builtin, const double *x) {
  switch (builtin) {
  case Builtin::Sqrt: return std::sqrt(x[0]);
  case Builtin::Rsqrt: return 1.0 / std::sqrt(x[0]);
  case Builtin::Exp: return std::exp(x[0]);
  case Builtin::Log: return std::log(x[0]);
  case Builtin::Abs: return std::fabs(x[0]);
  case Builtin::Sign: return x[0] > 0 ? 1.0 : x[0] < 0 ? -1.0 : x[0];
  case Builtin::Min: return minimum(x[0], x[1]);
  case Builtin::Max: return maximum(x[0], x[1]);
  case Builtin::Clamp: return minimum(maximum(x[0], x[1]), x[2]);
  case Builtin::Lerp: return x[0] + x[2] * (x[1] - x[0]);
  case Builtin::Pow: return std::pow(x[0], x[1]);
  case Builtin::Floor: return std::floor(x[0]);
  case Builtin::Mod: return floorMod(x[0], x[1]);
  case Builtin::Atan2: return std::atan2(x[0], x[1]);
  case Builtin::Cos: return std::cos(x[0]);
  case Builtin::Sin: return std::sin(x[0]);
  case Builtin::Tanh: return std::tanh(x[0]);
  default: return NAN; // reductions are evaluated over whole tensors
  }
}

/// Σx (sum, mean), Σx² (norm) or max x over the first `size` elements.
double accumulate(Builtin builtin, const Value &value, size_t size) {
  double accumulator = builtin == Builtin::ReduceMax ? -std::numeric_limits<double>::infinity() : 0;
  for (size_t i = 0; i < size; ++i) {
    double x = value.at(i);
    switch (builtin) {
    case Builtin::ReduceSum:
    case Builtin::ReduceMean: accumulator += x; break;
    case Builtin::ReduceNorm: accumulator += x * x; break;
    case Builtin::ReduceMax: accumulator = maximum(accumulator, x); break;
    default: break;
    }
  }
  return accumulator;
}

double finish(Builtin builtin, double accumulator, size_t count) {
  if (builtin == Builtin::ReduceNorm)
    return std::sqrt(accumulator);
  if (builtin == Builtin::ReduceMean)
    return accumulator / static_cast<double>(count);
  return accumulator;
}

/// A tensor read as a stack of matrices, batch × rows × cols (optdsl::Axes).
struct Geometry {
  size_t batch = 1, rows = 1, cols = 0;
  double rank = 1;

  /// Throws std::invalid_argument when `shape` does not multiply out to `size`.
  static Geometry of(const std::vector<int64_t> &shape, size_t size, const std::string &tensor) {
    std::vector<size_t> dims;
    bool valid = true;
    uint64_t product = 1;
    for (int64_t dim : shape) {
      valid = valid && dim >= 0;
      dims.push_back(static_cast<size_t>(std::max<int64_t>(dim, 0)));
      product *= dims.back();
    }
    if (!shape.empty() && (!valid || product != size)) {
      std::string written;
      for (int64_t dim : shape)
        written += (written.empty() ? "" : "x") + std::to_string(dim);
      throw std::invalid_argument(tensor + " has shape " + written + ", which " +
                                  (valid ? "holds " + std::to_string(product) : std::string("is not a shape")) +
                                  " elements, not its " + std::to_string(size));
    }
    optrt::MatrixView view = optrt::matrixView(dims, size);
    return Geometry{view.batch, view.rows, view.cols, static_cast<double>(view.rank)};
  }

  size_t size() const { return batch * rows * cols; }
  /// How many values a buffer spanning `axes` holds.
  size_t count(Axes axes) const {
    return (axes & kBatchAxis ? batch : 1) * (axes & kRowAxis ? rows : 1) * (axes & kColAxis ? cols : 1);
  }
  /// Where element i's value lies in a buffer spanning `axes`.
  size_t index(size_t i, Axes axes) const {
    size_t c = i % cols, r = (i / cols) % rows, b = i / (cols * rows);
    size_t at = axes & kBatchAxis ? b : 0;
    at = at * (axes & kRowAxis ? rows : 1) + (axes & kRowAxis ? r : 0);
    return at * (axes & kColAxis ? cols : 1) + (axes & kColAxis ? c : 0);
  }
  /// A buffer spanning `axes`, as a value per element.
  std::vector<double> broadcast(const std::vector<double> &values, Axes axes) const {
    std::vector<double> out(size());
    for (size_t i = 0; i < out.size(); ++i)
      out[i] = values[index(i, axes)];
    return out;
  }
  /// The inverse: one value per entry of a buffer spanning `axes` (sema
  /// proved the value the same wherever it is read from).
  std::vector<double> compact(const std::vector<double> &values, Axes axes) const {
    std::vector<double> out(count(axes));
    for (size_t i = 0; i < values.size(); ++i)
      out[index(i, axes)] = values[i];
    return out;
  }
};

class Evaluator;

/// The tensors of one group stepped together: a group-wide reduction
/// evaluates its argument on every tensor at the same point of the program
/// and combines them in tensor order, once per step.
struct Group {
  std::vector<Evaluator *> tensors;
  std::vector<bool> given; // per input slot: whether the trainer passed it this step
  std::map<const ast::Expr *, double> groupValues;
};

class Evaluator {
public:
  /// randomKey: the tensor's key for random() (optrt::stochasticBits of the
  /// seed, the optimizer's step and the tensor's index).
  Evaluator(const CheckedRule &rule, std::vector<Value> &env, const Geometry &geometry, Group *group = nullptr,
            uint32_t randomKey = 0)
      : rule_(rule), env_(env), geometry_(geometry), size_(geometry.size()), group_(group), randomKey_(randomKey) {}

  Value eval(const ast::Expr &expr) {
    switch (expr.kind) {
    case ast::ExprKind::Number: return Value::of(expr.number);
    case ast::ExprKind::Name: return env_[expr.symbol];
    case ast::ExprKind::Call:
      if (expr.builtin == Builtin::Initial)
        return env_[expr.symbol]; // the hidden scalar state
      if (expr.builtin == Builtin::Random)
        return random(static_cast<uint32_t>(expr.operands[0]->number));
      if (expr.builtin == Builtin::Given)
        return Value::of(group_->given.at(rule_.symbol(expr.operands[0]->symbol).slot) ? 1.0 : 0.0);
      if (builtinInfo(expr.builtin).groupWide)
        return Value::of(groupReduce(expr));
      if (builtinInfo(expr.builtin).reducedAxis)
        return axisReduce(expr);
      if (builtinInfo(expr.builtin).isReduction)
        return Value::of(finish(expr.builtin, accumulate(expr.builtin, eval(*expr.operands[0]), size_), size_));
      [[fallthrough]];
    case ast::ExprKind::Unary:
    case ast::ExprKind::Binary:
    case ast::ExprKind::Conditional: return elementwise(expr);
    }
    return Value::of(NAN);
  }

private:
  /// random(stream) of every element, as the kernels draw it.
  Value random(uint32_t stream) const {
    uint32_t key = randomKey_ ^ optrt::randomStreamSalt(stream);
    std::vector<double> values(size_);
    for (size_t i = 0; i < size_; ++i)
      values[i] = optrt::uniformFromBits(optrt::stochasticBitsFromKey(key, i));
    return Value::of(std::move(values));
  }

  /// row_sum/row_mean (along each row's columns), col_sum/col_mean (along
  /// each column's rows), broadcast back to every element.
  Value axisReduce(const ast::Expr &expr) {
    Value x = eval(*expr.operands[0]);
    Axes reduced = builtinInfo(expr.builtin).reducedAxis;
    Axes kept = kElementAxes & ~reduced;
    std::vector<double> sums(geometry_.count(kept), 0.0);
    for (size_t i = 0; i < size_; ++i)
      sums[geometry_.index(i, kept)] += x.at(i);
    if (expr.builtin == Builtin::RowMean || expr.builtin == Builtin::ColMean) {
      double count = static_cast<double>(reduced == kColAxis ? geometry_.cols : geometry_.rows);
      for (double &sum : sums)
        sum /= count;
    }
    return Value::of(geometry_.broadcast(sums, kept));
  }

  double groupReduce(const ast::Expr &expr) {
    auto cached = group_->groupValues.find(&expr);
    if (cached != group_->groupValues.end())
      return cached->second;
    Builtin kind = perTensorReduction(expr.builtin);
    double combined = kind == Builtin::ReduceMax ? -std::numeric_limits<double>::infinity() : 0;
    size_t count = 0;
    for (Evaluator *tensor : group_->tensors) {
      double partial = accumulate(kind, tensor->eval(*expr.operands[0]), tensor->size_);
      combined = kind == Builtin::ReduceMax ? maximum(combined, partial) : combined + partial;
      count += tensor->size_;
    }
    return group_->groupValues[&expr] = finish(kind, combined, count);
  }

  double apply(const ast::Expr &expr, const double *x) const {
    switch (expr.kind) {
    case ast::ExprKind::Unary: return applyUnary(expr.unaryOp, x[0]);
    case ast::ExprKind::Binary: return applyBinary(expr.binaryOp, x[0], x[1]);
    case ast::ExprKind::Conditional: return x[0] != 0 ? x[1] : x[2];
    default: return applyBuiltin(expr.builtin, x);
    }
  }

  Value elementwise(const ast::Expr &expr) {
    std::vector<Value> operands;
    bool uniform = true;
    for (const auto &operand : expr.operands) {
      operands.push_back(eval(*operand));
      uniform = uniform && operands.back().uniform;
    }
    double x[3] = {0, 0, 0};
    size_t n = uniform ? 1 : size_;
    std::vector<double> out(n);
    for (size_t i = 0; i < n; ++i) {
      for (size_t k = 0; k < operands.size(); ++k)
        x[k] = operands[k].at(i);
      out[i] = apply(expr, x);
    }
    return uniform ? Value::of(out[0]) : Value::of(std::move(out));
  }

  const CheckedRule &rule_;
  std::vector<Value> &env_;
  const Geometry &geometry_;
  size_t size_;
  Group *group_;
  uint32_t randomKey_;
};

} // namespace

HyperValues Interpreter::defaultHypers() const {
  HyperValues values;
  for (int id : rule_.hypers)
    values.push_back(rule_.symbol(id).defaultValue);
  return values;
}

void Interpreter::setHyper(HyperValues &hypers, const std::string &name, double value) const {
  int slot = rule_.hyperSlot(name);
  if (slot < 0) {
    std::string known;
    for (const std::string &hyper : rule_.hyperNames())
      known += (known.empty() ? "" : ", ") + hyper;
    throw std::invalid_argument("unknown hyper '" + name + "' for optimizer '" + rule_.name() +
                                "' (its hypers: " + known + ")");
  }
  if (!std::isfinite(value))
    throw std::invalid_argument("hyper '" + name + "' must be finite");
  const optrt::HyperRange &range = rule_.symbol(rule_.hypers[slot]).range;
  if (!range.contains(value))
    throw std::invalid_argument("hyper '" + name + "' of optimizer '" + rule_.name() + "' set to " +
                                optrt::HyperRange::format(value) + ", outside its range " + range.str());
  hypers.at(slot) = value;
}

TensorState Interpreter::initTensor(std::vector<double> param, const HyperValues &hypers,
                                    std::vector<int64_t> shape) const {
  Geometry geometry = Geometry::of(shape, param.size(), "the tensor");
  std::vector<Value> env(rule_.symbols.size());
  for (size_t slot = 0; slot < rule_.hypers.size(); ++slot)
    env[rule_.hypers[slot]] = Value::of(hypers.at(slot));
  Geometry one = Geometry::of({}, 1, "");
  Evaluator evaluator(rule_, env, one);
  auto initial = [&](int id) {
    const Symbol &symbol = rule_.symbol(id);
    // A state set from the params is 0 until the first step (stepTensor).
    return symbol.init && !symbol.initOnFirstStep ? evaluator.eval(*symbol.init).scalar : 0.0;
  };
  TensorState tensor;
  for (int id : rule_.states)
    tensor.states.emplace_back(geometry.count(rule_.symbol(id).axes), initial(id));
  // The hidden states behind rank, rows and cols hold the shape, as the
  // runtime sets them (the interpreter reads the dimensions directly).
  double dimensions[3] = {geometry.rank, static_cast<double>(geometry.rows), static_cast<double>(geometry.cols)};
  for (int id : rule_.scalarStates)
    tensor.scalarStates.push_back(rule_.symbol(id).shapeDimension >= 0 ? dimensions[rule_.symbol(id).shapeDimension]
                                                                        : initial(id));
  tensor.param = std::move(param);
  tensor.shape = std::move(shape);
  return tensor;
}

void Interpreter::step(std::vector<TensorState> &tensors,
                       const std::vector<std::vector<double>> &grads, int64_t step,
                       const HyperValues &hypers, const StepInputs &inputs, const RandomSource &random) const {
  if (grads.size() != tensors.size())
    throw std::invalid_argument("got " + std::to_string(grads.size()) + " gradients for " +
                                std::to_string(tensors.size()) + " tensors");
  if (hypers.size() != rule_.hypers.size())
    throw std::invalid_argument("got " + std::to_string(hypers.size()) + " hyper values; '" +
                                rule_.name() + "' has " + std::to_string(rule_.hypers.size()));
  std::vector<Geometry> geometries;
  for (size_t k = 0; k < tensors.size(); ++k) {
    if (grads[k].size() != tensors[k].param.size())
      throw std::invalid_argument("gradient " + std::to_string(k) + " has " +
                                  std::to_string(grads[k].size()) + " elements, its tensor " +
                                  std::to_string(tensors[k].param.size()));
    geometries.push_back(Geometry::of(tensors[k].shape, tensors[k].param.size(), "tensor " + std::to_string(k)));
    for (size_t slot = 0; slot < rule_.states.size(); ++slot)
      if (tensors[k].states.at(slot).size() != geometries[k].count(rule_.symbol(rule_.states[slot]).axes))
        throw std::invalid_argument("state '" + rule_.symbol(rule_.states[slot]).name + "' of tensor " +
                                    std::to_string(k) + " has " + std::to_string(tensors[k].states[slot].size()) +
                                    " values, not the " +
                                    std::to_string(geometries[k].count(rule_.symbol(rule_.states[slot]).axes)) +
                                    " its shape needs");
  }
  if (inputs.size() > rule_.inputs.size())
    throw std::invalid_argument("got values for " + std::to_string(inputs.size()) + " inputs; '" + rule_.name() +
                                "' declares " + std::to_string(rule_.inputs.size()));
  std::vector<bool> given(rule_.inputs.size(), false);
  for (size_t slot = 0; slot < rule_.inputs.size(); ++slot) {
    const Symbol &input = rule_.symbol(rule_.inputs[slot]);
    given[slot] = slot < inputs.size() && !inputs[slot].empty();
    if (!given[slot] && !input.tested)
      throw std::invalid_argument("input '" + input.name + "' of '" + rule_.name() +
                                  "' is needed every step (the rule never tests given(" + input.name + "))");
    if (!given[slot])
      continue;
    if (inputs[slot].size() != tensors.size())
      throw std::invalid_argument("input '" + input.name + "' has values for " +
                                  std::to_string(inputs[slot].size()) + " tensors, the group " +
                                  std::to_string(tensors.size()));
    for (size_t k = 0; k < tensors.size(); ++k)
      if (inputs[slot][k].size() != tensors[k].param.size())
        throw std::invalid_argument("input '" + input.name + "' of tensor " + std::to_string(k) + " has " +
                                    std::to_string(inputs[slot][k].size()) + " elements, its tensor " +
                                    std::to_string(tensors[k].param.size()));
  }
  // Every tensor's environment, statement by statement in lockstep, so that
  // a group-wide reduction sees every tensor at the same point.
  size_t numTensors = tensors.size();
  std::vector<std::vector<Value>> envs(numTensors, std::vector<Value>(rule_.symbols.size()));
  std::vector<std::unique_ptr<Evaluator>> evaluators;
  Group group;
  group.given = given;
  uint64_t optimizerStep = static_cast<uint64_t>(random.optimizerStep > 0 ? random.optimizerStep : step);
  for (size_t k = 0; k < numTensors; ++k) {
    std::vector<Value> &env = envs[k];
    TensorState &tensor = tensors[k];
    env[rule_.paramSymbol] = Value::of(tensor.param);
    env[rule_.gradSymbol] = Value::of(grads[k]);
    env[rule_.stepSymbol] = Value::of(static_cast<double>(step));
    const Geometry &geometry = geometries[k];
    env[rule_.rankSymbol] = Value::of(geometry.rank);
    env[rule_.rowsSymbol] = Value::of(static_cast<double>(geometry.rows));
    env[rule_.colsSymbol] = Value::of(static_cast<double>(geometry.cols));
    for (size_t slot = 0; slot < rule_.hypers.size(); ++slot)
      env[rule_.hypers[slot]] = Value::of(hypers[slot]);
    for (size_t slot = 0; slot < rule_.states.size(); ++slot)
      env[rule_.states[slot]] = Value::of(geometry.broadcast(tensor.states[slot], rule_.symbol(rule_.states[slot]).axes));
    for (size_t slot = 0; slot < rule_.scalarStates.size(); ++slot)
      env[rule_.scalarStates[slot]] = Value::of(tensor.scalarStates[slot]);
    // An input left out reads as 0 (only a rule that tests given() runs then).
    for (size_t slot = 0; slot < rule_.inputs.size(); ++slot)
      env[rule_.inputs[slot]] = given[slot] ? Value::of(inputs[slot][k])
                                            : Value::of(std::vector<double>(tensor.param.size(), 0.0));
    uint32_t randomKey = optrt::stochasticBits(random.seed, optimizerStep, random.firstTensor + k);
    evaluators.push_back(std::make_unique<Evaluator>(rule_, env, geometry, &group, randomKey));
    group.tensors.push_back(evaluators.back().get());
  }

  // `state s = f(param);`: set at the start of the first step.
  for (int id : rule_.states)
    if (step == 1 && rule_.symbol(id).initOnFirstStep)
      for (size_t k = 0; k < numTensors; ++k) {
        Value value = evaluators[k]->eval(*rule_.symbol(id).init);
        size_t size = tensors[k].param.size();
        envs[k][id] = value.uniform ? Value::of(std::vector<double>(size, value.scalar)) : std::move(value);
      }
  for (int index : rule_.body) {
    const ast::Stmt &stmt = rule_.ast.stmts[index];
    const Symbol &target = rule_.symbol(stmt.symbol);
    // Every tensor's value first, then the assignments: a group-wide
    // reduction in the statement reads every tensor before it.
    std::vector<Value> values;
    for (size_t k = 0; k < numTensors; ++k)
      values.push_back(evaluators[k]->eval(*stmt.value));
    for (size_t k = 0; k < numTensors; ++k) {
      Value &value = values[k];
      // Per-element buffers stay per-element when assigned a uniform value.
      if (value.uniform && (target.cls == SymbolClass::Param || target.cls == SymbolClass::State ||
                            target.cls == SymbolClass::Grad))
        value = Value::of(std::vector<double>(tensors[k].param.size(), value.scalar));
      envs[k][stmt.symbol] = std::move(value);
    }
  }

  for (size_t k = 0; k < numTensors; ++k) {
    TensorState &tensor = tensors[k];
    std::vector<Value> &env = envs[k];
    tensor.param = std::move(env[rule_.paramSymbol].elements);
    for (size_t slot = 0; slot < rule_.states.size(); ++slot)
      tensor.states[slot] = geometries[k].compact(env[rule_.states[slot]].elements,
                                                  rule_.symbol(rule_.states[slot]).axes);
    for (size_t slot = 0; slot < rule_.scalarStates.size(); ++slot)
      tensor.scalarStates[slot] = env[rule_.scalarStates[slot]].scalar;
  }
}

} // namespace optdsl
