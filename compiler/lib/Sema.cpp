#include "optdsl/Sema.h"

#include "ApplyTransforms.h"
#include "optdsl/Parser.h"
#include "optrt/RuleKernels.h"
#include "optrt/Spelling.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <sstream>
#include <stdexcept>

namespace optdsl {

bool isBuiltin(SymbolClass cls) {
  return cls == SymbolClass::Param || cls == SymbolClass::Grad || cls == SymbolClass::Step ||
         cls == SymbolClass::Dimension;
}

const char *spelling(SymbolClass cls) {
  switch (cls) {
  case SymbolClass::Param: return "built-in";
  case SymbolClass::Grad: return "built-in";
  case SymbolClass::Step: return "built-in";
  case SymbolClass::Dimension: return "built-in";
  case SymbolClass::Hyper: return "hyper";
  case SymbolClass::State: return "state";
  case SymbolClass::ScalarState: return "scalar state";
  case SymbolClass::Let: return "let";
  case SymbolClass::Input: return "input";
  }
  return "name";
}

int CheckedRule::hyperSlot(const std::string &name) const {
  for (size_t i = 0; i < hypers.size(); ++i)
    if (symbols[hypers[i]].name == name)
      return static_cast<int>(i);
  return -1;
}

int CheckedRule::stateSlot(const std::string &name) const {
  for (size_t i = 0; i < states.size(); ++i)
    if (symbols[states[i]].name == name)
      return static_cast<int>(i);
  return -1;
}

int CheckedRule::inputSlot(const std::string &name) const {
  for (size_t i = 0; i < inputs.size(); ++i)
    if (symbols[inputs[i]].name == name)
      return static_cast<int>(i);
  return -1;
}

std::vector<std::string> CheckedRule::hyperNames() const {
  std::vector<std::string> names;
  for (int id : hypers)
    names.push_back(symbols[id].name);
  return names;
}

namespace {

constexpr unsigned kMaxSuggestions = 50;

class Checker {
public:
  Checker(ast::Rule rule, std::shared_ptr<const SourceFile> source, DiagnosticEngine &diags)
      : diags_(diags), afterSyntaxErrors_(diags.hasErrors()) {
    result_.source = std::move(source);
    result_.ast = std::move(rule);
  }

  std::optional<CheckedRule> run() {
    result_.paramSymbol = addBuiltin("param", SymbolClass::Param, ValueKind::Elementwise);
    result_.gradSymbol = addBuiltin("grad", SymbolClass::Grad, ValueKind::Elementwise);
    result_.stepSymbol = addBuiltin("step", SymbolClass::Step, ValueKind::Uniform);
    result_.rankSymbol = addBuiltin("rank", SymbolClass::Dimension, ValueKind::Uniform);
    result_.rowsSymbol = addBuiltin("rows", SymbolClass::Dimension, ValueKind::Uniform);
    result_.colsSymbol = addBuiltin("cols", SymbolClass::Dimension, ValueKind::Uniform);
    std::vector<HyperRequirement> requirements = applyTransforms(result_.ast, *result_.source, diags_);
    declareAll();
    checkRequirements(requirements);
    checkBody();
    reportUnused();
    if (diags_.hasErrors())
      return std::nullopt;
    return std::move(result_);
  }

private:
  /// Each hyper an applied transform uses without declaring must be one of
  /// the rule's (or another transform's).
  void checkRequirements(const std::vector<HyperRequirement> &requirements) {
    for (const HyperRequirement &requirement : requirements) {
      auto it = scope_.find(requirement.name);
      if (it != scope_.end() && result_.symbols[it->second].cls == SymbolClass::Hyper)
        continue;
      // A transform checked on its own passes what the transforms it
      // applies need on to the rules that apply it.
      if (!result_.ast.transform) {
        diags_.error(requirement.range, "transform '" + requirement.transform + "' uses hyper '" + requirement.name +
                                            "', which optimizer '" + result_.ast.name + "' does not declare");
        diags_.note(requirement.applyRange, "applied here");
      }
      // Known from here on, so its uses raise no "unknown name" as well.
      if (it == scope_.end()) {
        result_.symbols.push_back(Symbol{requirement.name, SymbolClass::Hyper, requirement.range, ValueKind::Uniform});
        scope_[requirement.name] = static_cast<int>(result_.symbols.size()) - 1;
        writePhase_.push_back(0);
      }
    }
  }

  int addBuiltin(const char *name, SymbolClass cls, ValueKind kind) {
    Symbol symbol{name, cls, {}, kind};
    symbol.axes = kind == ValueKind::Elementwise ? kElementAxes : 0;
    result_.symbols.push_back(symbol);
    int id = static_cast<int>(result_.symbols.size()) - 1;
    scope_[name] = id;
    writePhase_.push_back(0);
    return id;
  }

