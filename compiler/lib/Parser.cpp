// Drives the X3 grammar one statement at a time (so a syntax error costs one
// statement, not the file), then folds the concrete syntax tree into the AST:
// precedence chains left-fold, `^` and `?:` right-fold, numbers are validated.
#include "optdsl/Parser.h"

#include "Grammar.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <unordered_map>

namespace optdsl {
namespace {

using Iterator = const char *;
using ExpectationFailure = boost::spirit::x3::expectation_failure<Iterator>;

class Folder {
public:
  Folder(DiagnosticEngine &diags) : diags_(diags) {}

  /// Returns null (after reporting) when the expression is unusable.
  ast::ExprPtr fold(const syntax::Conditional &node) {
    failed_ = false;
    ast::ExprPtr result = conditional(node);
    parenthesised_.clear();
    return failed_ ? nullptr : std::move(result);
  }

private:
  static SourceRange rangeOf(const syntax::Tagged &node) { return {node.begin, node.end}; }

  /// The range of `expr` as an operand: with the parentheses around it.
  SourceRange outer(const ast::Expr &expr) const {
    auto it = parenthesised_.find(&expr);
    return it == parenthesised_.end() ? expr.range : it->second;
  }

  ast::ExprPtr make(ast::ExprKind kind, SourceRange range) {
    auto expr = std::make_unique<ast::Expr>();
    expr->kind = kind;
    expr->range = range;
    return expr;
  }

  // Depth is tracked as nodes are built so a pathological chain
  // (a+a+…+a, a million times) is refused before it becomes a tree whose
  // recursive walk or destruction could exhaust the stack.
  ast::ExprPtr withOperands(ast::ExprPtr expr, std::vector<ast::ExprPtr> operands) {
    uint32_t depth = 0;
    for (auto &operand : operands) {
      if (!operand)
        return nullptr;
      depth = std::max(depth, operand->depth);
    }
    expr->depth = depth + 1;
    expr->operands = std::move(operands);
    if (expr->depth > kMaxExprDepth) {
      if (!failed_)
        diags_.error(expr->range, "expression nests too deeply (the limit is " +
                                      std::to_string(kMaxExprDepth) + " levels)");
      failed_ = true;
      return nullptr;
    }
    return expr;
  }

  ast::ExprPtr binary(ast::BinaryOp op, ast::ExprPtr lhs, ast::ExprPtr rhs) {
    if (!lhs || !rhs)
      return nullptr;
    auto expr = make(ast::ExprKind::Binary, {outer(*lhs).begin, outer(*rhs).end});
    expr->binaryOp = op;
    std::vector<ast::ExprPtr> operands;
    operands.push_back(std::move(lhs));
    operands.push_back(std::move(rhs));
    return withOperands(std::move(expr), std::move(operands));
  }

  static ast::BinaryOp binaryOp(const std::string &op) {
    static const std::pair<const char *, ast::BinaryOp> table[] = {
        {"+", ast::BinaryOp::Add}, {"-", ast::BinaryOp::Sub},  {"*", ast::BinaryOp::Mul},
        {"/", ast::BinaryOp::Div}, {"^", ast::BinaryOp::Pow},  {"<", ast::BinaryOp::Lt},
        {"<=", ast::BinaryOp::Le}, {">", ast::BinaryOp::Gt},   {">=", ast::BinaryOp::Ge},
        {"==", ast::BinaryOp::Eq}, {"!=", ast::BinaryOp::Ne},  {"&&", ast::BinaryOp::And},
        {"||", ast::BinaryOp::Or}};
    for (const auto &[spelling, value] : table)
      if (op == spelling)
        return value;
    return ast::BinaryOp::Add;
  }

  ast::ExprPtr conditional(const syntax::Conditional &node) {
    if (node.rest.empty())
      return chain(node.first);
    // a ? t1 : o1 ? t2 : o2  ==  a ? t1 : (o1 ? t2 : o2): build from the right.
    ast::ExprPtr result = chain(node.rest.back().otherwise);
    for (size_t i = node.rest.size(); i-- > 0;) {
      const syntax::Chain &test = i == 0 ? node.first : node.rest[i - 1].otherwise;
      std::vector<ast::ExprPtr> operands;
      operands.push_back(chain(test));
      operands.push_back(conditional(node.rest[i].then));
      operands.push_back(std::move(result));
      if (!operands[0] || !operands[2])
        return nullptr;
      auto expr = make(ast::ExprKind::Conditional,
                       {outer(*operands[0]).begin, outer(*operands[2]).end});
      result = withOperands(std::move(expr), std::move(operands));
    }
    return result;
  }

