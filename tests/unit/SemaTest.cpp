// Sema unit tests: value kinds, phases, symbol tables, and the errors and
// warnings a rule gets.
#include "optdsl/Parser.h"
#include "optdsl/Sema.h"

#include "TestUtil.h"
#include "common/BranchHypers.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <sstream>
#include <string>

namespace optdsl {
namespace {

struct Checked {
  std::shared_ptr<const SourceFile> file;
  std::unique_ptr<DiagnosticEngine> diags;
  std::optional<CheckedRule> rule;

  std::string messages() const {
    std::ostringstream out;
    diags->print(out);
    return out.str();
  }
  /// The first error or warning whose message contains `text`, or null.
  const Diagnostic *find(Severity severity, const std::string &text) const {
    for (const Diagnostic &d : diags->diagnostics())
      if (d.severity == severity && d.message.find(text) != std::string::npos)
        return &d;
    return nullptr;
  }
};

Checked check(std::string text) {
  Checked checked;
  checked.file = std::make_shared<const SourceFile>("test.opt", std::move(text));
  checked.diags = std::make_unique<DiagnosticEngine>(*checked.file);
  std::optional<ast::Rule> parsed = parseRule(*checked.file, *checked.diags);
  if (parsed)
    checked.rule = checkRule(std::move(*parsed), checked.file, *checked.diags);
  return checked;
}

/// The Let statement named `name`.
const ast::Stmt &letNamed(const CheckedRule &rule, const std::string &name) {
  for (const ast::Stmt &stmt : rule.ast.stmts)
    if (stmt.kind == ast::StmtKind::Let && stmt.name == name)
      return stmt;
  ADD_FAILURE() << "no let '" << name << "'";
  static const ast::Stmt none{};
  return none;
}

int symbolNamed(const CheckedRule &rule, const std::string &name) {
  for (size_t i = 0; i < rule.symbols.size(); ++i)
    if (rule.symbols[i].name == name)
      return static_cast<int>(i);
  return -1;
}

SourceRange rangeOf(const std::string &text, const std::string &needle) {
  size_t at = text.find(needle);
  EXPECT_NE(at, std::string::npos) << needle;
  return {static_cast<uint32_t>(at), static_cast<uint32_t>(at + needle.size())};
}

// --- Kinds ------------------------------------------------------------------

TEST(SemaKinds, LetsAreUniformOrElementwiseByWhatTheyUse) {
  Checked c = check(R"(optimizer t {
  hyper lr = 0.1;
  state m;
  scalar s = 1;
  let u_number   = 2 * 3;
  let u_hyper    = lr * 2;
  let u_step     = 1 - 0.9 ^ step;
  let u_scalar   = s + lr;
  let u_call     = sqrt(exp(lr)) + max(lr, step);
  let u_reduce   = sum(grad * m);
  let u_reduce2  = max(abs(param)) / norm(grad) + mean(m);
  let u_cond     = step < 10 ? lr : u_hyper;
  let u_of_lets  = u_reduce * u_cond;
  let e_param    = param;
  let e_grad     = grad * lr;
  let e_state    = m;
  let e_call     = max(lr, grad);
  let e_cond_c   = grad > 0 ? 1 : 2;
  let e_cond_arm = step > 1 ? lr : m;
  let e_of_let   = e_grad + u_of_lets;
  let e_unary    = -e_param;
  s = s + u_reduce;
  m = m + e_of_let + e_cond_c + e_call + e_state + e_cond_arm + e_unary;
  param = param - m;
})");
  ASSERT_TRUE(c.rule) << c.messages();
  EXPECT_EQ(c.diags->warningCount(), 0u) << c.messages();
  int lets = 0;
  for (const ast::Stmt &stmt : c.rule->ast.stmts) {
    if (stmt.kind != ast::StmtKind::Let)
      continue;
    ++lets;
    SCOPED_TRACE(stmt.name);
    ValueKind expected =
        stmt.name.rfind("u_", 0) == 0 ? ValueKind::Uniform : ValueKind::Elementwise;
    EXPECT_EQ(stmt.value->valueKind, expected);
    ASSERT_GE(stmt.symbol, 0);
    EXPECT_EQ(c.rule->symbol(stmt.symbol).kind, expected);
    EXPECT_EQ(c.rule->symbol(stmt.symbol).cls, SymbolClass::Let);
  }
  EXPECT_EQ(lets, 17);
}

TEST(SemaKinds, SubexpressionsAndBuiltins) {
  Checked c = check("optimizer t { hyper lr = 1; let a = lr * 2 + grad; param = param - a; }");
  ASSERT_TRUE(c.rule) << c.messages();
  const ast::Expr &sum = *letNamed(*c.rule, "a").value;
  ASSERT_EQ(sum.kind, ast::ExprKind::Binary);
  EXPECT_EQ(sum.valueKind, ValueKind::Elementwise);
  EXPECT_EQ(sum.operands[0]->valueKind, ValueKind::Uniform) << "lr * 2";
  EXPECT_EQ(sum.operands[1]->valueKind, ValueKind::Elementwise) << "grad";
  EXPECT_EQ(c.rule->symbol(c.rule->paramSymbol).kind, ValueKind::Elementwise);
  EXPECT_EQ(c.rule->symbol(c.rule->gradSymbol).kind, ValueKind::Elementwise);
  EXPECT_EQ(c.rule->symbol(c.rule->stepSymbol).kind, ValueKind::Uniform);
  EXPECT_EQ(c.rule->symbol(c.rule->paramSymbol).cls, SymbolClass::Param);
  EXPECT_EQ(c.rule->symbol(c.rule->gradSymbol).cls, SymbolClass::Grad);
  EXPECT_EQ(c.rule->symbol(c.rule->stepSymbol).cls, SymbolClass::Step);
}

TEST(SemaKinds, ScalarStateAcceptsOnlyUniformValues) {
  const std::string text = "optimizer t {\n"
                           "  scalar s = 0;\n"
                           "  s = s + grad;\n"
                           "  param = param - s;\n"
                           "}\n";
  Checked c = check(text);
  EXPECT_FALSE(c.rule);
  EXPECT_EQ(c.diags->errorCount(), 1u) << c.messages();
  const auto &d = c.diags->diagnostics();
  ASSERT_GE(d.size(), 2u);
  EXPECT_EQ(d[0].severity, Severity::Error);
  EXPECT_EQ(d[0].range, rangeOf(text, "s + grad"));
  EXPECT_EQ(d[1].severity, Severity::Note);
  EXPECT_EQ(d[1].range, (SourceRange{rangeOf(text, "s = 0").begin, rangeOf(text, "s = 0").begin + 1}));

  Checked ok = check("optimizer t { scalar s = 0; s = s + sum(grad); param = param - s; }");
  EXPECT_TRUE(ok.rule) << ok.messages();
}

// --- Phases -----------------------------------------------------------------

TEST(SemaPhases, NoReductionIsOnePass) {
  Checked c = check("optimizer t { hyper lr = 1; state m; m = m + grad; "
                    "param = param - lr * m / sqrt(m * m + 1); }");
  ASSERT_TRUE(c.rule) << c.messages();
  EXPECT_EQ(c.rule->numPhases, 1);
  EXPECT_TRUE(c.rule->reductions.empty());
  for (const ast::Stmt &stmt : c.rule->ast.stmts)
    EXPECT_EQ(stmt.phase, 0) << stmt.name;
}

TEST(SemaPhases, LambStyleTrustRatioIsTwoPasses) {
  Checked c = check(R"(optimizer t {
  hyper lr = 1;
  state m;
  m = 0.9 * m + 0.1 * grad;
  let update = m / (sqrt(m * m) + 1e-6);
  let w_norm = norm(param);
  let u_norm = norm(update);
  let ratio = w_norm > 0 && u_norm > 0 ? w_norm / u_norm : 1;
  param = param - lr * update * ratio;
})");
  ASSERT_TRUE(c.rule) << c.messages();
  EXPECT_EQ(c.rule->numPhases, 2);
  ASSERT_EQ(c.rule->reductions.size(), 2u);
  EXPECT_EQ(c.rule->reductions[0]->name, "norm");
  EXPECT_EQ(c.rule->reductions[0]->builtin, Builtin::ReduceNorm);
  EXPECT_EQ(c.rule->reductions[0]->reduction, 0);
  EXPECT_EQ(c.rule->reductions[1]->reduction, 1);
  // Reductions at the same point share a pass.
  EXPECT_EQ(c.rule->reductions[0]->phase, 1);
  EXPECT_EQ(c.rule->reductions[1]->phase, 1);
  EXPECT_EQ(letNamed(*c.rule, "update").phase, 0);
  EXPECT_EQ(letNamed(*c.rule, "w_norm").phase, 1);
  EXPECT_EQ(letNamed(*c.rule, "ratio").phase, 1);
  EXPECT_EQ(c.rule->ast.stmts.back().phase, 1) << "param's update needs the ratio";
  // The first statements are in pass 0.
  EXPECT_EQ(c.rule->ast.stmts[2].phase, 0) << "m = ...";
}

