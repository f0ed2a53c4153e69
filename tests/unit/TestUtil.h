// Helpers shared by the unit tests.
#pragma once

#include "optdsl/Source.h"

#include <ostream>

namespace optdsl {

/// Lets GoogleTest print a SourceRange as [begin, end) in failure messages.
inline void PrintTo(const SourceRange &range, std::ostream *out) {
  *out << "[" << range.begin << ", " << range.end << ")";
}

} // namespace optdsl