  ast::ExprPtr chain(const syntax::Chain &node) {
    if (node.rest.empty())
      return operand(node.first);
    if (node.rest.front().op == "^") {
      ast::ExprPtr result = operand(node.rest.back().operand);
      for (size_t i = node.rest.size(); i-- > 0;) {
        ast::ExprPtr base = operand(i == 0 ? node.first : node.rest[i - 1].operand);
        result = binary(ast::BinaryOp::Pow, std::move(base), std::move(result));
      }
      return result;
    }
    ast::ExprPtr result = operand(node.first);
    for (const syntax::Operation &operation : node.rest)
      result = binary(binaryOp(operation.op), std::move(result), operand(operation.operand));
    return result;
  }

  ast::ExprPtr operand(const syntax::Operand &node) {
    struct Visitor {
      Folder &self;
      ast::ExprPtr operator()(const syntax::Number &n) const { return self.number(n); }
      ast::ExprPtr operator()(const syntax::Name &n) const {
        auto expr = self.make(ast::ExprKind::Name, rangeOf(n));
        expr->name = n.text;
        return expr;
      }
      ast::ExprPtr operator()(const syntax::Call &n) const { return self.call(n); }
      ast::ExprPtr operator()(const syntax::Prefixed &n) const { return self.prefixed(n); }
      ast::ExprPtr operator()(const syntax::Chain &n) const { return self.chain(n); }
      ast::ExprPtr operator()(const syntax::Conditional &n) const {
        // A parenthesised expression: keep the parentheses in its range. A
        // name, number or call keeps its own range, which diagnostics point
        // at, and the parentheses count only in the enclosing node's range.
        ast::ExprPtr inner = self.conditional(n);
        if (!inner)
          return inner;
        if (inner->kind == ast::ExprKind::Name || inner->kind == ast::ExprKind::Number ||
            inner->kind == ast::ExprKind::Call)
          self.parenthesised_[inner.get()] = rangeOf(n);
        else
          inner->range = rangeOf(n);
        return inner;
      }
    };
    return boost::apply_visitor(Visitor{*this}, node);
  }

  ast::ExprPtr prefixed(const syntax::Prefixed &node) {
    // Blanks and comments may separate the operators (`- - x`): find each.
    std::vector<uint32_t> opBegin;
    const std::string &text = diags_.file().text();
    Iterator it = text.data() + node.begin;
    for (size_t i = 0; i < node.ops.size(); ++i) {
      boost::spirit::x3::parse(it, text.data() + text.size(), *grammar::skipper);
      opBegin.push_back(static_cast<uint32_t>(it - text.data()));
      ++it;
    }
    ast::ExprPtr result = operand(node.operand);
    // The operator nearest the operand applies first.
    for (size_t i = node.ops.size(); i-- > 0 && result;) {
      auto expr = make(ast::ExprKind::Unary, {opBegin[i], outer(*result).end});
      expr->unaryOp = node.ops[i] == '-'   ? ast::UnaryOp::Negate
                      : node.ops[i] == '!' ? ast::UnaryOp::Not
                                           : ast::UnaryOp::Plus;
      std::vector<ast::ExprPtr> operands;
      operands.push_back(std::move(result));
      result = withOperands(std::move(expr), std::move(operands));
    }
    return result;
  }

  ast::ExprPtr call(const syntax::Call &node) {
    auto expr = make(ast::ExprKind::Call, rangeOf(node));
    expr->name = node.callee.text;
    expr->nameRange = rangeOf(node.callee);
    std::vector<ast::ExprPtr> operands;
    for (const syntax::Conditional &arg : node.args)
      operands.push_back(conditional(arg));
    if (operands.empty()) {
      expr->depth = 1;
      return expr;
    }
    return withOperands(std::move(expr), std::move(operands));
  }