  /// Reports a clash with an existing name; returns false when `name` is taken.
  bool declarable(const std::string &name, SourceRange range, SymbolClass cls) {
    if (optrt::isStepHyper(name)) {
      diags_.error(range, "'" + name + "' is reserved: every rule has it, and the runtime sets it each step " +
                              "for loss scaling and clipping (docs/training-step.md)");
      return false;
    }
    auto it = scope_.find(name);
    if (it == scope_.end())
      return true;
    const Symbol &previous = result_.symbols[it->second];
    if (isBuiltin(previous.cls)) {
      diags_.error(range, "'" + name + "' is a built-in name and cannot be redeclared");
    } else if (previous.declRange.begin > range.begin) {
      // A let clashing with a hyper or state further down (those are declared
      // first): the one further down is the redeclaration.
      diags_.error(previous.declRange, "redeclaration of '" + name + "'");
      diags_.note(range, std::string("previous declaration as a ") + spelling(cls) + " is here");
    } else {
      diags_.error(range, "redeclaration of '" + name + "'");
      diags_.note(previous.declRange, std::string("previous declaration as a ") +
                                          spelling(previous.cls) + " is here");
    }
    return false;
  }

  int declare(const ast::Stmt &stmt, SymbolClass cls, ValueKind kind, Axes axes) {
    Symbol symbol{stmt.name, cls, stmt.nameRange, kind};
    symbol.axes = axes;
    result_.symbols.push_back(symbol);
    int id = static_cast<int>(result_.symbols.size()) - 1;
    scope_[stmt.name] = id;
    writePhase_.push_back(0);
    return id;
  }

  // Hypers and states are visible everywhere in the rule; lets only after
  // their statement (they name a value computed at that point).
  void declareAll() {
    for (size_t i = 0; i < result_.ast.stmts.size(); ++i) {
      ast::Stmt &stmt = result_.ast.stmts[i];
      if (stmt.interval && stmt.kind != ast::StmtKind::Hyper)
        diags_.error(stmt.interval->range,
                     "only a hyper declares a range of values; '" + stmt.name + "' is " +
                         (stmt.kind == ast::StmtKind::Assign  ? "assigned here"
                          : stmt.kind == ast::StmtKind::Let   ? "a let"
                          : stmt.kind == ast::StmtKind::State ? "a state"
                          : stmt.kind == ast::StmtKind::Input ? "an input"
                                                              : "a scalar state"));
      if (!stmt.shape.empty() && stmt.kind != ast::StmtKind::State &&
          !(stmt.kind == ast::StmtKind::Scalar && stmt.shape == "group"))
        diags_.error(stmt.shapeRange,
                     stmt.kind == ast::StmtKind::Scalar
                         ? "a scalar state is one value per tensor, or per parameter group ('scalar " + stmt.name +
                               "[group] = ...;'), not per '" + stmt.shape + "'"
                         : "only a state has a shape ('state NAME[rows];'); '" + stmt.name + "' is " +
                                          (stmt.kind == ast::StmtKind::Hyper   ? "a hyper"
                                           : stmt.kind == ast::StmtKind::Input ? "an input"
                                           : stmt.kind == ast::StmtKind::Apply ? "an apply"
                                                                               : "a let"));
      switch (stmt.kind) {
      case ast::StmtKind::Hyper:
        if (declarable(stmt.name, stmt.nameRange, SymbolClass::Hyper))
          declareHyper(stmt);
        break;
      case ast::StmtKind::State:
      case ast::StmtKind::Scalar:
        if (declarable(stmt.name, stmt.nameRange,
                       stmt.kind == ast::StmtKind::Scalar ? SymbolClass::ScalarState
                                                          : SymbolClass::State))
          declareState(stmt);
        break;
      case ast::StmtKind::Input:
        if (declarable(stmt.name, stmt.nameRange, SymbolClass::Input))
          declareInput(stmt);
        break;
      case ast::StmtKind::Apply:
        break; // spliced away by applyTransforms (after an error reported there)
      case ast::StmtKind::Let:
        firstLet_.emplace(stmt.name, &stmt);
        [[fallthrough]];
      case ast::StmtKind::Assign:
        result_.body.push_back(static_cast<int>(i));
        break;
      }
    }
  }

  void declareInput(ast::Stmt &stmt) {
    int id = declare(stmt, SymbolClass::Input, ValueKind::Elementwise, kElementAxes);
    stmt.symbol = id;
    result_.symbols[id].slot = static_cast<int>(result_.inputs.size());
    result_.inputs.push_back(id);
    if (stmt.value)
      diags_.error(stmt.value->range, "input '" + stmt.name +
                                          "' has no value here: the trainer passes it with the gradient "
                                          "(write 'input " + stmt.name + ";')");
  }

