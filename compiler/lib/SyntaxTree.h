// The concrete syntax tree Spirit X3 fills in (calc9 style: one node per
// precedence level, a first operand and a list of operations). Parser.cpp
// folds it into the ast::Expr tree; nothing outside the parser sees it.
#pragma once

#include <boost/fusion/include/adapt_struct.hpp>
#include <boost/optional.hpp>
#include <boost/spirit/home/x3/support/ast/variant.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace optdsl::syntax {
namespace x3 = boost::spirit::x3;

/// Byte offsets filled by the rules' on_success handler.
struct Tagged {
  uint32_t begin = 0;
  uint32_t end = 0;
};

struct Name : Tagged {
  std::string text;
};
struct Number : Tagged {
  std::string text;
};

struct Call;
struct Prefixed;
struct Chain;
struct Conditional;

struct Operand : x3::variant<Number, x3::forward_ast<Call>, Name, x3::forward_ast<Prefixed>,
                             x3::forward_ast<Chain>, x3::forward_ast<Conditional>> {
  using base_type::base_type;
  using base_type::operator=;
};

/// Prefix operators ("-", "!", "+", any number of them) applied to an operand.
struct Prefixed : Tagged {
  std::string ops;
  Operand operand;
};

struct Operation : Tagged {
  std::string op;
  Operand operand;
};

/// `first op operand op operand …` at one precedence level.
struct Chain : Tagged {
  Operand first;
  std::vector<Operation> rest;
};

struct Branch;

/// A full expression: `first ? t1 : o1 ? t2 : o2 …` (right-associative).
struct Conditional : Tagged {
  Chain first;
  std::vector<Branch> rest;
};

/// `? then : otherwise`
struct Branch : Tagged {
  Conditional then;
  Chain otherwise;
};

struct Call : Tagged {
  Name callee;
  std::vector<Conditional> args;
};

/// `in [lower, upper)`: the values a hyper allows; '(' or ')' exclude the bound.
struct Interval : Tagged {
  char open = '[';
  Conditional lower;
  Conditional upper;
  char close = ']';
};

/// `= value [in interval]`
struct ValueClause {
  Conditional value;
  boost::optional<Interval> interval;
};

struct Statement : Tagged {
  std::string keyword; // empty for an assignment
  Name name;
  boost::optional<Name> shape; // `state vr[rows]`: the axis the state spans
  boost::optional<ValueClause> value;
};

} // namespace optdsl::syntax

BOOST_FUSION_ADAPT_STRUCT(optdsl::syntax::Prefixed, ops, operand)
BOOST_FUSION_ADAPT_STRUCT(optdsl::syntax::Operation, op, operand)
BOOST_FUSION_ADAPT_STRUCT(optdsl::syntax::Chain, first, rest)
BOOST_FUSION_ADAPT_STRUCT(optdsl::syntax::Branch, then, otherwise)
BOOST_FUSION_ADAPT_STRUCT(optdsl::syntax::Conditional, first, rest)
BOOST_FUSION_ADAPT_STRUCT(optdsl::syntax::Call, callee, args)
BOOST_FUSION_ADAPT_STRUCT(optdsl::syntax::Interval, open, lower, upper, close)
BOOST_FUSION_ADAPT_STRUCT(optdsl::syntax::ValueClause, value, interval)
BOOST_FUSION_ADAPT_STRUCT(optdsl::syntax::Statement, keyword, name, shape, value)