  ast::ExprPtr number(const syntax::Number &node) {
    namespace x3 = boost::spirit::x3;
    using grammar::digit;
    const auto hexDigit = digit | x3::char_('a', 'f') | x3::char_('A', 'F');
    const auto decimal = ((+digit >> -('.' >> *digit)) | ('.' >> +digit)) >>
                         -(x3::char_("eE") >> -x3::char_("+-") >> +digit);
    const auto hexadecimal = '0' >> x3::char_("xX") >>
                             ((+hexDigit >> -('.' >> *hexDigit)) | ('.' >> +hexDigit)) >>
                             -(x3::char_("pP") >> -x3::char_("+-") >> +digit);
    const auto literal = (hexadecimal | decimal) >> -x3::char_("fFlL") >> x3::eoi;
    Iterator first = node.text.data(), last = first + node.text.size();
    SourceRange range = rangeOf(node);
    if (!x3::parse(first, last, literal)) {
      diags_.error(range, "invalid number '" + node.text + "'");
      failed_ = true;
      return nullptr;
    }
    // strtod stops at a suffix (f, F, l, L) by itself; in 0x1f the f is a digit.
    errno = 0;
    double value = std::strtod(node.text.c_str(), nullptr);
    // Too small is out of range too: 1e-999 silently becoming 0 would make
    // `eps` vanish.
    if (std::isinf(value) || (errno == ERANGE && value == 0)) {
      diags_.error(range, "number '" + node.text + "' is out of range for a double");
      failed_ = true;
      return nullptr;
    }
    auto expr = make(ast::ExprKind::Number, range);
    expr->number = value;
    return expr;
  }

  DiagnosticEngine &diags_;
  bool failed_ = false;
  /// Names, numbers and calls written in parentheses: the parenthesised range.
  std::unordered_map<const ast::Expr *, SourceRange> parenthesised_;
};

class StatementDriver {
public:
  StatementDriver(const SourceFile &file, DiagnosticEngine &diags)
      : diags_(diags), start_(file.text().data()), end_(start_ + file.text().size()) {}

  template <typename Parser> auto with(const Parser &parser) const {
    return boost::spirit::x3::with<grammar::BufferStart>(start_)[parser];
  }

  std::optional<ast::Rule> run() {
    Iterator it = start_;
    skipBlanks(it);
    syntax::Name name;
    Iterator probe = it;
    bool transform = boost::spirit::x3::phrase_parse(probe, end_, grammar::keyword("transform"), grammar::skipper);
    try {
      bool parsed = transform
                        ? boost::spirit::x3::phrase_parse(it, end_, with(grammar::transformHeader), grammar::skipper, name)
                        : boost::spirit::x3::phrase_parse(it, end_, with(grammar::header), grammar::skipper, name);
      if (!parsed) {
        diags_.error(at(it), "expected 'optimizer' NAME '{' at the start of the file");
        return std::nullopt;
      }
    } catch (const ExpectationFailure &failure) {
      reportExpectation(failure);
      return std::nullopt;
    }
    ast::Rule rule;
    rule.transform = transform;
    rule.name = name.text;
    rule.nameRange = {name.begin, name.end};
    uint32_t ruleBegin = offset(it);
    while (true) {
      skipBlanks(it);
      if (it == end_) {
        diags_.error(at(it), "expected '}' at end of file");
        diags_.note(rule.nameRange, std::string("to close ") + (rule.transform ? "transform" : "optimizer") + " '" +
                                        rule.name + "' opened here");
        break;
      }
      if (*it == '}') {
        ++it;
        skipBlanks(it);
        if (it != end_)
          diags_.error(at(it), rule.transform ? "unexpected text after the transform's closing '}' (one transform per file)"
                                              : "unexpected text after the optimizer's closing '}' (one optimizer per file)");
        break;
      }
      parseStatement(it, rule);
    }
    rule.range = {ruleBegin, offset(it)};
    return rule;
  }

private:
  uint32_t offset(Iterator it) const { return static_cast<uint32_t>(it - start_); }
  SourceRange at(Iterator it) const { return {offset(it), offset(it) + 1}; }

  void skipBlanks(Iterator &it) const {
    boost::spirit::x3::parse(it, end_, *grammar::skipper);
  }

