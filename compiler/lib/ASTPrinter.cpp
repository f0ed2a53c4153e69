#include "optdsl/AST.h"

#include <algorithm>

#include <iomanip>
#include <ostream>
#include <sstream>
#include <vector>

namespace optdsl::ast {

const char *spelling(UnaryOp op) {
  switch (op) {
  case UnaryOp::Negate: return "-";
  case UnaryOp::Plus: return "+";
  case UnaryOp::Not: return "!";
  }
  return "?";
}

const char *spelling(BinaryOp op) {
  switch (op) {
  case BinaryOp::Add: return "+";
  case BinaryOp::Sub: return "-";
  case BinaryOp::Mul: return "*";
  case BinaryOp::Div: return "/";
  case BinaryOp::Pow: return "^";
  case BinaryOp::Lt: return "<";
  case BinaryOp::Le: return "<=";
  case BinaryOp::Gt: return ">";
  case BinaryOp::Ge: return ">=";
  case BinaryOp::Eq: return "==";
  case BinaryOp::Ne: return "!=";
  case BinaryOp::And: return "&&";
  case BinaryOp::Or: return "||";
  }
  return "?";
}

const char *spelling(StmtKind kind) {
  switch (kind) {
  case StmtKind::Hyper: return "Hyper";
  case StmtKind::State: return "State";
  case StmtKind::Scalar: return "Scalar";
  case StmtKind::Let: return "Let";
  case StmtKind::Input: return "Input";
  case StmtKind::Apply: return "Apply";
  case StmtKind::Assign: return "Assign";
  }
  return "?";
}

namespace {

class Printer {
public:
  Printer(std::ostream &out, const SourceFile &file) : out_(out), file_(file) {}

  void rule(const Rule &rule) {
    out_ << "Optimizer '" << rule.name << "' " << loc(rule.nameRange) << "\n";
    for (const Stmt &stmt : rule.stmts) {
      out_ << "  " << spelling(stmt.kind) << " '" << stmt.name << "' " << loc(stmt.range) << "\n";
      if (!stmt.shape.empty())
        out_ << "    Shape '" << stmt.shape << "' " << loc(stmt.shapeRange) << "\n";
      if (stmt.value)
        expr(*stmt.value, 2);
      if (const Interval *interval = stmt.interval.get()) {
        out_ << "    Interval " << (interval->lowerOpen ? "(" : "[") << " " << (interval->upperOpen ? ")" : "]")
             << " " << loc(interval->range) << "\n";
        expr(*interval->lower, 3);
        expr(*interval->upper, 3);
      }
    }
  }

private:
  /// `@line:col-line:col`; a statement a transform brought in (`apply`)
  /// names its file: `@FILE:line:col-line:col`.
  std::string loc(SourceRange range) const {
    auto [file, begin] = file_.locate(range.begin);
    uint32_t endOffset = begin + (std::max(range.end, range.begin) - range.begin);
    LineCol from = file->lineCol(begin), to = file->lineCol(endOffset);
    return "@" + (file == &file_ ? std::string() : file->name() + ":") + std::to_string(from.line) + ":" +
           std::to_string(from.column) + "-" + std::to_string(to.line) + ":" + std::to_string(to.column);
  }

  // Iterative (explicit stack): printing must not recurse as deep as the tree.
  void expr(const Expr &root, int indent) {
    std::vector<std::pair<const Expr *, int>> stack{{&root, indent}};
    while (!stack.empty()) {
      auto [e, level] = stack.back();
      stack.pop_back();
      out_ << std::string(2 * level, ' ');
      switch (e->kind) {
      case ExprKind::Number: {
        std::ostringstream value;
        value << std::setprecision(17) << e->number;
        out_ << "Number " << value.str();
        break;
      }
      case ExprKind::Name: out_ << "Name '" << e->name << "'"; break;
      case ExprKind::Unary: out_ << "Unary '" << spelling(e->unaryOp) << "'"; break;
      case ExprKind::Binary: out_ << "Binary '" << spelling(e->binaryOp) << "'"; break;
      case ExprKind::Conditional: out_ << "Conditional"; break;
      case ExprKind::Call: out_ << "Call '" << e->name << "'"; break;
      }
      out_ << " " << loc(e->range) << "\n";
      for (size_t i = e->operands.size(); i-- > 0;)
        stack.push_back({e->operands[i].get(), level + 1});
    }
  }

  std::ostream &out_;
  const SourceFile &file_;
};

} // namespace

void print(std::ostream &out, const Rule &rule, const SourceFile &file) {
  Printer(out, file).rule(rule);
}

} // namespace optdsl::ast
