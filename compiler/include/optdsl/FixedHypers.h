// Hypers whose value is fixed when kernels are built (`optc --fix`, the
// JIT's and optdsl_add_rule's FIX): their reads become constants, so
// branches on them fold away (AdamW's amsgrad = 0 drops max_exp_avg_sq
// altogether). A header of its own so that optdsl/JIT.h needs no MLIR.
#pragma once

#include <map>
#include <string>

namespace optdsl {

using FixedHypers = std::map<std::string, double>;

} // namespace optdsl