TEST(SemaPhases, ReductionOfAPhaseOneValueIsThreePasses) {
  Checked c = check(R"(optimizer t {
  let n = norm(grad);
  let u = grad / n;
  let rms = sqrt(mean(u * u));
  let after = grad * 2;
  param = param - u / rms;
})");
  ASSERT_TRUE(c.rule) << c.messages();
  EXPECT_EQ(c.rule->numPhases, 3);
  ASSERT_EQ(c.rule->reductions.size(), 2u);
  EXPECT_EQ(c.rule->reductions[0]->phase, 1);
  EXPECT_EQ(c.rule->reductions[1]->phase, 2);
  EXPECT_EQ(c.rule->reductions[1]->builtin, Builtin::ReduceMean);
  EXPECT_EQ(letNamed(*c.rule, "n").phase, 1);
  EXPECT_EQ(letNamed(*c.rule, "u").phase, 1);
  EXPECT_EQ(letNamed(*c.rule, "rms").phase, 2);
  // Phases never go back, even for a value that needs no reduction.
  EXPECT_EQ(letNamed(*c.rule, "after").phase, 2);
  EXPECT_EQ(c.rule->ast.stmts.back().phase, 2);
}

TEST(SemaPhases, AStateWrittenInALaterPhaseCarriesThatPhase) {
  Checked c = check(R"(optimizer t {
  state m;
  m = grad / norm(grad);
  param = param - m * max(abs(m));
})");
  ASSERT_TRUE(c.rule) << c.messages();
  // m is written in pass 1, so max(abs(m)) needs pass 2.
  EXPECT_EQ(c.rule->numPhases, 3);
  ASSERT_EQ(c.rule->reductions.size(), 2u);
  EXPECT_EQ(c.rule->reductions[1]->builtin, Builtin::ReduceMax);
  EXPECT_EQ(c.rule->reductions[1]->phase, 2);

  // Read before it is written, m is last step's value: pass 0.
  Checked before = check(R"(optimizer t {
  state m;
  let r = max(abs(m));
  m = grad / norm(grad);
  param = param - m * r;
})");
  ASSERT_TRUE(before.rule) << before.messages();
  EXPECT_EQ(before.rule->numPhases, 2);
}