  void declareHyper(ast::Stmt &stmt) {
    int id = declare(stmt, SymbolClass::Hyper, ValueKind::Uniform, 0);
    stmt.symbol = id;
    Symbol &symbol = result_.symbols[id];
    symbol.slot = static_cast<int>(result_.hypers.size());
    result_.hypers.push_back(id);
    if (!stmt.value) {
      // In a transform checked on its own, `hyper lr;` is the rule's lr.
      if (!result_.ast.transform)
        diags_.error(stmt.nameRange, "hyper '" + stmt.name + "' needs a default value: hyper " +
                                         stmt.name + " = NUMBER;");
      return;
    }
    std::optional<double> value = signedNumber(*stmt.value, /*allowInfinity=*/false);
    if (!value) {
      diags_.error(stmt.value->range,
                   "the default value of hyper '" + stmt.name + "' must be a number");
      return;
    }
    symbol.defaultValue = *value;
    if (stmt.interval)
      declareRange(stmt, symbol);
  }

  /// `in [lower, upper)`: bounds are numbers or inf, the range holds a
  /// value, and the default lies in it (the compiler relies on the range).
  void declareRange(const ast::Stmt &stmt, Symbol &symbol) {
    const ast::Interval &interval = *stmt.interval;
    std::optional<double> lower = signedNumber(*interval.lower, true);
    std::optional<double> upper = signedNumber(*interval.upper, true);
    for (auto [bound, expr] : {std::pair{&lower, interval.lower.get()}, std::pair{&upper, interval.upper.get()}})
      if (!*bound)
        diags_.error(expr->range, "a bound of the range of hyper '" + stmt.name + "' must be a number or inf");
    if (!lower || !upper)
      return;
    optrt::HyperRange range{*lower, *upper, interval.lowerOpen, interval.upperOpen};
    bool empty = *lower > *upper || (*lower == *upper && (range.lowerOpen || range.upperOpen)) ||
                 (std::isinf(*lower) && *lower > 0) || (std::isinf(*upper) && *upper < 0);
    if (empty) {
      diags_.error(interval.range, "the range " + range.str() + " of hyper '" + stmt.name + "' holds no value");
      return;
    }
    if (!range.contains(symbol.defaultValue)) {
      diags_.error(stmt.value->range, "the default value " + optrt::HyperRange::format(symbol.defaultValue) +
                                          " of hyper '" + stmt.name + "' is outside its range " + range.str());
      diags_.note(interval.range, "the range is declared here");
      return;
    }
    symbol.range = range;
  }

  /// A number with at most one '+' or '-' in front; `inf` too where allowed.
  static std::optional<double> signedNumber(const ast::Expr &expr, bool allowInfinity) {
    const ast::Expr *value = &expr;
    double sign = 1;
    if (value->kind == ast::ExprKind::Unary && value->unaryOp != ast::UnaryOp::Not) {
      sign *= value->unaryOp == ast::UnaryOp::Negate ? -1 : 1;
      value = value->operands[0].get();
    }
    if (value->kind == ast::ExprKind::Number)
      return sign * value->number;
    if (allowInfinity && value->kind == ast::ExprKind::Name && value->name == "inf")
      return sign * std::numeric_limits<double>::infinity();
    return std::nullopt;
  }

  /// What a state varies along: every axis, or (`state vr[rows];`,
  /// `state vc[cols];`) the batch and its rows or its columns.
  Axes stateAxes(const ast::Stmt &stmt) {
    if (stmt.kind == ast::StmtKind::Scalar)
      return 0;
    if (stmt.shape.empty())
      return kElementAxes;
    noteMatrixUse(stmt.shapeRange);
    if (stmt.shape == "rows")
      return kBatchAxis | kRowAxis;
    if (stmt.shape == "cols")
      return kBatchAxis | kColAxis;
    diags_.error(stmt.shapeRange, "a state spans 'rows' (one value per row of each matrix) or 'cols' (one per "
                                  "column), not '" + stmt.shape + "'");
    return kElementAxes;
  }

