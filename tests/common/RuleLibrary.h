// Where the rule library (dsl/*.opt) is: $OPTDSL_DSL_DIR when set, else the
// source tree this program was built from. The override lets prebuilt test
// and benchmark programs run from another checkout, e.g. carried to a GPU
// machine that cannot build (benchmarks/gpu/prepare-carry.sh).
#pragma once

#include <cstdlib>
#include <string>

namespace optdsl::test {

inline std::string ruleLibraryDir() {
  const char *overridden = std::getenv("OPTDSL_DSL_DIR");
  return overridden && *overridden ? overridden : OPTDSL_DSL_DIR;
}

} // namespace optdsl::test