TEST(SemaPhases, TheLibrary) {
  for (const std::string &name : test::libraryRules()) {
    SCOPED_TRACE(name);
    CheckedRule rule = loadRuleFile(std::string(OPTDSL_DSL_DIR) + "/" + name + ".opt");
    EXPECT_EQ(rule.name(), name);
    // A reduction (the per-tensor norms of lamb and mars, the group-wide
    // ones of test::kGroupWideRules) adds a pass; lamb's norms come after
    // its global clipping (group_norm): three. Adafactor: the row and column
    // means of grad^2 (and the params' RMS), then the update's RMS, then the
    // step; the mean over the rows of a [rows] state is no pass. CAME adds
    // the row and column means of its instability: four.
    bool groupWide = std::count(test::kGroupWideRules.begin(), test::kGroupWideRules.end(), name) > 0;
    int expected = name == "came" ? 4 : name == "lamb" || name == "adafactor" ? 3 : name == "mars" || groupWide ? 2 : 1;
    EXPECT_EQ(rule.numPhases, expected);
  }
}

// --- Symbol tables ----------------------------------------------------------

TEST(SemaSymbols, DeclarationOrderSlotsAndDefaults) {
  Checked c = check(R"(optimizer t {
  hyper lr = 1e-3;
  state first;
  hyper shift = -0.5;
  scalar count = 0;
  state second = lr * 2;
  hyper plus = +3;
  hyper hex = 0x10;
  scalar product = shift;
  hyper paren = (-2);
  count = count + 1;
  product = product * lr;
  first = first + grad * shift * plus * hex * paren;
  second = second + count + product;
  param = param - first * second;
})");
  ASSERT_TRUE(c.rule) << c.messages();
  const CheckedRule &rule = *c.rule;
  EXPECT_EQ(rule.hyperNames(), (std::vector<std::string>{"lr", "shift", "plus", "hex", "paren"}));
  const double defaults[] = {1e-3, -0.5, 3, 16, -2};
  ASSERT_EQ(rule.hypers.size(), 5u);
  for (size_t i = 0; i < rule.hypers.size(); ++i) {
    const Symbol &symbol = rule.symbol(rule.hypers[i]);
    EXPECT_EQ(symbol.cls, SymbolClass::Hyper);
    EXPECT_EQ(symbol.slot, static_cast<int>(i));
    EXPECT_EQ(symbol.defaultValue, defaults[i]) << symbol.name;
    EXPECT_EQ(rule.hyperSlot(symbol.name), static_cast<int>(i));
  }
  EXPECT_EQ(rule.hyperSlot("nope"), -1);
  EXPECT_EQ(rule.hyperSlot("first"), -1) << "a state is not a hyper";

  ASSERT_EQ(rule.states.size(), 2u);
  EXPECT_EQ(rule.symbol(rule.states[0]).name, "first");
  EXPECT_EQ(rule.symbol(rule.states[1]).name, "second");
  EXPECT_EQ(rule.stateSlot("second"), 1);
  EXPECT_EQ(rule.stateSlot("count"), -1) << "scalar states have their own slots";
  EXPECT_EQ(rule.symbol(rule.states[0]).init, nullptr);
  ASSERT_NE(rule.symbol(rule.states[1]).init, nullptr);
  EXPECT_EQ(rule.symbol(rule.states[1]).kind, ValueKind::Elementwise);

  ASSERT_EQ(rule.scalarStates.size(), 2u);
  const Symbol &count = rule.symbol(rule.scalarStates[0]);
  const Symbol &product = rule.symbol(rule.scalarStates[1]);
  EXPECT_EQ(count.name, "count");
  EXPECT_EQ(product.name, "product");
  EXPECT_EQ(count.cls, SymbolClass::ScalarState);
  EXPECT_EQ(count.kind, ValueKind::Uniform);
  EXPECT_EQ(count.slot, 0);
  EXPECT_EQ(product.slot, 1);
  ASSERT_NE(product.init, nullptr);
  EXPECT_EQ(product.init->name, "shift");

  // Built-ins come first; body holds the lets and assignments in order.
  EXPECT_EQ(rule.paramSymbol, 0);
  EXPECT_EQ(rule.gradSymbol, 1);
  EXPECT_EQ(rule.stepSymbol, 2);
  ASSERT_EQ(rule.body.size(), 5u);
  EXPECT_EQ(rule.ast.stmts[rule.body.front()].name, "count");
  EXPECT_EQ(rule.ast.stmts[rule.body.back()].name, "param");
  // Declarations record where they are.
  EXPECT_EQ(c.file->slice(rule.symbol(rule.hypers[1]).declRange), "shift");
}