  /// `rank`, `rows`, `cols` read the hidden scalar state the runtime fills
  /// from the tensor's shape (Symbol::shapeDimension), declared here once.
  void declareShapeScalar(int dimension) {
    Symbol &builtin = result_.symbols[dimension];
    if (builtin.shapeScalar >= 0)
      return;
    int k = dimension == result_.rankSymbol ? 0 : dimension == result_.rowsSymbol ? 1 : 2;
    Symbol symbol{std::string(optrt::kShapeScalars[k]), SymbolClass::ScalarState, SourceRange{}, ValueKind::Uniform};
    symbol.shapeDimension = k;
    symbol.slot = static_cast<int>(result_.scalarStates.size());
    symbol.written = symbol.read = true; // by the runtime; read through the built-in
    result_.symbols.push_back(symbol);
    writePhase_.push_back(0);
    result_.symbols[dimension].shapeScalar = static_cast<int>(result_.symbols.size()) - 1;
    result_.scalarStates.push_back(result_.symbols[dimension].shapeScalar);
  }

  /// The rule reads tensors as matrices; matrixUse is the first place in
  /// the text that says so.
  void noteMatrixUse(SourceRange range) {
    if (!result_.matrixShaped || range.begin < result_.matrixUse.begin)
      result_.matrixUse = range;
    result_.matrixShaped = true;
  }

  void declareState(ast::Stmt &stmt) {
    bool scalar = stmt.kind == ast::StmtKind::Scalar;
    int id = declare(stmt, scalar ? SymbolClass::ScalarState : SymbolClass::State,
                     scalar ? ValueKind::Uniform : ValueKind::Elementwise, stateAxes(stmt));
    stmt.symbol = id;
    result_.symbols[id].perGroup = scalar && stmt.shape == "group";
    std::vector<int> &slots = scalar ? result_.scalarStates : result_.states;
    result_.symbols[id].slot = static_cast<int>(slots.size());
    slots.push_back(id);
    result_.symbols[id].init = stmt.value.get();
  }

  // Initial values are computed once, before the first step, from hypers.
  void checkInitialValues() {
    for (ast::Stmt &stmt : result_.ast.stmts) {
      if ((stmt.kind != ast::StmtKind::State && stmt.kind != ast::StmtKind::Scalar) ||
          !stmt.value || stmt.symbol < 0)
        continue;
      initialValueOf_ = stmt.symbol;
      initialValueReadsParam_ = false;
      check(*stmt.value);
      result_.symbols[stmt.symbol].initOnFirstStep = initialValueReadsParam_;
      initialValueOf_ = -1;
    }
  }

  void checkBody() {
    checkInitialValues();
    int phase = 0;
    for (int index : result_.body) {
      ast::Stmt &stmt = result_.ast.stmts[index];
      check(*stmt.value);
      // Phases never go back: a statement runs no earlier than the one before
      // it, so a later pass never sees a state overwritten by an earlier one.
      phase = std::max(phase, stmt.value->phase);
      stmt.phase = phase;
      if (stmt.kind == ast::StmtKind::Let)
        checkLet(stmt);
      else
        checkAssign(stmt);
    }
    int maxPhase = 0;
    for (const ast::Expr *reduction : result_.reductions)
      maxPhase = std::max(maxPhase, reduction->phase);
    for (int index : result_.body)
      maxPhase = std::max(maxPhase, result_.ast.stmts[index].phase);
    result_.numPhases = maxPhase + 1;
    // After a syntax error the statement that assigns param may be the one
    // that was dropped; saying it is missing would only mislead.
    if (!result_.symbols[result_.paramSymbol].written && !afterSyntaxErrors_ && !result_.ast.transform)
      diags_.error(result_.ast.nameRange,
                   "optimizer '" + result_.ast.name + "' never assigns 'param'");
  }

  void checkLet(ast::Stmt &stmt) {
    if (!declarable(stmt.name, stmt.nameRange, SymbolClass::Let))
      return;
    int id = declare(stmt, SymbolClass::Let, stmt.value->valueKind, stmt.value->axes);
    stmt.symbol = id;
    letValue_[id] = stmt.value.get();
    writePhase_[id] = stmt.phase;
  }

