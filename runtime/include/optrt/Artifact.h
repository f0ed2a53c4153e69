// Loading a kernel artifact: the shared library `optc RULE.opt --emit=so`
// writes (C ABI in artifact_abi.h). The runtime needs no compiler for this.
#pragma once

#include "optrt/RuleKernels.h"

#include <memory>
#include <string>

namespace optrt {

/// dlopen()s the artifact at `path` and returns its table; the library stays
/// loaded while the table (or an Optimizer using it) lives. Throws
/// std::runtime_error whose message names the file and the problem: it cannot
/// be opened (missing, not a shared library: dlerror's words), it is not an
/// OptDSL artifact (no optdsl_abi_version), it was built for another ABI
/// version, its descriptor is malformed, or this CPU lacks an instruction-set
/// feature its kernels were compiled for.
std::shared_ptr<const RuleKernels> loadArtifact(const std::string &path);

/// Where the artifact file `name` (e.g. "libopt_adamw.so", as
/// optdsl_link_rule defines OPTDSL_RULE_<NAME>) is, found without any path
/// compiled in, so a program and its rules can be installed anywhere and
/// moved: each folder of $OPTDSL_RULE_PATH (':'-separated), then the running
/// executable's folder (the build tree: optdsl_link_rule copies the artifact
/// there), then <executable's folder>/../lib/optdsl (the install tree:
/// optdsl_install_rule). A `name` with a '/' is returned as it is. Throws
/// std::runtime_error listing every folder looked in.
std::string findArtifact(const std::string &name);

/// Which of the artifact ABI's feature names (artifact_abi.h) this CPU lacks,
/// comma-separated; "" when it has them all. Unknown names count as missing.
std::string missingCpuFeatures(const std::string &features);

} // namespace optrt
