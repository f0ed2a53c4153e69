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

std::vector<HyperRequirement> applyTransforms(ast::Rule &rule, const SourceFile &source, DiagnosticEngine &diags) {
  std::vector<HyperRequirement> requirements;
  std::set<std::string> applied;
  std::vector<ast::Stmt> stmts;
  for (ast::Stmt &stmt : rule.stmts) {
    if (stmt.kind != ast::StmtKind::Apply) {
      stmts.push_back(std::move(stmt));
      continue;
    }
    if (stmt.value) {
      diags.error(stmt.value->range, "'apply " + stmt.name + "' takes no value (write 'apply " + stmt.name + ";')");
      continue;
    }
    if (rule.transform) {
      diags.error(stmt.range, "a transform cannot apply another yet; apply both in the optimizer");
      continue;
    }
    if (!applied.insert(stmt.name).second) {
      diags.error(stmt.nameRange, "transform '" + stmt.name + "' is applied twice (its states and hypers would clash)");
      continue;
    }
    std::optional<ast::Rule> transform = loadTransform(stmt, source, diags);
    if (!transform)
      continue;
    for (ast::Stmt &inner : transform->stmts) {
      if (inner.kind == ast::StmtKind::Apply) {
        diags.error(inner.range, "a transform cannot apply another yet; apply both in the optimizer");
        diags.note(stmt.nameRange, "in transform '" + stmt.name + "' applied here");
      } else if (inner.kind == ast::StmtKind::Hyper && !inner.value) {
        requirements.push_back({inner.name, inner.nameRange, stmt.name, stmt.nameRange});
      } else {
        stmts.push_back(std::move(inner));
      }
    }
  }
  rule.stmts = std::move(stmts);
  return requirements;
}

} // namespace optdsl