  void checkAssign(ast::Stmt &stmt) {
    auto it = scope_.find(stmt.name);
    if (it == scope_.end()) {
      diags_.error(stmt.nameRange,
                   "unknown name '" + stmt.name + "'" +
                       (maySuggest() ? optrt::didYouMean(stmt.name, assignableNames()) : ""));
      return;
    }
    Symbol &target = result_.symbols[it->second];
    stmt.symbol = it->second;
    switch (target.cls) {
    case SymbolClass::Param:
      break;
    case SymbolClass::State:
      if (stmt.value->axes & ~target.axes) {
        // A [rows] state spans the batch and the rows: only the columns can be extra.
        bool perRow = target.axes & kRowAxis;
        diags_.error(stmt.value->range, "state '" + stmt.name + "' holds one value per " + (perRow ? "row" : "column") +
                                            ", but this value varies along the " + (perRow ? "columns" : "rows") +
                                            "; reduce it with " +
                                            (perRow ? "row_mean() or row_sum()" : "col_mean() or col_sum()"));
        diags_.note(target.declRange, "declared here");
      }
      break;
    case SymbolClass::ScalarState:
      if (stmt.value->valueKind == ValueKind::Elementwise) {
        diags_.error(stmt.value->range, "scalar state '" + stmt.name +
                                            "' is assigned an elementwise value; use a "
                                            "reduction (sum, norm, mean, max) or a 'state'");
        diags_.note(target.declRange, "declared as a scalar state here");
      } else if (const ast::Expr *part = target.perGroup ? perTensorPart(*stmt.value) : nullptr) {
        diags_.error(part->range, "scalar '" + stmt.name +
                                      "' is one value for the whole parameter group, but this differs from tensor "
                                      "to tensor; take it through group_sum, group_mean, group_norm or group_max, "
                                      "or keep '" + stmt.name + "' per tensor ('scalar " + stmt.name + " = ...;')");
        diags_.note(target.declRange, "declared per group here");
      }
      break;
    case SymbolClass::Grad:
      // The gradient the rest of the step sees (clipping, decay as L2,
      // centralisation: what a transform does); nothing is stored.
      break;
    case SymbolClass::Step:
    case SymbolClass::Dimension:
      diags_.error(stmt.nameRange, "cannot assign to '" + stmt.name + "': it is read-only");
      return;
    case SymbolClass::Input:
      diags_.error(stmt.nameRange, "cannot assign to input '" + stmt.name +
                                       "': the trainer passes it each step (keep what you derive from it "
                                       "in a state)");
      diags_.note(target.declRange, "declared as an input here");
      return;
    case SymbolClass::Hyper:
      diags_.error(stmt.nameRange, "cannot assign to hyper '" + stmt.name +
                                       "'; hypers change only between steps");
      diags_.note(target.declRange, "declared as a hyper here");
      return;
    case SymbolClass::Let:
      diags_.error(stmt.nameRange, "cannot assign to let '" + stmt.name +
                                       "'; a let names one value (declare a state to update it)");
      diags_.note(target.declRange, "declared as a let here");
      return;
    }
    target.written = true;
    writePhase_[stmt.symbol] = stmt.phase;
  }

  /// The first part of `expr` that can differ between the tensors of one
  /// parameter group (what a `scalar NAME[group]` may not take), or null:
  /// numbers, hypers, the step, group-wide reductions, initial(), scalars
  /// per group, and lets and functions of those are the same for all.
  const ast::Expr *perTensorPart(const ast::Expr &expr) const {
    if (expr.kind == ast::ExprKind::Number)
      return nullptr;
    if (expr.kind == ast::ExprKind::Name) {
      if (expr.symbol < 0)
        return nullptr; // reported already
      const Symbol &symbol = result_.symbols[expr.symbol];
      switch (symbol.cls) {
      case SymbolClass::Hyper:
      case SymbolClass::Step:
        return nullptr;
      case SymbolClass::ScalarState:
        return symbol.perGroup ? nullptr : &expr;
      case SymbolClass::Let: {
        auto it = letValue_.find(expr.symbol);
        return it != letValue_.end() && perTensorPart(*it->second) ? &expr : nullptr;
      }
      default:
        return &expr;
      }
    }
    if (expr.kind == ast::ExprKind::Call) {
      const BuiltinInfo *info = lookupBuiltin(expr.name, static_cast<unsigned>(expr.operands.size()));
      if (!info)
        return nullptr; // reported already
      if (info->isReduction)
        return info->groupWide ? nullptr : &expr;
      if (info->id == Builtin::Initial)
        return nullptr;
      if (info->id == Builtin::Given || info->id == Builtin::Random)
        return &expr;
    }
    for (const auto &operand : expr.operands)
      if (const ast::Expr *part = perTensorPart(*operand))
        return part;
    return nullptr;
  }

  /// Whether to look for a "did you mean": each look compares the name with
  /// every name in scope, so only the first kMaxSuggestions unknown names get
  /// one (thousands of them took quadratic time; clang limits its spelling
  /// correction the same way).
  bool maySuggest() { return suggestions_++ < kMaxSuggestions; }

  std::vector<std::string> visibleNames() const {
    std::vector<std::string> names;
    for (const auto &[name, id] : scope_)
      names.push_back(name);
    return names;
  }

  std::vector<std::string> assignableNames() const {
    std::vector<std::string> names{"param", "grad"};
    for (int id : result_.states)
      names.push_back(result_.symbols[id].name);
    for (int id : result_.scalarStates)
      names.push_back(result_.symbols[id].name);
    return names;
  }