TEST(SemaSymbols, LibraryHypersMatchTheReference) {
  CheckedRule nadam = loadRuleFile(std::string(OPTDSL_DSL_DIR) + "/nadam.opt");
  EXPECT_EQ(nadam.hyperNames(), (std::vector<std::string>{"lr", "beta1", "beta2", "eps",
                                                          "weight_decay", "momentum_decay"}));
  EXPECT_EQ(nadam.symbol(nadam.hypers[0]).defaultValue, 2e-3);
  EXPECT_EQ(nadam.symbol(nadam.hypers[5]).defaultValue, 4e-3);
  ASSERT_EQ(nadam.scalarStates.size(), 1u);
  EXPECT_EQ(nadam.symbol(nadam.scalarStates[0]).name, "mu_product");
  EXPECT_EQ(nadam.stateSlot("exp_avg"), 0);
  EXPECT_EQ(nadam.stateSlot("exp_avg_sq"), 1);

  CheckedRule ademamix = loadRuleFile(std::string(OPTDSL_DSL_DIR) + "/ademamix.opt");
  EXPECT_EQ(ademamix.symbol(ademamix.hypers[ademamix.hyperSlot("beta3")]).defaultValue, 0.9999);
  EXPECT_EQ(ademamix.symbol(ademamix.hypers[ademamix.hyperSlot("alpha")]).defaultValue, 2.0);
}