  /// What an error says it found: a whole word ("keyword 'let'", "'grad'",
  /// "'1e'"), not just its first letter; else one character.
  std::string describe(Iterator where) const {
    namespace x3 = boost::spirit::x3;
    if (where == end_)
      return "end of file";
    auto byte = static_cast<unsigned char>(*where);
    if (byte < 0x20 || byte == 0x7f)
      return "a control character";
    if (byte >= 0x80)
      return "a non-ASCII byte";
    Iterator wordEnd = where;
    if (x3::parse(wordEnd, end_, grammar::reserved))
      return "keyword '" + std::string(where, wordEnd) + "'";
    if (x3::parse(wordEnd, end_, (grammar::identStart >> *grammar::identChar) | grammar::numberToken))
      return "'" + std::string(where, wordEnd) + "'";
    return "'" + std::string(1, *where) + "'";
  }

  void reportExpectation(const ExpectationFailure &failure) {
    Iterator where = failure.where();
    skipBlanks(where);
    diags_.error(at(where), "expected " + failure.which() + ", found " + describe(where));
  }

  /// The end of the last token before `it`, back over blanks and comments
  /// (there are no strings, so a line's first '#' starts a comment).
  Iterator endOfPreviousToken(Iterator it) const {
    while (true) {
      Iterator blanksEnd = it;
      while (it != start_ && (it[-1] == ' ' || (it[-1] >= '\t' && it[-1] <= '\r')))
        --it;
      // A comment runs to the end of its line, so only a line left behind can
      // end in one; scanning the line for '#' every time made many errors on
      // one long line quadratic.
      if (std::find(it, blanksEnd, '\n') == blanksEnd)
        return it;
      Iterator line = it;
      while (line != start_ && line[-1] != '\n')
        --line;
      Iterator hash = std::find(line, it, '#');
      if (hash == it)
        return it;
      it = hash;
    }
  }

  /// Whether a declaration starts at `it` (KEYWORD NAME: a keyword cannot be
  /// part of an expression) or, with `orAssignment`, an assignment (NAME '=').
  bool startsStatement(Iterator it, bool orAssignment = true) const {
    namespace x3 = boost::spirit::x3;
    const auto identifier = x3::lexeme[grammar::identStart >> *grammar::identChar];
    const auto assignment = identifier >> x3::lit('=') >> !x3::lit('=');
    if (x3::phrase_parse(it, end_, grammar::declKeyword >> identifier, grammar::skipper))
      return true;
    return orAssignment && x3::phrase_parse(it, end_, assignment, grammar::skipper);
  }

  static ast::StmtKind kindOf(const std::string &keyword) {
    return keyword == "hyper"    ? ast::StmtKind::Hyper
           : keyword == "state"  ? ast::StmtKind::State
           : keyword == "scalar" ? ast::StmtKind::Scalar
           : keyword == "let"    ? ast::StmtKind::Let
           : keyword == "input"  ? ast::StmtKind::Input
           : keyword == "apply"  ? ast::StmtKind::Apply
                                 : ast::StmtKind::Assign;
  }

  /// A declaration whose statement has an error still declares its name, with
  /// the value 0, so that its uses are not reported as unknown names too.
  void declareDespiteError(Iterator it, ast::Rule &rule) const {
    namespace x3 = boost::spirit::x3;
    std::string keyword;
    syntax::Name name;
    if (!x3::phrase_parse(it, end_, grammar::declKeyword, grammar::skipper, keyword) ||
        !x3::phrase_parse(it, end_, with(grammar::name), grammar::skipper, name))
      return;
    ast::Stmt stmt;
    stmt.kind = kindOf(keyword);
    stmt.range = stmt.nameRange = {name.begin, name.end};
    stmt.name = name.text;
    if (stmt.kind != ast::StmtKind::State && stmt.kind != ast::StmtKind::Input && stmt.kind != ast::StmtKind::Apply) {
      stmt.value = std::make_unique<ast::Expr>();
      stmt.value->kind = ast::ExprKind::Number;
      stmt.value->range = stmt.nameRange;
    }
    rule.stmts.push_back(std::move(stmt));
  }

  /// Skips to just past the next ';', to a '}' (which closes the rule), or to
  /// the next line if a statement starts there; none counts inside a comment.
  void recover(Iterator &it) const {
    while (it != end_ && *it != ';' && *it != '}') {
      if (*it == '#') {
        while (it != end_ && *it != '\n')
          ++it;
      } else if (*it++ == '\n' && startsStatement(it)) {
        return;
      }
    }
    if (it != end_ && *it == ';')
      ++it;
  }

