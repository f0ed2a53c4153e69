// Version of OptDSL and of the MLIR/LLVM it was built with.
#pragma once

#include <string>

namespace optdsl {

/// e.g. "OptDSL 0.1.0 (MLIR/LLVM 19.1.7; host CPU znver3)".
std::string versionString();

} // namespace optdsl