TEST(SemaSymbols, StateNamedSumCoexistsWithTheSumReduction) {
  Checked c = check(R"(optimizer t {
  state sum = 1;
  sum = sum + grad * grad;
  let total = sum(sum);
  param = param - grad / sqrt(sum) * total;
})");
  ASSERT_TRUE(c.rule) << c.messages();
  EXPECT_EQ(c.diags->warningCount(), 0u) << c.messages();
  int state = c.rule->stateSlot("sum");
  ASSERT_EQ(state, 0);
  const ast::Expr &call = *letNamed(*c.rule, "total").value;
  ASSERT_EQ(call.kind, ast::ExprKind::Call);
  EXPECT_EQ(call.builtin, Builtin::ReduceSum);
  ASSERT_EQ(call.operands.size(), 1u);
  EXPECT_EQ(call.operands[0]->kind, ast::ExprKind::Name);
  EXPECT_EQ(call.operands[0]->symbol, c.rule->states[0]) << "the argument is the state";
  EXPECT_EQ(c.rule->numPhases, 2);

  // The library's Adagrad does the same.
  CheckedRule adagrad = loadRuleFile(std::string(OPTDSL_DSL_DIR) + "/adagrad.opt");
  EXPECT_EQ(adagrad.stateSlot("sum"), 0);
}

TEST(SemaSymbols, FunctionNamesAreNotVariables) {
  // `sqrt` without a call is an unknown name, and a variable is not callable.
  Checked c = check("optimizer t { hyper lr = 1; let a = sqrt + lr(2); param = param - a; }");
  EXPECT_FALSE(c.rule);
  EXPECT_EQ(c.diags->errorCount(), 2u) << c.messages();
}

// --- Errors -----------------------------------------------------------------