  /// The first let statement named `name`, if any (looked up, not searched:
  /// a search per unknown name made thousands of them quadratic).
  const ast::Stmt *letNamed(const std::string &name) const {
    auto it = firstLet_.find(name);
    return it == firstLet_.end() ? nullptr : it->second;
  }

  void checkName(ast::Expr &expr) {
    auto it = scope_.find(expr.name);
    if (it == scope_.end()) {
      // A let is in scope only after its statement; it is no unknown name.
      const ast::Stmt *let = letNamed(expr.name);
      if (let && initialValueOf_ >= 0) {
        diags_.error(expr.range, "the initial value of '" + result_.symbols[initialValueOf_].name +
                                     "' may use only numbers and hypers, not let '" + expr.name +
                                     "'");
      } else if (let && expr.range.begin >= let->range.begin && expr.range.end <= let->range.end) {
        diags_.error(expr.range, "let '" + expr.name + "' is used in its own value");
      } else if (let) {
        diags_.error(expr.range, "let '" + expr.name + "' is used before its declaration");
        diags_.note(let->nameRange, "declared here");
      } else {
        diags_.error(expr.range,
                     "unknown name '" + expr.name + "'" +
                         (maySuggest() ? optrt::didYouMean(expr.name, visibleNames()) : ""));
      }
      return;
    }
    expr.symbol = it->second;
    Symbol &symbol = result_.symbols[it->second];
    if (initialValueOf_ >= 0 && symbol.cls != SymbolClass::Hyper) {
      // An elementwise state may start from the params (set on the first
      // step: Symbol::initOnFirstStep).
      const Symbol &initialized = result_.symbols[initialValueOf_];
      bool elementwiseState = initialized.cls == SymbolClass::State && initialized.axes == kElementAxes;
      if (symbol.cls == SymbolClass::Param && elementwiseState) {
        initialValueReadsParam_ = true;
        symbol.read = true;
        setAxes(expr, kElementAxes);
        return;
      }
      diags_.error(expr.range, "the initial value of '" + result_.symbols[initialValueOf_].name +
                                   "' may use only numbers" +
                                   (elementwiseState ? ", hypers and param" : " and hypers") + ", not " +
                                   spelling(symbol.cls) + " '" + expr.name + "'");
      return;
    }
    symbol.read = true;
    setAxes(expr, symbol.axes);
    expr.phase = writePhase_[it->second];
    // Last: declaring the hidden state grows the symbol table, which moves
    // `symbol`.
    if (symbol.cls == SymbolClass::Dimension)
      declareShapeScalar(it->second);
  }

  static void setAxes(ast::Expr &expr, Axes axes) {
    expr.axes = axes;
    expr.valueKind = axes ? ValueKind::Elementwise : ValueKind::Uniform;
  }

  void checkCall(ast::Expr &expr) {
    const BuiltinInfo *info = lookupBuiltin(expr.name, static_cast<unsigned>(expr.operands.size()));
    if (!info) {
      std::vector<const BuiltinInfo *> named = builtinsNamed(expr.name);
      if (named.empty()) {
        diags_.error(expr.nameRange, "unknown function '" + expr.name + "'" +
                                         optrt::didYouMean(expr.name, builtinNames()));
      } else {
        // Fewest arguments first: "takes 1 or 2 arguments".
        std::sort(named.begin(), named.end(),
                  [](const BuiltinInfo *a, const BuiltinInfo *b) { return a->arity < b->arity; });
        std::string expected;
        for (const BuiltinInfo *candidate : named)
          expected += (expected.empty() ? "" : " or ") + std::to_string(candidate->arity);
        diags_.error(expr.range, "function '" + expr.name + "' takes " + expected + " argument" +
                                     (named.size() == 1 && named[0]->arity == 1 ? "" : "s") +
                                     ", but " + std::to_string(expr.operands.size()) +
                                     (expr.operands.size() == 1 ? " was" : " were") + " given");
      }
      return;
    }
    expr.builtin = info->id;
    if (info->id == Builtin::Initial) {
      checkInitial(expr);
      return;
    }
    if (info->id == Builtin::Given) {
      checkGiven(expr);
      return;
    }
    if (info->id == Builtin::Random) {
      checkRandom(expr);
      return;
    }
    if (info->isReduction) {
      if (initialValueOf_ >= 0) {
        diags_.error(expr.range, "the initial value of '" +
                                     result_.symbols[initialValueOf_].name +
                                     "' cannot use a reduction");
        return;
      }
      // A reduction inside the argument is one of an earlier phase, as if a
      // `let` had named it: the argument's phase counts it.
      const ast::Expr &argument = *expr.operands[0];
      check(*expr.operands[0]);
      if (info->reducedAxis)
        noteMatrixUse(expr.nameRange);
      // Along one axis: what the argument varies along but that; over the
      // tensor (or the group): one value.
      setAxes(expr, info->reducedAxis ? argument.axes & ~info->reducedAxis : 0);
      // The whole tensor must be through the pass that computes the argument
      // before the result can be used: the next phase. An argument with one
      // value per row, column or matrix is no pass over the elements: it is
      // reduced where it is computed, between the passes.
      bool betweenPasses = argument.axes != 0 && (argument.axes & (kRowAxis | kColAxis)) != (kRowAxis | kColAxis);
      expr.phase = argument.phase + (betweenPasses ? 0 : 1);
      expr.reduction = static_cast<int>(result_.reductions.size());
      result_.reductions.push_back(&expr);
      return;
    }
    combineOperands(expr);
  }

