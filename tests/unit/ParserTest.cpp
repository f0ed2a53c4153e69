#include "optdsl/Parser.h"

#include <gtest/gtest.h>

namespace optdsl {
namespace {

TEST(Parser, ParsesTheArchitectureExample) {
  SourceFile file("adamw.opt", R"(
optimizer adamw {
  hyper lr = 1e-3;  hyper beta1 = 0.9;
  state m;
  let bc1 = 1 - beta1 ^ step;
  m = beta1 * m + (1 - beta1) * grad;
  param = param - lr * (m / bc1);
})");
  DiagnosticEngine diags(file);
  std::optional<ast::Rule> rule = parseRule(file, diags);
  ASSERT_TRUE(rule);
  EXPECT_EQ(diags.errorCount(), 0u);
  EXPECT_EQ(rule->name, "adamw");
  ASSERT_EQ(rule->stmts.size(), 6u);
  EXPECT_EQ(rule->stmts[3].kind, ast::StmtKind::Let);
  EXPECT_EQ(rule->stmts[3].name, "bc1");
}

} // namespace
} // namespace optdsl
