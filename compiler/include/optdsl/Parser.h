// Parses a .opt file (Boost.Spirit X3) into an ast::Rule. Errors go to the
// DiagnosticEngine; the parser recovers at the next statement so that every
// syntax error in a file is reported, and it never throws on bad input.
#pragma once

#include "optdsl/AST.h"
#include "optdsl/Diagnostics.h"

#include <optional>

namespace optdsl {

/// Limits that keep hostile input from exhausting the stack.
inline constexpr unsigned kMaxParenDepth = 64;
inline constexpr unsigned kMaxConditionalsPerStatement = 64;
inline constexpr unsigned kMaxExprDepth = 256;

/// Returns the rule when the header parsed, even if some statements had
/// errors: a broken assignment is dropped, a broken declaration stays with the
/// value 0 so that later uses of its name raise no follow-on errors. nullopt
/// when nothing usable parsed.
std::optional<ast::Rule> parseRule(const SourceFile &file, DiagnosticEngine &diags);

} // namespace optdsl