  /// Parenthesis depth and conditionals are the grammar's only recursion;
  /// bounding them per statement bounds the parser's stack.
  bool withinNestingLimits(Iterator it) {
    unsigned depth = 0, conditionals = 0;
    for (; it != end_ && *it != ';' && *it != '}'; ++it) {
      if (*it == '#') {
        while (it != end_ && *it != '\n')
          ++it;
        if (it == end_)
          break;
      } else if (*it == '(' && ++depth > kMaxParenDepth) {
        diags_.error(at(it), "parentheses nest too deeply (the limit is " +
                                 std::to_string(kMaxParenDepth) + ")");
        return false;
      } else if (*it == ')' && depth > 0) {
        --depth;
      } else if (*it == '?' && ++conditionals > kMaxConditionalsPerStatement) {
        diags_.error(at(it), "too many '?:' in one statement (the limit is " +
                                 std::to_string(kMaxConditionalsPerStatement) + ")");
        return false;
      }
    }
    return true;
  }

  void parseStatement(Iterator &it, ast::Rule &rule) {
    Iterator begin = it;
    if (!withinNestingLimits(it)) {
      declareDespiteError(begin, rule);
      recover(it);
      return;
    }
    syntax::Statement parsed;
    try {
      if (!boost::spirit::x3::phrase_parse(it, end_, with(grammar::statement), grammar::skipper,
                                           parsed)) {
        diags_.error(at(begin), "expected a statement: 'hyper', 'state', 'scalar', 'let' or "
                                "an assignment NAME = EXPR;");
        it = begin;
        recover(it);
        return;
      }
    } catch (const ExpectationFailure &failure) {
      it = failure.where();
      skipBlanks(it);
      bool semicolon = failure.which() == "';'" || failure.which() == "'=' or ';'";
      Iterator lastEnd = endOfPreviousToken(it);
      bool newLine = std::find(lastEnd, it, '\n') != it;
      // A ';' forgotten at the end of a line is reported there, not at the
      // next line's first token.
      if (semicolon && newLine)
        diags_.error(at(lastEnd), "expected ';' at the end of the statement");
      else
        reportExpectation(failure);
      declareDespiteError(begin, rule);
      // A broken statement ends where the next one starts: at a declaration
      // right where a ';' is missing, or on the next line. Skipping to the
      // next ';' would drop that one too.
      bool nextStarts = (semicolon || newLine) && startsStatement(it, newLine);
      if (it == begin || !nextStarts)
        recover(it);
      return;
    }
    ast::Stmt stmt;
    stmt.range = {parsed.begin, parsed.end};
    stmt.name = parsed.name.text;
    stmt.nameRange = {parsed.name.begin, parsed.name.end};
    stmt.kind = kindOf(parsed.keyword);
    if (parsed.shape) {
      stmt.shape = parsed.shape->text;
      stmt.shapeRange = {parsed.shape->begin, parsed.shape->end};
    }
    if (parsed.value) {
      stmt.value = folder_.fold(parsed.value->value);
      if (!stmt.value) {
        declareDespiteError(begin, rule);
        return;
      }
      if (const auto &interval = parsed.value->interval) {
        stmt.interval = std::make_unique<ast::Interval>();
        stmt.interval->range = {interval->begin, interval->end};
        stmt.interval->lowerOpen = interval->open == '(';
        stmt.interval->upperOpen = interval->close == ')';
        stmt.interval->lower = folder_.fold(interval->lower);
        stmt.interval->upper = folder_.fold(interval->upper);
        if (!stmt.interval->lower || !stmt.interval->upper) {
          declareDespiteError(begin, rule);
          return;
        }
      }
    }
    rule.stmts.push_back(std::move(stmt));
  }

  DiagnosticEngine &diags_;
  Iterator start_;
  Iterator end_;
  Folder folder_{diags_};
};

} // namespace

std::optional<ast::Rule> parseRule(const SourceFile &file, DiagnosticEngine &diags) {
  return StatementDriver(file, diags).run();
}

} // namespace optdsl