  /// The symbol `argument` names when it is a name of class `cls`, else -1
  /// (initial() and given() take a name, not a value).
  int symbolNamedBy(const ast::Expr &argument, SymbolClass cls) const {
    if (argument.kind != ast::ExprKind::Name)
      return -1;
    auto it = scope_.find(argument.name);
    return it != scope_.end() && result_.symbols[it->second].cls == cls ? it->second : -1;
  }

  /// Reports `what` (a function and why) used in an initial value; true then.
  bool refusedInInitialValue(const ast::Expr &expr, const std::string &what) {
    if (initialValueOf_ < 0)
      return false;
    diags_.error(expr.range, "the initial value of '" + result_.symbols[initialValueOf_].name + "' cannot use " + what);
    return true;
  }

  /// `initial(HYPER)` reads the hidden scalar state `initial_HYPER`
  /// (Symbol::initialOfHyper), declared on its first use.
  void checkInitial(ast::Expr &expr) {
    ast::Expr &argument = *expr.operands[0];
    int hyper = symbolNamedBy(argument, SymbolClass::Hyper);
    if (hyper < 0) {
      diags_.error(argument.range, "initial() takes the name of a hyper" +
                                       (argument.kind == ast::ExprKind::Name
                                            ? optrt::didYouMean(argument.name, hyperNamesSoFar())
                                            : std::string()));
      return;
    }
    if (refusedInInitialValue(expr, "initial(): a hyper's value is its value there"))
      return;
    argument.symbol = hyper;
    argument.valueKind = ValueKind::Uniform;
    result_.symbols[hyper].read = true;
    std::string name = "initial_" + argument.name;
    int id = -1;
    for (size_t i = 0; i < result_.symbols.size(); ++i)
      if (result_.symbols[i].initialOfHyper == hyper)
        id = static_cast<int>(i);
    if (id < 0) {
      if (scope_.count(name)) {
        diags_.error(expr.range, "initial(" + argument.name + ") keeps its value in a scalar state named '" +
                                     name + "', which this rule already declares; rename that one");
        return;
      }
      Symbol symbol{name, SymbolClass::ScalarState, SourceRange{}, ValueKind::Uniform};
      symbol.init = &argument;
      symbol.initialOfHyper = hyper;
      symbol.slot = static_cast<int>(result_.scalarStates.size());
      symbol.written = true; // by its initial value; never by the body
      result_.symbols.push_back(symbol);
      writePhase_.push_back(0);
      id = static_cast<int>(result_.symbols.size()) - 1;
      result_.scalarStates.push_back(id);
    }
    result_.symbols[id].read = true;
    expr.symbol = id;
    expr.valueKind = ValueKind::Uniform;
    expr.phase = 0;
  }

  /// `given(INPUT)`: 1 when the trainer passed the input this step, else 0
  /// (uniform: the whole tensor has it or not).
  void checkGiven(ast::Expr &expr) {
    ast::Expr &argument = *expr.operands[0];
    int input = symbolNamedBy(argument, SymbolClass::Input);
    if (input < 0) {
      std::vector<std::string> inputs;
      for (int id : result_.inputs)
        inputs.push_back(result_.symbols[id].name);
      diags_.error(argument.range,
                   "given() takes the name of an input" +
                       (inputs.empty() ? std::string(" (declare one: 'input NAME;')")
                        : argument.kind == ast::ExprKind::Name ? optrt::didYouMean(argument.name, inputs)
                                                               : std::string()));
      return;
    }
    if (refusedInInitialValue(expr, "given(): inputs come with steps"))
      return;
    argument.symbol = input;
    setAxes(argument, kElementAxes);
    result_.symbols[input].tested = true;
    expr.valueKind = ValueKind::Uniform;
    expr.phase = 0;
  }

