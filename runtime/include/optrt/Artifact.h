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

/// Which of the artifact ABI's feature names (artifact_abi.h) this CPU lacks,
/// comma-separated; "" when it has them all. Unknown names count as missing.
std::string missingCpuFeatures(const std::string &features);

} // namespace optrt
