#include "ApplyTransforms.h"

#include "optdsl/Parser.h"

#include <algorithm>
#include <filesystem>
#include <memory>
#include <set>

namespace optdsl {

namespace {

void shift(SourceRange &range, uint32_t base) {
  range.begin += base;
  range.end += base;
}

void shift(ast::Expr &expr, uint32_t base) {
  shift(expr.range, base);
  shift(expr.nameRange, base);
  for (auto &operand : expr.operands)
    shift(*operand, base);
}

/// Moves a transform's AST into the rule file's range space.
void shift(ast::Stmt &stmt, uint32_t base) {
  shift(stmt.range, base);
  shift(stmt.nameRange, base);
  if (stmt.value)
    shift(*stmt.value, base);
  if (stmt.interval) {
    shift(stmt.interval->range, base);
    shift(*stmt.interval->lower, base);
    shift(*stmt.interval->upper, base);
  }
}

/// The statements of transform `name`, in `source`'s range space; empty
/// after an error reported at `apply`.
std::optional<ast::Rule> loadTransform(const ast::Stmt &apply, const SourceFile &source, DiagnosticEngine &diags) {
  std::vector<std::string> candidates = transformSearchPath(source.name(), apply.name);
  std::string found;
  for (const std::string &path : candidates)
    if (std::filesystem::is_regular_file(path)) {
      found = path;
      break;
    }
  if (found.empty()) {
    std::string looked;
    for (const std::string &path : candidates)
      looked += (looked.empty() ? "" : ", ") + path;
    diags.error(apply.nameRange, "no transform '" + apply.name + "' (looked for " + looked + ")");
    return std::nullopt;
  }
  auto file = std::make_shared<const SourceFile>(SourceFile::load(found));
  uint32_t base = source.include(file);
  DiagnosticEngine own(*file);
  std::optional<ast::Rule> transform = parseRule(*file, own);
  // The transform's own syntax errors, moved into the rule's range space.
  for (Diagnostic diagnostic : own.diagnostics()) {
    shift(diagnostic.range, base);
    if (diagnostic.severity == Severity::Error)
      diags.error(diagnostic.range, diagnostic.message);
    else if (diagnostic.severity == Severity::Warning)
      diags.warning(diagnostic.range, diagnostic.message);
    else
      diags.note(diagnostic.range, diagnostic.message);
  }
  if (!transform || own.hasErrors()) {
    diags.note(apply.nameRange, "in transform '" + apply.name + "' applied here");
    return std::nullopt;
  }
  shift(transform->nameRange, base);
  shift(transform->range, base);
  for (ast::Stmt &stmt : transform->stmts)
    shift(stmt, base);
  if (!transform->transform || transform->name != apply.name) {
    diags.error(transform->nameRange, std::string(found) + " holds " + (transform->transform ? "transform '" : "optimizer '") +
                                          transform->name + "', not transform '" + apply.name + "'");
    diags.note(apply.nameRange, "applied here");
    return std::nullopt;
  }
  return transform;
}

} // namespace

std::vector<std::string> transformSearchPath(const std::string &rulePath, const std::string &name) {
  std::filesystem::path dir = std::filesystem::path(rulePath).parent_path();
  std::string file = name + ".opt";
  std::vector<std::string> paths{(dir / "transforms" / file).string()};
  for (const char *library : {OPTDSL_LIBRARY_TRANSFORMS, OPTDSL_INSTALLED_TRANSFORMS}) {
    std::string path = (std::filesystem::path(library) / file).string();
    if (std::find(paths.begin(), paths.end(), path) == paths.end())
      paths.push_back(path);
  }
  return paths;
}

namespace {

/// Splices applies recursively: a transform may apply others (a clipping
/// piece inside a larger one); each transform at most once per rule, and
/// none inside itself.
class Expander {
public:
  /// `outermost`: the transform checked on its own, if that is what the
  /// file is (it cannot apply itself either).
  Expander(const SourceFile &source, DiagnosticEngine &diags, const std::string &outermost)
      : source_(source), diags_(diags) {
    if (!outermost.empty())
      stack_.push_back(outermost);
  }

  std::vector<ast::Stmt> expand(std::vector<ast::Stmt> stmts) {
    std::vector<ast::Stmt> out;
    for (ast::Stmt &stmt : stmts) {
      if (stmt.kind != ast::StmtKind::Apply) {
        out.push_back(std::move(stmt));
        continue;
      }
      if (stmt.value) {
        diags_.error(stmt.value->range, "'apply " + stmt.name + "' takes no value (write 'apply " + stmt.name + ";')");
        continue;
      }
      if (std::find(stack_.begin(), stack_.end(), stmt.name) != stack_.end()) {
        std::string chain;
        for (const std::string &name : stack_)
          chain += name + " -> ";
        diags_.error(stmt.nameRange, "transform '" + stmt.name + "' applies itself (" + chain + stmt.name + ")");
        continue;
      }
      if (!applied_.insert(stmt.name).second) {
        diags_.error(stmt.nameRange, "transform '" + stmt.name + "' is applied twice (its states and hypers would clash)");
        continue;
      }
      std::optional<ast::Rule> transform = loadTransform(stmt, source_, diags_);
      if (!transform)
        continue;
      stack_.push_back(stmt.name);
      std::vector<ast::Stmt> inner = expand(std::move(transform->stmts));
      stack_.pop_back();
      for (ast::Stmt &piece : inner) {
        if (piece.kind == ast::StmtKind::Hyper && !piece.value)
          requirements_.push_back({piece.name, piece.nameRange, stmt.name, stmt.nameRange});
        else
          out.push_back(std::move(piece));
      }
    }
    return out;
  }

  std::vector<HyperRequirement> requirements() && { return std::move(requirements_); }

private:
  const SourceFile &source_;
  DiagnosticEngine &diags_;
  std::set<std::string> applied_;
  std::vector<std::string> stack_; // the transforms being expanded, outermost first
  std::vector<HyperRequirement> requirements_;
};

} // namespace

std::vector<HyperRequirement> applyTransforms(ast::Rule &rule, const SourceFile &source, DiagnosticEngine &diags) {
  Expander expander(source, diags, rule.transform ? rule.name : std::string());
  rule.stmts = expander.expand(std::move(rule.stmts));
  return std::move(expander).requirements();
}

} // namespace optdsl
