// The GPU step benchmark's same-traffic reference: one kernel that moves
// exactly the bytes of a layout's streams (LayoutStreams.h) with trivial
// arithmetic, 16 bytes per access, grid-stride, one stream after another:
// read-only streams xor-folded into a value that is stored only if it
// matches a constant (so the loads stay), read-write streams incremented in
// place, write-only streams overwritten. Built like the rule kernels
// (gpu.module → NVVM → PTX through compiler/lib/CUDA), never hand-written.
#pragma once

#include <string>

namespace optdsl::bench {

/// Entry `optdsl_same_traffic(streams, numStreams, sink)`; streams: int64
/// records {address, 16-byte words, read, written}; sink: 16 bytes.
inline constexpr const char *kSameTrafficEntry = "optdsl_same_traffic";

/// Its PTX for `arch` ("sm_80", "sm_90"); throws std::runtime_error.
std::string sameTrafficPtx(const std::string &arch);

} // namespace optdsl::bench