TEST(SemaErrors, EveryErrorIsReportedAndCounted) {
  const std::string text = R"(optimizer t {
  hyper lr = 1e-3;
  hyper lr = 2;
  hyper wd = lr;
  hyper grad = 1;
  state m = grad;
  state v = sum(lr);
  scalar s = 0;
  let a = lrr * m;
  let b = sqrtt(m);
  let c = max(m, m, m);
  let d = sum(m, m);
  lr = 3;
  step = 2;
  s = m;
  a = 1;
  zz = 1;
  let param = 1;
  let m = 2;
  param = param - lr * v * s;
})";
  Checked c = check(text);
  EXPECT_FALSE(c.rule);
  // One error per bad line, from line 3 (lr redeclared) to line 19 (m);
  // line 8 is fine.
  EXPECT_EQ(c.diags->errorCount(), 16u) << c.messages();
  std::vector<uint32_t> lines;
  for (const Diagnostic &d : c.diags->diagnostics())
    if (d.severity == Severity::Error)
      lines.push_back(c.file->lineCol(d.range.begin).line);
  std::sort(lines.begin(), lines.end());
  std::vector<uint32_t> expected;
  for (uint32_t line = 3; line <= 19; ++line)
    if (line != 8)
      expected.push_back(line);
  EXPECT_EQ(lines, expected) << c.messages();

  // Did-you-mean and the points the errors are at.
  const Diagnostic *unknown = c.find(Severity::Error, "'lrr'");
  ASSERT_TRUE(unknown);
  EXPECT_EQ(unknown->range, rangeOf(text, "lrr"));
  EXPECT_NE(unknown->message.find("'lr'"), std::string::npos) << unknown->message;
  const Diagnostic *function = c.find(Severity::Error, "sqrtt");
  ASSERT_TRUE(function);
  EXPECT_EQ(function->range, rangeOf(text, "sqrtt"));
  EXPECT_NE(function->message.find("'sqrt'"), std::string::npos) << function->message;
}

TEST(SemaErrors, NotesFollowTheirErrors) {
  const std::string text = "optimizer t {\n  hyper lr = 1;\n  state lr;\n  param = param;\n}\n";
  Checked c = check(text);
  EXPECT_FALSE(c.rule);
  ASSERT_EQ(c.diags->diagnostics().size(), 2u) << c.messages();
  EXPECT_EQ(c.diags->diagnostics()[0].severity, Severity::Error);
  EXPECT_EQ(c.diags->diagnostics()[0].range.begin, text.find("lr;"));
  EXPECT_EQ(c.diags->diagnostics()[1].severity, Severity::Note);
  EXPECT_EQ(c.diags->diagnostics()[1].range.begin, text.find("lr = 1"));
}

TEST(SemaErrors, ParamMustBeAssigned) {
  Checked c = check("optimizer noparam { state m; m = m + grad; }");
  EXPECT_FALSE(c.rule);
  EXPECT_EQ(c.diags->errorCount(), 1u) << c.messages();
  ASSERT_FALSE(c.diags->diagnostics().empty());
  EXPECT_EQ(c.file->slice(c.diags->diagnostics()[0].range), "noparam");
}

TEST(SemaErrors, NamesAreVisibleOnlyAfterTheirLet) {
  Checked c = check("optimizer t { let a = b; let b = 1; param = param - a; }");
  EXPECT_FALSE(c.rule);
  EXPECT_EQ(c.diags->errorCount(), 1u) << c.messages();
  Checked self = check("optimizer t { let a = a + 1; param = param - a; }");
  EXPECT_FALSE(self.rule);
  EXPECT_EQ(self.diags->errorCount(), 1u) << self.messages();
}

TEST(SemaErrors, InitialValuesUseOnlyNumbersAndHypers) {
  // ... and param for an elementwise state (set on the first step), not for
  // a scalar one.
  Checked c = check(R"(optimizer t {
  hyper lr = 1;
  state a = lr * 2 + sqrt(4);
  scalar b = param;
  state c = step;
  scalar d = a;
  scalar e = mean(lr);
  a = a + b + c + d + e;
  param = param - a;
})");
  EXPECT_FALSE(c.rule);
  EXPECT_EQ(c.diags->errorCount(), 4u) << c.messages();
}

TEST(SemaErrors, LetAndScalarWithoutAValue) {
  // `let NAME;` parses (the grammar shares the declaration form) and must be
  // an error, not a crash.
  Checked let = check("optimizer t { let a; param = param - grad; }");
  EXPECT_FALSE(let.rule);
  EXPECT_EQ(let.diags->errorCount(), 1u) << let.messages();
  // The language requires a scalar state's initial value.
  Checked scalar = check("optimizer t { scalar s; s = s + 1; param = param - s * grad; }");
  EXPECT_FALSE(scalar.rule);
  EXPECT_EQ(scalar.diags->errorCount(), 1u) << scalar.messages();
}

