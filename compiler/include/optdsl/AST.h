// The AST of a .opt file. Every node carries its SourceRange. Sema annotates
// nodes in place (resolved symbol, builtin, kind, phase); it never rebuilds
// the tree, so diagnostics from every stage point at the user's text.
#pragma once

#include "optdsl/Source.h"

#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

namespace optdsl {

enum class Builtin;

/// How often a value changes: once per step for a whole tensor (hypers,
/// `step`, scalar states, reductions), or per element.
enum class ValueKind { Uniform, Elementwise };

/// The axes a value varies along, as a bit set. A tensor is read as a stack
/// of matrices, batch × rows × cols: its last two dimensions are the rows and
/// columns, the ones before them the batch (rank 1: one row of n columns).
/// An element's values vary along all three, a `state vr[rows]` along the
/// batch and the rows (one value per row, the same in every column), a
/// uniform value along none. Every value is read as if broadcast to every
/// element: that defines what a reduction of it means.
using Axes = unsigned;
inline constexpr Axes kBatchAxis = 1, kRowAxis = 2, kColAxis = 4;
inline constexpr Axes kElementAxes = kBatchAxis | kRowAxis | kColAxis;

namespace ast {

enum class ExprKind { Number, Name, Unary, Binary, Conditional, Call };
enum class UnaryOp { Negate, Plus, Not };
enum class BinaryOp { Add, Sub, Mul, Div, Pow, Lt, Le, Gt, Ge, Eq, Ne, And, Or };

const char *spelling(UnaryOp op);
const char *spelling(BinaryOp op);

struct Expr {
  ExprKind kind;
  SourceRange range;
  double number = 0;                   // Number
  std::string name;                    // Name, Call (callee)
  SourceRange nameRange;               // Call: the callee's range
  UnaryOp unaryOp = UnaryOp::Plus;     // Unary
  BinaryOp binaryOp = BinaryOp::Add;   // Binary
  std::vector<std::unique_ptr<Expr>> operands; // Unary 1, Binary 2, Conditional 3, Call n
  uint32_t depth = 1;                  // height of this subtree

  // Filled by sema.
  int symbol = -1;              // Name: index into CheckedRule::symbols
  Builtin builtin{};            // Call
  ValueKind valueKind = ValueKind::Uniform; // Elementwise exactly when axes != 0
  Axes axes = 0;                // what the value varies along
  int phase = 0;                // the pass in which this value is available
  int reduction = -1;           // Call to a reduction: its index in CheckedRule::reductions
};
using ExprPtr = std::unique_ptr<Expr>;

/// Input: `input NAME;`, a per-element tensor the trainer passes with the
/// gradient (Sophia's Hessian estimate), possibly not every step.
/// Apply: `apply NAME;`, the statements of transform NAME in its place
/// (dsl/transforms/NAME.opt; sema splices them in).
enum class StmtKind { Hyper, State, Scalar, Let, Assign, Input, Apply };
const char *spelling(StmtKind kind);

/// `in [lower, upper)` after a hyper's value: the values it allows.
struct Interval {
  SourceRange range;
  ExprPtr lower, upper;
  bool lowerOpen = false, upperOpen = false;
};

struct Stmt {
  StmtKind kind;
  SourceRange range;
  std::string name;
  SourceRange nameRange;
  ExprPtr value; // null for `state NAME;`
  /// `state vr[rows];`: the axis a state spans (`rows` or `cols`, checked by
  /// sema); empty for one value per element and for every other statement.
  std::string shape;
  SourceRange shapeRange;
  std::unique_ptr<Interval> interval; // null unless written

  // Filled by sema.
  int symbol = -1;
  int phase = 0;
};

struct Rule {
  /// `transform NAME { ... }`: a piece rules apply, not an optimizer.
  bool transform = false;
  std::string name;
  SourceRange nameRange;
  SourceRange range;
  std::vector<Stmt> stmts;
};

/// `--emit=ast`: one node per line, indented, with `@line:col-line:col`.
void print(std::ostream &out, const Rule &rule, const SourceFile &file);

} // namespace ast
} // namespace optdsl
