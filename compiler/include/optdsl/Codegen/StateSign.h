// Which elementwise states of a rule are never negative, so that their 8-bit
// block-wise storage can use the unsigned dynamic map (twice the resolution
// of the signed one on [0, 1]). A small interval analysis over the phases'
// element regions (and the uniform values they read), by induction: if the
// state's init value is >= 0 and every value stored to it is >= 0 assuming
// its own earlier value is, it stays >= 0 forever. NaN counts as "not
// negative": both maps store it as 0.
#pragma once

#include "optdsl/Dialect/OptDialect.h"

#include <vector>

namespace optdsl::codegen {

/// One entry per opt.state of `rule`, in declaration order (false for scalar
/// states). A hyper ranges over the values its declaration allows
/// (`hyper beta2 = 0.999 in [0, 1);` makes `1 - beta2` non-negative; every
/// setter refuses other values); without a range it is any number, and a
/// value that depends on it is proved non-negative only when the hyper was
/// fixed at build time (folded into a constant by opt-specialize-hypers).
std::vector<bool> provedNonNegative(opt::RuleOp rule);

} // namespace optdsl::codegen
