// Semantic analysis: resolves names, infers the kind (uniform or elementwise)
// and phase of every value, and reports every mistake in a rule with its
// location. The result, a CheckedRule, is what the interpreter and the code
// generators consume.
#pragma once

#include "optdsl/AST.h"
#include "optdsl/Builtins.h"
#include "optdsl/Diagnostics.h"
#include "optrt/HyperRange.h"

#include <iosfwd>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace optdsl {

/// Dimension: `rank`, `rows`, `cols`, the tensor's shape as the rule reads
/// it (uniform, per tensor).
enum class SymbolClass { Param, Grad, Step, Dimension, Hyper, State, ScalarState, Let, Input };
const char *spelling(SymbolClass cls);
bool isBuiltin(SymbolClass cls);

struct Symbol {
  std::string name;
  SymbolClass cls;
  SourceRange declRange;       // empty for built-ins
  ValueKind kind = ValueKind::Uniform;
  /// What the value varies along (State: kElementAxes, or a `[rows]` or
  /// `[cols]` state's batch and rows or columns; ScalarState: none).
  Axes axes = 0;
  double defaultValue = 0;     // Hyper
  optrt::HyperRange range;     // Hyper: the values it allows
  const ast::Expr *init = nullptr; // State, ScalarState: initial value (null: 0)
  /// State whose initial value reads `param` (`state slow = param;`): it is
  /// 0 until the group's first step, which sets it from the params at its
  /// start, before anything else (as torch optimizers create their state on
  /// the first step); every backend does this in the step itself.
  bool initOnFirstStep = false;
  /// The hidden scalar state behind `initial(HYPER)` (named `initial_HYPER`):
  /// initialised from the hyper when the group is added, never written, so
  /// it keeps the construction-time value (AdaBound's base lr) whatever a
  /// schedule or an override sets later. -1 for every other symbol.
  int initialOfHyper = -1;
  /// The hidden scalar state behind `rank` (0), `rows` (1) or `cols` (2)
  /// (named optrt::kShapeScalars[k]), declared on its first read: the
  /// runtime sets it from the tensor's shape. -1 for every other symbol.
  int shapeDimension = -1;
  /// Dimension: the hidden scalar state that holds it (-1 until read).
  int shapeScalar = -1;
  /// Input whose presence the rule tests (`given(NAME)`): the trainer may
  /// leave it out of a step, and then it reads as 0. An input never tested
  /// is needed every step (the runtime refuses a step without it).
  bool tested = false;
  /// ScalarState `scalar NAME[group] = ...;`: one value for the whole
  /// parameter group (Prodigy's d). Sema checks that every value assigned to
  /// it is the same for every tensor of the group (hypers, the step,
  /// group-wide reductions, other such scalars), so the copy each tensor
  /// keeps stays the same bits.
  bool perGroup = false;
  int slot = -1;               // index among hypers / states / scalar states / inputs
  bool read = false;
  bool written = false;
};

struct CheckedRule {
  std::shared_ptr<const SourceFile> source;
  ast::Rule ast;
  std::vector<Symbol> symbols;
  std::vector<int> hypers;       // symbol ids, declaration order
  std::vector<int> states;
  std::vector<int> scalarStates;
  std::vector<int> inputs;       // `input NAME;`, declaration order
  bool usesRandom = false;       // some `random(stream)` (the kernels need the tensor's key)
  /// The rule reads tensors as matrices: a `[rows]`/`[cols]` state or a
  /// row_*/col_* reduction (the CPU kernels take these, not the CUDA
  /// kernels or q8 layouts yet; `rank`, `rows` and `cols` alone every
  /// backend takes); matrixUse is the first in the text.
  bool matrixShaped = false;
  SourceRange matrixUse;
  std::vector<int> body;         // indices into ast.stmts of Let and Assign statements
  std::vector<const ast::Expr *> reductions;
  int numPhases = 1;
  int paramSymbol = -1, gradSymbol = -1, stepSymbol = -1;
  int rankSymbol = -1, rowsSymbol = -1, colsSymbol = -1;

  const std::string &name() const { return ast.name; }
  const Symbol &symbol(int id) const { return symbols[id]; }
  /// -1 when the rule has no such hyper.
  int hyperSlot(const std::string &name) const;
  int stateSlot(const std::string &name) const;
  int inputSlot(const std::string &name) const;
  std::vector<std::string> hyperNames() const;
};

/// Checks a parsed rule. Returns nullopt when an error was reported.
std::optional<CheckedRule> checkRule(ast::Rule rule, std::shared_ptr<const SourceFile> source,
                                     DiagnosticEngine &diags);

/// Parses and checks `file`; every diagnostic is rendered to `diagnostics`.
std::optional<CheckedRule> compileSource(std::shared_ptr<const SourceFile> file,
                                         std::ostream &diagnostics);

/// Loads, parses and checks a rule file; throws std::runtime_error carrying
/// the rendered diagnostics when the file cannot be read or has errors.
CheckedRule loadRuleFile(const std::string &path);

} // namespace optdsl