TEST(SemaErrors, NoMissingParamErrorAfterASyntaxError) {
  // The dropped statement may be the one that assigns param.
  Checked c = check("optimizer t { hyper lr = 1; param = param - lr * ; }");
  EXPECT_FALSE(c.rule);
  EXPECT_EQ(c.diags->errorCount(), 1u) << c.messages();
}

TEST(SemaErrors, CompileSourceRendersAndLoadRuleFileThrows) {
  auto file = std::make_shared<const SourceFile>(
      "bad.opt", "optimizer t {\n  param = param - lr * grad;\n}\n");
  std::ostringstream out;
  EXPECT_FALSE(compileSource(file, out));
  // The wording may change; the place, the source line and the caret not.
  std::string rendered = out.str();
  EXPECT_EQ(rendered.rfind("bad.opt:2:19: error: ", 0), 0u) << rendered;
  size_t header = rendered.find('\n');
  ASSERT_NE(header, std::string::npos);
  EXPECT_NE(rendered.substr(0, header).find("'lr'"), std::string::npos) << rendered;
  EXPECT_EQ(rendered.substr(header + 1), "  param = param - lr * grad;\n"
                                         "                  ^~\n");
  EXPECT_THROW(loadRuleFile("/nonexistent/dir/rule.opt"), std::runtime_error);
  try {
    loadRuleFile("/nonexistent/dir/rule.opt");
  } catch (const std::runtime_error &e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/dir/rule.opt"), std::string::npos);
  }
}

// --- Warnings ---------------------------------------------------------------

TEST(SemaWarnings, UnusedHypersAndStates) {
  const std::string text = R"(optimizer t {
  hyper lr = 1;
  hyper unused_hyper = 2;
  state unused_state;
  state write_only;
  state read_only = 3;
  scalar scalar_unused = 1;
  write_only = grad;
  param = param - lr * read_only * grad;
})";
  Checked c = check(text);
  ASSERT_TRUE(c.rule) << "warnings do not fail a rule\n" << c.messages();
  EXPECT_EQ(c.diags->errorCount(), 0u);
  EXPECT_EQ(c.diags->warningCount(), 5u) << c.messages();
  for (const char *name : {"unused_hyper", "unused_state", "write_only", "read_only", "scalar_unused"}) {
    SCOPED_TRACE(name);
    const Diagnostic *warning = c.find(Severity::Warning, std::string("'") + name + "'");
    ASSERT_TRUE(warning) << c.messages();
    EXPECT_EQ(warning->range, rangeOf(text, name)) << "points at the declaration";
  }
  const Symbol &writeOnly = c.rule->symbol(symbolNamed(*c.rule, "write_only"));
  EXPECT_TRUE(writeOnly.written);
  EXPECT_FALSE(writeOnly.read);
  const Symbol &readOnly = c.rule->symbol(symbolNamed(*c.rule, "read_only"));
  EXPECT_FALSE(readOnly.written);
  EXPECT_TRUE(readOnly.read);
}

// The list the rule tests run over is the library's directory, no more, no less.
TEST(SemaLibrary, EveryRuleFileIsInTheTestsList) {
  std::vector<std::string> files;
  for (const auto &entry : std::filesystem::directory_iterator(OPTDSL_DSL_DIR))
    if (entry.path().extension() == ".opt")
      files.push_back(entry.path().stem().string());
  std::sort(files.begin(), files.end());
  std::vector<std::string> listed = test::libraryRules();
  std::sort(listed.begin(), listed.end());
  EXPECT_EQ(files, listed) << "add the rule to kBranchHypers (tests/common/BranchHypers.h)";
}

TEST(SemaWarnings, TheLibraryHasNone) {
  for (const std::string &name : test::libraryRules()) {
    SCOPED_TRACE(name);
    std::string path = std::string(OPTDSL_DSL_DIR) + "/" + name + ".opt";
    auto file = std::make_shared<const SourceFile>(SourceFile::load(path));
    std::ostringstream out;
    EXPECT_TRUE(compileSource(file, out));
    EXPECT_EQ(out.str(), "");
  }
}

} // namespace
} // namespace optdsl

