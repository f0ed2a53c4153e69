// The Spirit X3 grammar of the .opt language. Each rule has its production
// above it; readable rule names become "expected …" messages. Only Parser.cpp
// includes this (X3 rules are instantiated once).
#pragma once

#include "SyntaxTree.h"

#include <boost/spirit/home/x3.hpp>

#include <type_traits>

namespace optdsl::grammar {
namespace x3 = boost::spirit::x3;
using namespace optdsl::syntax;
using x3::char_;
using x3::lexeme;
using x3::lit;
using x3::raw;
using x3::string;

/// Context key for the start of the buffer, so nodes store byte offsets.
struct BufferStart;

/// Records each Tagged node's byte range when its rule succeeds.
struct Annotate {
  template <typename It, typename Node, typename Context>
  std::enable_if_t<std::is_base_of_v<Tagged, Node>>
  on_success(const It &first, const It &last, Node &node, const Context &context) const {
    const char *start = x3::get<BufferStart>(context);
    node.begin = static_cast<uint32_t>(first - start);
    node.end = static_cast<uint32_t>(last - start);
  }
};

// Explicit ranges rather than character classes: classification functions
// are undefined for bytes >= 0x80, and the parser must take any bytes.
inline const auto digit = char_('0', '9');
inline const auto identStart = char_('a', 'z') | char_('A', 'Z') | char_('_');
inline const auto identChar = identStart | digit;

/// whitespace ::= ' ' | '\t' | '\n' | '\r' | '\f' | '\v' ;  comment ::= '#' … end of line
inline const auto skipper =
    char_(" \t\n\r\f\v") | (lit('#') >> *(char_ - x3::eol) >> (x3::eol | x3::eoi));

inline auto keyword(const char *word) { return lexeme[lit(word) >> !identChar]; }
inline const auto reserved = keyword("optimizer") | keyword("hyper") | keyword("state") |
                             keyword("scalar") | keyword("let") | keyword("input") | keyword("transform") |
                             keyword("apply");

struct NameId : Annotate {};
struct NumberId : Annotate {};
struct CallId : Annotate {};
struct PrimaryId;
struct ParenId : Annotate {};
struct ExponentId : Annotate {};
struct PrefixedId : Annotate {};
struct PowerId : Annotate {};
struct MultiplicativeId : Annotate {};
struct AdditiveId : Annotate {};
struct RelationalId : Annotate {};
struct EqualityId : Annotate {};
struct LogicalAndId : Annotate {};
struct LogicalOrId : Annotate {};
struct ConditionalId : Annotate {};
struct StatementId : Annotate {};

const x3::rule<NameId, Name> name = "identifier";
const x3::rule<NumberId, Number> number = "number";
const x3::rule<CallId, Call> call = "call";
const x3::rule<struct ArgumentsId, std::vector<Conditional>> arguments = "arguments";
const x3::rule<PrimaryId, Operand> primary = "operand";
const x3::rule<ParenId, Conditional> paren = "parenthesised expression";
const x3::rule<ExponentId, Prefixed> exponent = "exponent";
const x3::rule<PrefixedId, Prefixed> prefixed = "operand";
const x3::rule<PowerId, Chain> power = "operand";
const x3::rule<MultiplicativeId, Chain> multiplicative = "operand";
const x3::rule<AdditiveId, Chain> additive = "operand";
const x3::rule<RelationalId, Chain> relational = "operand";
const x3::rule<EqualityId, Chain> equality = "operand";
const x3::rule<LogicalAndId, Chain> logicalAnd = "operand";
const x3::rule<LogicalOrId, Chain> logicalOr = "operand";
const x3::rule<ConditionalId, Conditional> expression = "expression";
const x3::rule<struct PowerOpId, Operation> powerOp = "operation";
const x3::rule<struct MultiplicativeOpId, Operation> multiplicativeOp = "operation";
const x3::rule<struct AdditiveOpId, Operation> additiveOp = "operation";
const x3::rule<struct RelationalOpId, Operation> relationalOp = "operation";
const x3::rule<struct EqualityOpId, Operation> equalityOp = "operation";
const x3::rule<struct LogicalAndOpId, Operation> logicalAndOp = "operation";
const x3::rule<struct LogicalOrOpId, Operation> logicalOrOp = "operation";
const x3::rule<struct BranchId, Branch> branch = "conditional branch";

struct IntervalId : Annotate {};
const x3::rule<IntervalId, Interval> interval = "range";
const x3::rule<struct ValueClauseId, ValueClause> valueClause = "expression";
const x3::rule<struct OptionalValueId, boost::optional<ValueClause>> optionalValue =
    "'=' or ';'";
const x3::rule<struct ShapeId, Name> shape = "shape";
const x3::rule<StatementId, Statement> statement = "statement";

// A rule with a semantic action gets no on_success call with its attribute,
// so the token rules record their range here.
inline auto assignText = [](auto &context) {
  const auto &range = x3::_attr(context);
  auto &node = x3::_val(context);
  const char *start = x3::get<BufferStart>(context);
  node.text.assign(range.begin(), range.end());
  node.begin = static_cast<uint32_t>(range.begin() - start);
  node.end = static_cast<uint32_t>(range.end() - start);
};

/// name ::= (letter | '_') { letter | digit | '_' }, not a keyword
const auto name_def = raw[lexeme[!reserved >> identStart >> *identChar]][assignText];

/// number ::= a C floating or integer literal. The token is taken loosely
/// (as C's pp-number) and validated when folded, so `1e` or `1.2.3` get a
/// precise "invalid number" instead of a confusing "expected ';'".
inline const auto numberToken =
    lexeme[(digit | (lit('.') >> &digit)) >>
           *((char_("eEpP") >> char_("+-")) | identChar | char_('.'))];
const auto number_def = raw[numberToken][assignText];

/// arguments ::= expression { ',' expression }
const auto arguments_def = expression > *(',' > expression);

/// call ::= name '(' [ arguments ] ')'
const auto call_def = name >> '(' >> -arguments > ')';

/// paren ::= '(' expression ')'
const auto paren_def = '(' > expression > ')';

/// primary ::= call | number | name | paren
const auto primary_def = call | number | name | paren;

/// exponent ::= { '-' | '+' | '!' } primary
const auto exponent_def = *char_("-+!") >> primary;

/// power ::= primary { '^' exponent }        (folded right-associatively)
const auto powerOp_def = string("^") > exponent;
const auto power_def = primary >> *powerOp;

/// prefixed ::= { '-' | '+' | '!' } power    (-x^2 is -(x^2))
const auto prefixed_def = *char_("-+!") >> power;

/// multiplicative ::= prefixed { ('*' | '/') prefixed }
const auto multiplicativeOp_def = (string("*") | string("/")) > prefixed;
const auto multiplicative_def =
    prefixed >> *multiplicativeOp;

/// additive ::= multiplicative { ('+' | '-') multiplicative }
const auto additiveOp_def = (string("+") | string("-")) > multiplicative;
const auto additive_def =
    multiplicative >> *additiveOp;

/// relational ::= additive { ('<=' | '>=' | '<' | '>') additive }
const auto relationalOp_def = (string("<=") | string(">=") | string("<") | string(">")) > additive;
const auto relational_def =
    additive >> *relationalOp;

/// equality ::= relational { ('==' | '!=') relational }
const auto equalityOp_def = (string("==") | string("!=")) > relational;
const auto equality_def =
    relational >> *equalityOp;

/// logicalAnd ::= equality { '&&' equality }
const auto logicalAndOp_def = string("&&") > equality;
const auto logicalAnd_def = equality >> *logicalAndOp;

/// logicalOr ::= logicalAnd { '||' logicalAnd }
const auto logicalOrOp_def = string("||") > logicalAnd;
const auto logicalOr_def = logicalAnd >> *logicalOrOp;

/// branch ::= '?' expression ':' logicalOr
const auto branch_def = '?' > expression > ':' > logicalOr;

/// expression ::= logicalOr { branch }
const auto expression_def = logicalOr >> *branch;

/// interval ::= 'in' ('[' | '(') expression ',' expression (']' | ')')
const auto intervalOpen = x3::rule<struct IntervalOpenId, char>("'[' or '('") = char_("[(");
const auto intervalClose = x3::rule<struct IntervalCloseId, char>("']' or ')'") = char_("])");
const auto interval_def = keyword("in") > intervalOpen > expression > ',' > expression > intervalClose;

/// valueClause ::= expression [ interval ]
const auto valueClause_def = expression > -interval;

/// optionalValue ::= '=' valueClause ';' | ';'
/// (one rule, so that `hyper lr 1;` is "expected '=' or ';'", not "expected ';'")
const auto optionalValue_def = ('=' > valueClause > ';') | ';';

/// shape ::= '[' name ']'     (`state vr[rows];`: one value per row)
const auto shape_def = '[' > name > ']';

/// statement ::= ('hyper' | 'state' | 'input' | 'apply') name [ shape ] optionalValue
///             | ('scalar' | 'let') name [ shape ] '=' valueClause ';'
///             | name '=' valueClause ';'
/// (an interval after anything but a hyper's value, a value after an input
/// or an apply, and a shape after anything but a state are refused by sema,
/// with a clearer message than a syntax error)
const auto declKeyword = lexeme[(string("hyper") | string("state") | string("scalar") |
                                 string("let") | string("input") | string("apply")) >>
                                !identChar];
const auto optionalValueKeyword =
    lexeme[(string("hyper") | string("state") | string("input") | string("apply")) >> !identChar];
const auto valueKeyword = lexeme[(string("scalar") | string("let")) >> !identChar];
const auto noShape = x3::attr(boost::optional<Name>());
const auto statement_def = (optionalValueKeyword > name > -shape > optionalValue) |
                           (valueKeyword > name > -shape > '=' > valueClause > ';') |
                           (x3::attr(std::string()) >> name >> noShape > '=' > valueClause > ';');

/// header ::= 'optimizer' name '{'
const auto header = keyword("optimizer") > name > '{';
/// transformHeader ::= 'transform' name '{'   (a piece rules apply: dsl/README.md)
const auto transformHeader = keyword("transform") > name > '{';

BOOST_SPIRIT_DEFINE(name, number, arguments, call, primary, paren, exponent, prefixed, powerOp, power,
                    multiplicativeOp, multiplicative, additiveOp, additive, relationalOp, relational,
                    equalityOp, equality, logicalAndOp, logicalAnd, logicalOrOp, logicalOr, branch,
                    expression, interval, valueClause, optionalValue, shape, statement)

} // namespace optdsl::grammar