  /// `random(STREAM)`: per element, uniform in [0, 1); STREAM, a whole
  /// number from 0 to 65535, picks independent draws (random(0) and
  /// random(1) in one statement differ).
  void checkRandom(ast::Expr &expr) {
    const ast::Expr &argument = *expr.operands[0];
    bool whole = argument.kind == ast::ExprKind::Number && argument.number >= 0 && argument.number <= 65535 &&
                 argument.number == std::floor(argument.number);
    if (!whole) {
      diags_.error(argument.range, "random() takes a stream number: a whole number from 0 to 65535");
      return;
    }
    if (refusedInInitialValue(expr, "random(): draws come with steps"))
      return;
    result_.usesRandom = true;
    setAxes(expr, kElementAxes);
    expr.phase = 0;
  }

  std::vector<std::string> hyperNamesSoFar() const {
    std::vector<std::string> names;
    for (int id : result_.hypers)
      names.push_back(result_.symbols[id].name);
    return names;
  }

  void combineOperands(ast::Expr &expr) {
    Axes axes = 0;
    expr.phase = 0;
    for (auto &operand : expr.operands) {
      check(*operand);
      axes |= operand->axes;
      expr.phase = std::max(expr.phase, operand->phase);
    }
    setAxes(expr, axes);
  }

  void check(ast::Expr &expr) {
    switch (expr.kind) {
    case ast::ExprKind::Number:
      setAxes(expr, 0);
      break;
    case ast::ExprKind::Name:
      checkName(expr);
      break;
    case ast::ExprKind::Call:
      checkCall(expr);
      break;
    case ast::ExprKind::Unary:
    case ast::ExprKind::Binary:
    case ast::ExprKind::Conditional:
      combineOperands(expr);
      break;
    }
  }

  void reportUnused() {
    // A statement rejected by an error may be the one that used or assigned
    // a name; the warning would only repeat the error.
    if (diags_.hasErrors())
      return;
    for (const Symbol &symbol : result_.symbols) {
      if (symbol.cls == SymbolClass::Hyper && !symbol.read)
        diags_.warning(symbol.declRange, "hyper '" + symbol.name + "' is never used");
      if (symbol.cls == SymbolClass::Input && !symbol.read)
        diags_.warning(symbol.declRange, "input '" + symbol.name + "' is never read");
      if (symbol.cls != SymbolClass::State && symbol.cls != SymbolClass::ScalarState)
        continue;
      if (!symbol.read && !symbol.written)
        diags_.warning(symbol.declRange, std::string(spelling(symbol.cls)) + " '" + symbol.name +
                                             "' is never used");
      else if (!symbol.read)
        diags_.warning(symbol.declRange, std::string(spelling(symbol.cls)) + " '" + symbol.name +
                                             "' is written but never read");
      // A state taken from `param` and never assigned is a snapshot of the
      // first step's params (Prodigy's p0): meant, not a slip.
      else if (!symbol.written && !symbol.initOnFirstStep)
        diags_.warning(symbol.declRange, std::string(spelling(symbol.cls)) + " '" + symbol.name +
                                             "' is never assigned; it keeps its initial value");
    }
  }

  DiagnosticEngine &diags_;
  bool afterSyntaxErrors_;
  CheckedRule result_;
  std::map<std::string, int> scope_;
  std::vector<int> writePhase_; // per symbol: the phase of its latest value
  int initialValueOf_ = -1;
  bool initialValueReadsParam_ = false;
  unsigned suggestions_ = 0;
  std::map<std::string, const ast::Stmt *> firstLet_;
  std::map<int, const ast::Expr *> letValue_; // per let symbol: its value
};

} // namespace

std::optional<CheckedRule> checkRule(ast::Rule rule, std::shared_ptr<const SourceFile> source,
                                     DiagnosticEngine &diags) {
  return Checker(std::move(rule), std::move(source), diags).run();
}

std::optional<CheckedRule> compileSource(std::shared_ptr<const SourceFile> file,
                                         std::ostream &diagnostics) {
  DiagnosticEngine diags(*file);
  std::optional<ast::Rule> rule = parseRule(*file, diags);
  std::optional<CheckedRule> checked;
  if (rule)
    checked = checkRule(std::move(*rule), file, diags);
  diags.print(diagnostics);
  if (diags.hasErrors())
    return std::nullopt;
  return checked;
}

CheckedRule loadRuleFile(const std::string &path) {
  auto file = std::make_shared<const SourceFile>(SourceFile::load(path));
  std::ostringstream diagnostics;
  std::optional<CheckedRule> rule = compileSource(file, diagnostics);
  if (!rule)
    throw std::runtime_error("rule file '" + path + "' has errors:\n" + diagnostics.str());
  return std::move(*rule);
}

} // namespace optdsl