// --- Inputs -------------------------------------------------------------------

namespace optdsl {
namespace {

TEST(SemaInputs, AnInputIsElementwiseAndTestedOnlyWhereGivenIsCalled) {
  Checked c = check(R"(optimizer t {
  input h;
  input d;
  state m;
  m = given(h) ? 0.9 * m + h : m;
  param = param - d * grad - m;
})");
  ASSERT_TRUE(c.rule) << c.messages();
  EXPECT_EQ(c.diags->warningCount(), 0u) << c.messages();
  ASSERT_EQ(c.rule->inputs.size(), 2u);
  EXPECT_EQ(c.rule->inputSlot("h"), 0);
  EXPECT_EQ(c.rule->inputSlot("d"), 1);
  EXPECT_EQ(c.rule->inputSlot("m"), -1);
  const Symbol &h = c.rule->symbol(c.rule->inputs[0]), &d = c.rule->symbol(c.rule->inputs[1]);
  EXPECT_EQ(h.cls, SymbolClass::Input);
  EXPECT_EQ(h.kind, ValueKind::Elementwise);
  EXPECT_TRUE(h.tested) << "given(h) makes h optional";
  EXPECT_FALSE(d.tested) << "d is needed every step";
}

TEST(SemaInputs, MisusesAreLocatedErrors) {
  const std::string text = R"(optimizer t {
  hyper lr = 1;
  input h = 3;
  input k;
  state s = given(k);
  k = grad;
  let a = given(lr);
  let b = given(h + 1);
  param = param - lr * (a + b + k + h) * grad;
})";
  Checked c = check(text);
  EXPECT_FALSE(c.rule);
  EXPECT_EQ(c.diags->errorCount(), 5u) << c.messages();
  const Diagnostic *value = c.find(Severity::Error, "input 'h' has no value here");
  ASSERT_TRUE(value) << c.messages();
  EXPECT_EQ(value->range, rangeOf(text, "3"));
  EXPECT_TRUE(c.find(Severity::Error, "the initial value of 's' cannot use given()")) << c.messages();
  const Diagnostic *assign = c.find(Severity::Error, "cannot assign to input 'k'");
  ASSERT_TRUE(assign) << c.messages();
  SourceRange assignment = rangeOf(text, "k = grad");
  EXPECT_EQ(assign->range, (SourceRange{assignment.begin, assignment.begin + 1}));
  const Diagnostic *notInput = c.find(Severity::Error, "given() takes the name of an input");
  ASSERT_TRUE(notInput) << c.messages();
  SourceRange call = rangeOf(text, "given(lr)");
  EXPECT_EQ(notInput->range, (SourceRange{call.begin + 6, call.begin + 8})) << "points at the argument";
  EXPECT_TRUE(c.find(Severity::Error, "given() takes the name of an input")) << c.messages();
}

TEST(SemaInputs, GivenWithoutInputsSaysHowToDeclareOne) {
  Checked c = check("optimizer t { let a = given(grad); param = param - a * grad; }");
  EXPECT_FALSE(c.rule);
  EXPECT_TRUE(c.find(Severity::Error, "declare one: 'input NAME;'")) << c.messages();
}

TEST(SemaInputs, AnInputNeverReadIsAWarning) {
  Checked c = check("optimizer t { input h; let a = given(h); param = param - a * grad; }");
  ASSERT_TRUE(c.rule) << c.messages();
  EXPECT_EQ(c.diags->warningCount(), 1u) << c.messages();
  EXPECT_TRUE(c.find(Severity::Warning, "input 'h' is never read")) << c.messages();
}

TEST(SemaInputs, InputIsAKeyword) {
  Checked c = check("optimizer t { let input = 1; param = param - input * grad; }");
  EXPECT_FALSE(c.rule);
  EXPECT_GE(c.diags->errorCount(), 1u);
}

} // namespace
} // namespace optdsl
