// Checks a parsed Layout (Layout.h) against the states of one rule, before
// any buffer is allocated, so a layout the rule cannot take is refused by
// name instead of being half applied.
#pragma once

#include "optrt/Layout.h"
#include "optrt/RuleKernels.h"

#include <string>
#include <vector>

namespace optrt {

/// Throws std::invalid_argument naming the problem:
///  - a state name the rule does not have (the message lists its states);
///  - a per-tensor scalar state given bf16, f16 or q8 (it is one f64 per
///    tensor; nothing to narrow, and q8 has no block to scale);
///  - master=f32 with f32 params: an error, not ignored, because the copy
///    would cost 4 bytes per parameter and change nothing, which is almost
///    always a layout that forgot param=bf16 or param=f16.
/// `state=DTYPE` covers the elementwise states only, so it is fine for rules
/// that also have scalar states.
void validateLayout(const Layout &layout, const std::vector<StateInfo> &states,
                    const std::string &ruleName = "the rule");

} // namespace optrt
