// Parser unit tests: the AST's shape (precedence, associativity), number
// literals, comments, source ranges of nodes, and recovery after errors.
#include "optdsl/Parser.h"

#include "TestUtil.h"

#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <sstream>
#include <string>

namespace optdsl {
namespace {

/// A parsed file; the engine refers to the file, so both live on the heap.
struct Parsed {
  std::unique_ptr<SourceFile> file;
  std::unique_ptr<DiagnosticEngine> diags;
  std::optional<ast::Rule> rule;

  std::string messages() const {
    std::ostringstream out;
    diags->print(out);
    return out.str();
  }
};

Parsed parse(std::string text) {
  Parsed parsed;
  parsed.file = std::make_unique<SourceFile>("test.opt", std::move(text));
  parsed.diags = std::make_unique<DiagnosticEngine>(*parsed.file);
  parsed.rule = parseRule(*parsed.file, *parsed.diags);
  return parsed;
}

/// The tree as an S-expression: (+ a (* b c)), (neg x), (? c t e), sqrt(x).
std::string shape(const ast::Expr &expr) {
  switch (expr.kind) {
  case ast::ExprKind::Number: {
    std::ostringstream out;
    out << expr.number;
    return out.str();
  }
  case ast::ExprKind::Name: return expr.name;
  case ast::ExprKind::Unary: {
    const char *op = expr.unaryOp == ast::UnaryOp::Negate ? "neg"
                     : expr.unaryOp == ast::UnaryOp::Not  ? "not"
                                                          : "plus";
    return std::string("(") + op + " " + shape(*expr.operands.at(0)) + ")";
  }
  case ast::ExprKind::Binary:
    return std::string("(") + ast::spelling(expr.binaryOp) + " " + shape(*expr.operands.at(0)) +
           " " + shape(*expr.operands.at(1)) + ")";
  case ast::ExprKind::Conditional:
    return "(? " + shape(*expr.operands.at(0)) + " " + shape(*expr.operands.at(1)) + " " +
           shape(*expr.operands.at(2)) + ")";
  case ast::ExprKind::Call: {
    std::string out = expr.name + "(";
    for (size_t i = 0; i < expr.operands.size(); ++i)
      out += (i ? " " : "") + shape(*expr.operands[i]);
    return out + ")";
  }
  }
  return "<bad kind>";
}

/// Parses `let x = <expression>;` and returns the shape of the expression,
/// or a description of the diagnostics when it did not parse.
std::string shapeOf(const std::string &expression) {
  Parsed parsed = parse("optimizer t { let x = " + expression + "; }");
  if (!parsed.rule || parsed.diags->hasErrors() || parsed.rule->stmts.size() != 1 ||
      !parsed.rule->stmts[0].value)
    return "<error> " + parsed.messages();
  return shape(*parsed.rule->stmts[0].value);
}

/// The value of a number literal, or NaN (with a test failure) when it did
/// not parse as one number.
double numberValue(const std::string &literal) {
  Parsed parsed = parse("optimizer t { let x = " + literal + "; }");
  EXPECT_FALSE(parsed.diags->hasErrors()) << literal << ":\n" << parsed.messages();
  if (!parsed.rule || parsed.rule->stmts.size() != 1 || !parsed.rule->stmts[0].value)
    return NAN;
  const ast::Expr &expr = *parsed.rule->stmts[0].value;
  EXPECT_EQ(expr.kind, ast::ExprKind::Number) << literal;
  EXPECT_EQ(parsed.file->slice(expr.range), literal) << "the number's range";
  return expr.kind == ast::ExprKind::Number ? expr.number : NAN;
}

/// Offset of the n-th (0-based) occurrence of `needle` in `text`.
uint32_t offsetOf(const std::string &text, const std::string &needle, int nth = 0) {
  size_t at = text.find(needle);
  for (int i = 0; i < nth && at != std::string::npos; ++i)
    at = text.find(needle, at + 1);
  EXPECT_NE(at, std::string::npos) << "'" << needle << "' not in the test text";
  return static_cast<uint32_t>(at);
}

SourceRange rangeOf(const std::string &text, const std::string &needle, int nth = 0) {
  uint32_t begin = offsetOf(text, needle, nth);
  return {begin, begin + static_cast<uint32_t>(needle.size())};
}

/// The names of the statements that parsed. A declaration with a syntax
/// error may still declare its name, as a stub whose range is just the name
/// (so that its uses are not reported too); those are left out here.
std::vector<std::string> parsedStatements(const ast::Rule &rule) {
  std::vector<std::string> names;
  for (const ast::Stmt &stmt : rule.stmts)
    if (!(stmt.range == stmt.nameRange))
      names.push_back(stmt.name);
  return names;
}

/// Checks that every stub is a declaration with the value 0 (or none).
void expectOnlyDeclarationStubs(const ast::Rule &rule) {
  for (const ast::Stmt &stmt : rule.stmts) {
    if (!(stmt.range == stmt.nameRange))
      continue;
    SCOPED_TRACE(stmt.name);
    EXPECT_NE(stmt.kind, ast::StmtKind::Assign) << "an assignment with an error is dropped";
    if (stmt.value) {
      EXPECT_EQ(stmt.value->kind, ast::ExprKind::Number);
      EXPECT_EQ(stmt.value->number, 0.0);
    }
  }
}

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

TEST(Parser, StatementKindsNamesAndValues) {
  Parsed parsed = parse("optimizer t { hyper lr = 1; state m; state v = lr; scalar s = 2; "
                        "let a = grad; m = a; }");
  ASSERT_TRUE(parsed.rule);
  EXPECT_FALSE(parsed.diags->hasErrors()) << parsed.messages();
  const auto &stmts = parsed.rule->stmts;
  ASSERT_EQ(stmts.size(), 6u);
  const ast::StmtKind kinds[] = {ast::StmtKind::Hyper, ast::StmtKind::State,
                                 ast::StmtKind::State, ast::StmtKind::Scalar,
                                 ast::StmtKind::Let,   ast::StmtKind::Assign};
  const char *names[] = {"lr", "m", "v", "s", "a", "m"};
  for (size_t i = 0; i < stmts.size(); ++i) {
    EXPECT_EQ(stmts[i].kind, kinds[i]) << i;
    EXPECT_EQ(stmts[i].name, names[i]) << i;
  }
  EXPECT_FALSE(stmts[1].value) << "`state m;` has no initializer";
  ASSERT_TRUE(stmts[2].value);
  EXPECT_EQ(shape(*stmts[2].value), "lr");
  EXPECT_EQ(shape(*stmts[5].value), "a");
}

// --- Precedence and associativity ------------------------------------------

TEST(ParserPrecedence, MultiplicationBindsTighterThanAddition) {
  EXPECT_EQ(shapeOf("a+b*c"), "(+ a (* b c))");
  EXPECT_EQ(shapeOf("a*b+c"), "(+ (* a b) c)");
  EXPECT_EQ(shapeOf("a-b/c"), "(- a (/ b c))");
  EXPECT_EQ(shapeOf("(a+b)*c"), "(* (+ a b) c)");
}

TEST(ParserPrecedence, PowerBindsTighterThanUnaryMinus) {
  EXPECT_EQ(shapeOf("-x^2"), "(neg (^ x 2))");
  EXPECT_EQ(shapeOf("-x*y"), "(* (neg x) y)");
  EXPECT_EQ(shapeOf("!a^b"), "(not (^ a b))");
  EXPECT_EQ(shapeOf("--x"), "(neg (neg x))");
  EXPECT_EQ(shapeOf("-+!x"), "(neg (plus (not x)))");
  EXPECT_EQ(shapeOf("(-x)^2"), "(^ (neg x) 2)");
}

TEST(ParserPrecedence, PowerIsRightAssociativeAndTakesASignedExponent) {
  EXPECT_EQ(shapeOf("a^b^c"), "(^ a (^ b c))");
  EXPECT_EQ(shapeOf("a^b^c^d"), "(^ a (^ b (^ c d)))");
  EXPECT_EQ(shapeOf("2^-1"), "(^ 2 (neg 1))");
  EXPECT_EQ(shapeOf("x^-y*z"), "(* (^ x (neg y)) z)");
  EXPECT_EQ(shapeOf("a*b^c"), "(* a (^ b c))");
}

TEST(ParserPrecedence, OtherBinaryOperatorsAreLeftAssociative) {
  EXPECT_EQ(shapeOf("a-b-c"), "(- (- a b) c)");
  EXPECT_EQ(shapeOf("a/b/c"), "(/ (/ a b) c)");
  EXPECT_EQ(shapeOf("a-b+c"), "(+ (- a b) c)");
  EXPECT_EQ(shapeOf("a/b*c"), "(* (/ a b) c)");
  EXPECT_EQ(shapeOf("a<b<c"), "(< (< a b) c)");
  EXPECT_EQ(shapeOf("a==b!=c"), "(!= (== a b) c)");
  EXPECT_EQ(shapeOf("a&&b&&c"), "(&& (&& a b) c)");
  EXPECT_EQ(shapeOf("a||b||c"), "(|| (|| a b) c)");
}

TEST(ParserPrecedence, ConditionalIsRightAssociative) {
  EXPECT_EQ(shapeOf("a ? b : c ? d : e"), "(? a b (? c d e))");
  EXPECT_EQ(shapeOf("a ? b ? c : d : e"), "(? a (? b c d) e)");
  EXPECT_EQ(shapeOf("a ? b : c ? d : e ? f : g"), "(? a b (? c d (? e f g)))");
  EXPECT_EQ(shapeOf("(a ? b : c) ? d : e"), "(? (? a b c) d e)");
}

TEST(ParserPrecedence, ConditionalBindsLoosestOfAll) {
  EXPECT_EQ(shapeOf("a + b ? c * d : e - f"), "(? (+ a b) (* c d) (- e f))");
  EXPECT_EQ(shapeOf("a || b ? c : d || e"), "(? (|| a b) c (|| d e))");
  EXPECT_EQ(shapeOf("x < 0 ? -x : x"), "(? (< x 0) (neg x) x)");
}

TEST(ParserPrecedence, ComparisonsBindTighterThanAndWhichBindsTighterThanOr) {
  EXPECT_EQ(shapeOf("a < b && c == d || e"), "(|| (&& (< a b) (== c d)) e)");
  EXPECT_EQ(shapeOf("a || b && c"), "(|| a (&& b c))");
  EXPECT_EQ(shapeOf("a && b || c && d"), "(|| (&& a b) (&& c d))");
  EXPECT_EQ(shapeOf("a == b < c"), "(== a (< b c))");
  EXPECT_EQ(shapeOf("a != b >= c"), "(!= a (>= b c))");
  EXPECT_EQ(shapeOf("a + 1 <= b * 2"), "(<= (+ a 1) (* b 2))");
  EXPECT_EQ(shapeOf("a > b == c > d"), "(== (> a b) (> c d))");
  EXPECT_EQ(shapeOf("!a && b"), "(&& (not a) b)");
}

TEST(ParserPrecedence, CallsAndTheirArguments) {
  EXPECT_EQ(shapeOf("sqrt(x) + 1"), "(+ sqrt(x) 1)");
  EXPECT_EQ(shapeOf("max(a, b ? c : d)"), "max(a (? b c d))");
  EXPECT_EQ(shapeOf("clamp(-x, a+b, c^d)"), "clamp((neg x) (+ a b) (^ c d))");
  EXPECT_EQ(shapeOf("-norm(x)^2"), "(neg (^ norm(x) 2))");
  EXPECT_EQ(shapeOf("f()"), "f()");
}

// --- Numbers ----------------------------------------------------------------

TEST(ParserNumbers, DecimalLiteralsHaveTheirExactDoubleValue) {
  EXPECT_EQ(numberValue("1"), 1.0);
  EXPECT_EQ(numberValue("1.5"), 1.5);
  EXPECT_EQ(numberValue(".5"), 0.5);
  EXPECT_EQ(numberValue("5."), 5.0);
  EXPECT_EQ(numberValue("1e-3"), 1e-3);
  EXPECT_EQ(numberValue("1E+2"), 100.0);
  EXPECT_EQ(numberValue("2E+4"), 2e4);
  EXPECT_EQ(numberValue("0.1"), 0.1);
  EXPECT_EQ(numberValue("0.999"), 0.999);
  EXPECT_EQ(numberValue("1e-8"), 1e-8);
  EXPECT_EQ(numberValue("123456789012345678"), 123456789012345678.0);
  EXPECT_EQ(numberValue("1.7976931348623157e308"), 1.7976931348623157e308);
  EXPECT_EQ(numberValue("4.9e-324"), 4.9e-324);
  // Needs correct rounding: the nearest double, not an accumulation.
  EXPECT_EQ(numberValue("0.30000000000000004"), 0.30000000000000004);
  EXPECT_NE(numberValue("0.30000000000000004"), 0.3);
}

TEST(ParserNumbers, HexadecimalAndSuffixes) {
  EXPECT_EQ(numberValue("0x1.8p3"), 12.0);
  EXPECT_EQ(numberValue("0x10"), 16.0);
  EXPECT_EQ(numberValue("0X1P-2"), 0.25);
  EXPECT_EQ(numberValue("0x1f"), 31.0) << "in hex, f is a digit";
  EXPECT_EQ(numberValue("0x.8p1"), 1.0);
  EXPECT_EQ(numberValue("1.5f"), 1.5);
  EXPECT_EQ(numberValue("1.5F"), 1.5);
  EXPECT_EQ(numberValue("2.5L"), 2.5);
  EXPECT_EQ(numberValue("1e-3f"), 1e-3);
  EXPECT_EQ(numberValue("0x1p3f"), 8.0);
}

TEST(ParserNumbers, SignIsAUnaryOperatorNotPartOfTheLiteral) {
  EXPECT_EQ(shapeOf("-1.5"), "(neg 1.5)");
  EXPECT_EQ(shapeOf("1-2"), "(- 1 2)");
  EXPECT_EQ(shapeOf("1e-3-1"), "(- 0.001 1)");
}

TEST(ParserNumbers, MalformedAndOutOfRangeNumbersAreErrors) {
  for (const char *literal : {"1e999", "0x1p99999", "1e", "1.2.3", "0x", "1e+", "2x", "1.5ff", "0x1.8pq", "1_0"}) {
    SCOPED_TRACE(literal);
    std::string text = std::string("optimizer t { let x = ") + literal + "; let y = 2; }";
    Parsed parsed = parse(text);
    ASSERT_TRUE(parsed.rule);
    ASSERT_EQ(parsed.diags->errorCount(), 1u) << parsed.messages();
    const Diagnostic &error = parsed.diags->diagnostics()[0];
    EXPECT_EQ(error.severity, Severity::Error);
    EXPECT_EQ(error.range, rangeOf(text, literal)) << "the error points at the whole literal";
    EXPECT_NE(error.message.find(literal), std::string::npos) << error.message;
    // The statement is dropped; the next one is kept.
    EXPECT_EQ(parsedStatements(*parsed.rule), (std::vector<std::string>{"y"}));
    expectOnlyDeclarationStubs(*parsed.rule);
  }
}

TEST(ParserNumbers, SubnormalsAreKeptAndUnderflowToZeroIsAnError) {
  EXPECT_EQ(numberValue("1e-310"), 1e-310);
  EXPECT_GT(numberValue("4.9e-324"), 0.0);
  Parsed parsed = parse("optimizer t { let x = 1e-400; }");
  EXPECT_EQ(parsed.diags->errorCount(), 1u) << "1e-400 would silently become 0";
}

// --- Comments ---------------------------------------------------------------

TEST(ParserComments, MayAppearBetweenAnyTwoTokens) {
  // A comment (with text that looks like code) after every token.
  const std::string text =
      "# leading ; } ( comment\n"
      "optimizer # c ; }\n t # c\n { # c\n"
      "  hyper # c\n lr # c\n = # c\n - # c\n 2.5 # c\n ; # c\n"
      "  let # c\n a # c\n = # c\n sqrt # c\n ( # c\n lr # c\n , # c\n 1 # c\n ) # c\n"
      "  ? # c\n ( # c\n 1 # c\n ) # c\n : # c\n 2 # c\n ^ # c\n - # c\n 3 # c\n ; # c\n"
      "  param # c\n = # c\n param # c\n - # c\n a # c\n ; # c\n"
      "} # trailing, no newline";
  Parsed parsed = parse(text);
  ASSERT_TRUE(parsed.rule);
  EXPECT_FALSE(parsed.diags->hasErrors()) << parsed.messages();
  EXPECT_EQ(parsed.rule->name, "t");
  ASSERT_EQ(parsed.rule->stmts.size(), 3u);
  EXPECT_EQ(parsed.rule->stmts[0].name, "lr");
  EXPECT_EQ(shape(*parsed.rule->stmts[0].value), "(neg 2.5)");
  EXPECT_EQ(shape(*parsed.rule->stmts[1].value), "(? sqrt(lr 1) 1 (^ 2 (neg 3)))");
  EXPECT_EQ(shape(*parsed.rule->stmts[2].value), "(- param a)");
}

TEST(ParserComments, ACommentIsNotAnOperatorOrTerminator) {
  // Without the comment, `param - grad` would be the value; the `;` and `}`
  // inside the comment must not end the statement or the rule.
  Parsed parsed = parse("optimizer t {\n param = param # - 1; } \n - grad;\n}\n");
  ASSERT_TRUE(parsed.rule);
  EXPECT_FALSE(parsed.diags->hasErrors()) << parsed.messages();
  ASSERT_EQ(parsed.rule->stmts.size(), 1u);
  EXPECT_EQ(shape(*parsed.rule->stmts[0].value), "(- param grad)");
}

TEST(ParserComments, CrLfLineEndings) {
  Parsed parsed = parse("optimizer t {\r\n  let a = 1; # c\r\n  let b = a * 2;\r\n}\r\n");
  ASSERT_TRUE(parsed.rule);
  EXPECT_FALSE(parsed.diags->hasErrors()) << parsed.messages();
  ASSERT_EQ(parsed.rule->stmts.size(), 2u);
  EXPECT_EQ(shape(*parsed.rule->stmts[1].value), "(* a 2)");
}

TEST(ParserComments, ALoneCrAtTheEndOfTheFileKeepsItsColumn) {
  // Found by MutationFuzz (seed 322349505): a file ending in "\r" with no
  // "\n" had its CR dropped from the shown line like a CRLF's, so the caret
  // of an error at the end of the file stood one column left of where the
  // diagnostic said.
  Parsed parsed = parse("# Adam,}\r");
  EXPECT_FALSE(parsed.rule);
  EXPECT_EQ(parsed.messages(), "test.opt:1:10: error: expected 'optimizer' NAME '{' at the start of "
                               "the file\n# Adam,}?\n         ^\n");
  // A CRLF's CR is still not part of the line.
  SourceFile crlf("test.opt", "abc\r\ndef");
  EXPECT_EQ(crlf.lineText(1), "abc");
  EXPECT_EQ(crlf.lineText(2), "def");
}

// --- Source ranges ----------------------------------------------------------

TEST(ParserRanges, NamesCallsParenthesesAndOperators) {
  const std::string text = "optimizer rng {\n"
                           "  let x = foo + sqrt( a ) * (c - d);\n"
                           "  let y = -bar ^ 2 ? max(p, q) : (\n"
                           "     r);\n"
                           "}\n";
  Parsed parsed = parse(text);
  ASSERT_TRUE(parsed.rule);
  ASSERT_FALSE(parsed.diags->hasErrors()) << parsed.messages();
  ASSERT_EQ(parsed.rule->stmts.size(), 2u);
  const ast::Rule &rule = *parsed.rule;
  EXPECT_EQ(rule.nameRange, rangeOf(text, "rng"));

  // x = foo + (sqrt( a ) * (c - d))
  const ast::Expr &sum = *rule.stmts[0].value;
  ASSERT_EQ(shape(sum), "(+ foo (* sqrt(a) (- c d)))");
  EXPECT_EQ(sum.range, rangeOf(text, "foo + sqrt( a ) * (c - d)"));
  EXPECT_EQ(sum.operands[0]->range, rangeOf(text, "foo"));
  const ast::Expr &product = *sum.operands[1];
  EXPECT_EQ(product.range, rangeOf(text, "sqrt( a ) * (c - d)"));
  const ast::Expr &call = *product.operands[0];
  EXPECT_EQ(call.range, rangeOf(text, "sqrt( a )")) << "a call runs to its ')'";
  EXPECT_EQ(call.nameRange, rangeOf(text, "sqrt"));
  uint32_t argument = offsetOf(text, "( a )") + 2;
  EXPECT_EQ(call.operands[0]->range, (SourceRange{argument, argument + 1}));
  const ast::Expr &paren = *product.operands[1];
  EXPECT_EQ(paren.range, rangeOf(text, "(c - d)")) << "the parentheses belong to the range";
  EXPECT_EQ(paren.operands[0]->range, rangeOf(text, "c"));
  EXPECT_EQ(paren.operands[1]->range, rangeOf(text, "d"));

  // y = (-(bar ^ 2)) ? max(p, q) : (\n r)
  const ast::Expr &conditional = *rule.stmts[1].value;
  ASSERT_EQ(shape(conditional), "(? (neg (^ bar 2)) max(p q) r)");
  SourceRange whole{offsetOf(text, "-bar"), offsetOf(text, "r);") + 2};
  EXPECT_EQ(conditional.range, whole) << "spans lines, to the closing ')'";
  const ast::Expr &negate = *conditional.operands[0];
  EXPECT_EQ(negate.range, rangeOf(text, "-bar ^ 2"));
  EXPECT_EQ(negate.operands[0]->range, rangeOf(text, "bar ^ 2"));
  uint32_t exponent = offsetOf(text, "^ 2") + 2;
  EXPECT_EQ(negate.operands[0]->operands[1]->range, (SourceRange{exponent, exponent + 1}));
  EXPECT_EQ(conditional.operands[1]->range, rangeOf(text, "max(p, q)"));
  EXPECT_EQ(conditional.operands[1]->nameRange, rangeOf(text, "max"));
  // A parenthesised name keeps its own range (diagnostics point at it); the
  // parentheses count in the enclosing node's range, checked above.
  uint32_t r = offsetOf(text, "r);");
  EXPECT_EQ(conditional.operands[2]->range, (SourceRange{r, r + 1}));
}

TEST(ParserRanges, PrefixOperatorsAndParenthesisedOperands) {
  const std::string text = "optimizer t { let z = - # c\n ! (y) + (w); }";
  Parsed parsed = parse(text);
  ASSERT_TRUE(parsed.rule);
  ASSERT_FALSE(parsed.diags->hasErrors()) << parsed.messages();
  const ast::Expr &sum = *parsed.rule->stmts.at(0).value;
  ASSERT_EQ(shape(sum), "(+ (neg (not y)) w)");
  uint32_t minus = offsetOf(text, "- #"), bang = offsetOf(text, "! (");
  uint32_t yEnd = offsetOf(text, "y)") + 2, wEnd = offsetOf(text, "w)") + 2;
  EXPECT_EQ(sum.range, (SourceRange{minus, wEnd})) << "to the last ')'";
  EXPECT_EQ(sum.operands[0]->range, (SourceRange{minus, yEnd}));
  EXPECT_EQ(sum.operands[0]->operands[0]->range, (SourceRange{bang, yEnd}))
      << "each operator where it is, across a comment";
  EXPECT_EQ(sum.operands[0]->operands[0]->operands[0]->range, rangeOf(text, "y"));
  EXPECT_EQ(sum.operands[1]->range, rangeOf(text, "w"));
}

TEST(ParserRanges, Statements) {
  const std::string text = "optimizer t {\n"
                           "  hyper lr = -1e-3;   # comment\n"
                           "  state   m ;\n"
                           "  let a =\n"
                           "      grad * 2;\n"
                           "  param = param - a;}";
  Parsed parsed = parse(text);
  ASSERT_TRUE(parsed.rule);
  ASSERT_FALSE(parsed.diags->hasErrors()) << parsed.messages();
  const auto &stmts = parsed.rule->stmts;
  ASSERT_EQ(stmts.size(), 4u);
  EXPECT_EQ(stmts[0].range, rangeOf(text, "hyper lr = -1e-3;"));
  EXPECT_EQ(stmts[0].nameRange, rangeOf(text, "lr"));
  EXPECT_EQ(stmts[0].value->range, rangeOf(text, "-1e-3"));
  EXPECT_EQ(stmts[0].value->operands[0]->range, rangeOf(text, "1e-3"));
  EXPECT_EQ(stmts[1].range, rangeOf(text, "state   m ;"));
  uint32_t m = offsetOf(text, "m ;");
  EXPECT_EQ(stmts[1].nameRange, (SourceRange{m, m + 1}));
  EXPECT_EQ(stmts[2].range, rangeOf(text, "let a =\n      grad * 2;"));
  EXPECT_EQ(stmts[2].value->range, rangeOf(text, "grad * 2"));
  EXPECT_EQ(stmts[3].range, rangeOf(text, "param = param - a;"));
  EXPECT_EQ(stmts[3].nameRange, rangeOf(text, "param"));
  EXPECT_EQ(stmts[3].value->operands[0]->range, rangeOf(text, "param", 1));
  // Line and column of a node, as diagnostics show them.
  LineCol at = parsed.file->lineCol(stmts[2].value->range.begin);
  EXPECT_EQ(at.line, 5u);
  EXPECT_EQ(at.column, 7u);
}

// --- Errors and recovery ----------------------------------------------------

TEST(ParserRecovery, ThreeBadStatementsGiveThreeErrorsAndKeepTheGoodOnes) {
  const std::string text = "optimizer t {\n"
                           "  hyper lr = 1;\n"
                           "  let a = 1 +;\n"          // missing operand
                           "  state m;\n"
                           "  m = m * * grad;\n"      // stray operator
                           "  let b = (lr;\n"         // unclosed parenthesis
                           "  let c = lr * 2;\n"
                           "  param = param - c * grad;\n"
                           "}\n";
  Parsed parsed = parse(text);
  ASSERT_TRUE(parsed.rule);
  EXPECT_EQ(parsed.diags->errorCount(), 3u) << parsed.messages();
  EXPECT_EQ(parsed.diags->warningCount(), 0u);
  std::vector<uint32_t> lines;
  for (const Diagnostic &diagnostic : parsed.diags->diagnostics())
    if (diagnostic.severity == Severity::Error)
      lines.push_back(parsed.file->lineCol(diagnostic.range.begin).line);
  EXPECT_EQ(lines, (std::vector<uint32_t>{3, 5, 6}));
  // The three errors point at what is wrong: the ';', the second '*', the ';'.
  const auto &d = parsed.diags->diagnostics();
  ASSERT_EQ(d.size(), 3u);
  EXPECT_EQ(d[0].range.begin, offsetOf(text, ";\n  state"));
  EXPECT_EQ(d[1].range.begin, offsetOf(text, "* grad"));
  EXPECT_EQ(d[2].range.begin, offsetOf(text, ";\n  let c"));

  EXPECT_EQ(parsedStatements(*parsed.rule), (std::vector<std::string>{"lr", "m", "c", "param"}));
  expectOnlyDeclarationStubs(*parsed.rule);
  EXPECT_EQ(shape(*parsed.rule->stmts.back().value), "(- param (* c grad))");
}

TEST(ParserRecovery, BadStatementsOfEveryKind) {
  const std::string text = "optimizer t {\n"
                           "  hyper = 1;\n"            // no name
                           "  let let = 2;\n"          // keyword as a name
                           "  3 = x;\n"                // not a statement
                           "  let ok = 1;\n"
                           "  let bad = f(1,);\n"      // empty argument
                           "  ok = ;\n"                // no value
                           "  state s = ) ;\n"         // stray ')'
                           "  let ok2 = ok;\n"
                           "}\n";
  Parsed parsed = parse(text);
  ASSERT_TRUE(parsed.rule);
  EXPECT_EQ(parsed.diags->errorCount(), 6u) << parsed.messages();
  EXPECT_EQ(parsedStatements(*parsed.rule), (std::vector<std::string>{"ok", "ok2"}));
  expectOnlyDeclarationStubs(*parsed.rule);
}

TEST(ParserRecovery, HeaderErrorsReturnNoRule) {
  for (const char *text : {"", "   # only a comment\n", "optimizer", "optimizer {", "optimiser t {}",
                           "optimizer 3t {}", "optimizer let {}", "optimizer t", "{ }"}) {
    SCOPED_TRACE(text);
    Parsed parsed = parse(text);
    EXPECT_FALSE(parsed.rule);
    EXPECT_EQ(parsed.diags->errorCount(), 1u) << parsed.messages();
  }
}

TEST(ParserRecovery, UnterminatedRuleKeepsItsStatements) {
  const std::string text = "optimizer t {\n  let a = 1;\n  param = a;\n";
  Parsed parsed = parse(text);
  ASSERT_TRUE(parsed.rule);
  EXPECT_EQ(parsed.diags->errorCount(), 1u) << parsed.messages();
  ASSERT_EQ(parsed.rule->stmts.size(), 2u);
  const auto &d = parsed.diags->diagnostics();
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ(d[0].severity, Severity::Error);
  EXPECT_EQ(d[0].range.begin, text.size()) << "at the end of the file";
  EXPECT_EQ(d[1].severity, Severity::Note);
  uint32_t name = offsetOf(text, " t {") + 1;
  EXPECT_EQ(d[1].range, (SourceRange{name, name + 1})) << "the note points at the rule's name";
}

TEST(ParserRecovery, TextAfterTheClosingBrace) {
  Parsed parsed = parse("optimizer t { let a = 1; }\n optimizer u { }");
  ASSERT_TRUE(parsed.rule);
  EXPECT_EQ(parsed.diags->errorCount(), 1u) << parsed.messages();
  EXPECT_EQ(parsed.rule->stmts.size(), 1u);
}

TEST(ParserRecovery, NestingLimitsAreEnforced) {
  auto nested = [](unsigned depth) {
    return "optimizer t { let a = " + std::string(depth, '(') + "1" + std::string(depth, ')') +
           "; let b = 2; }";
  };
  Parsed ok = parse(nested(kMaxParenDepth));
  EXPECT_FALSE(ok.diags->hasErrors()) << "the limit itself is allowed";
  Parsed deep = parse(nested(kMaxParenDepth + 1));
  ASSERT_TRUE(deep.rule);
  EXPECT_EQ(deep.diags->errorCount(), 1u);
  EXPECT_EQ(parsedStatements(*deep.rule), (std::vector<std::string>{"b"}))
      << "the next statement survives";

  std::string conditionals;
  for (unsigned i = 0; i < kMaxConditionalsPerStatement; ++i)
    conditionals += "1 ? 2 : ";
  EXPECT_FALSE(parse("optimizer t { let a = " + conditionals + "3; }").diags->hasErrors());
  EXPECT_EQ(parse("optimizer t { let a = 0 ? 1 : " + conditionals + "3; }").diags->errorCount(), 1u);

  // Parentheses inside a comment do not count.
  std::string commented = "optimizer t { let a = 1 # " + std::string(1000, '(') + "\n; }";
  EXPECT_FALSE(parse(commented).diags->hasErrors());
}

TEST(ParserRecovery, ExpressionDepthLimit) {
  auto chain = [](unsigned terms) {
    std::string text = "optimizer t { let a = 1";
    for (unsigned i = 1; i < terms; ++i)
      text += "+1";
    return text + "; let b = 2; }";
  };
  // n terms fold into n - 1 additions over leaves: depth n.
  EXPECT_FALSE(parse(chain(kMaxExprDepth)).diags->hasErrors());
  Parsed deep = parse(chain(kMaxExprDepth + 1));
  EXPECT_EQ(deep.diags->errorCount(), 1u);
  ASSERT_TRUE(deep.rule);
  EXPECT_EQ(parsedStatements(*deep.rule), (std::vector<std::string>{"b"}));
}

} // namespace
} // namespace optdsl
