// Checkpoints of sharded optimizers (docs/checkpoints.md, "Sharded"), for
// both optimizers: a folder with one state stream per rank, holding the
// rank's part of each tensor, and a manifest saying which part each file
// holds. Loading takes, for each part this optimizer owns, the bytes from
// whichever files hold them, so a checkpoint of N ranks loads into M ranks,
// into one process, and one process's file into M ranks; and a CPU
// optimizer's checkpoint into a CUDA optimizer and back, as the state
// stream itself does.
#pragma once

#include "../StateStream.h"
#include "ShardPlan.h"
#include "optrt/Communicator.h"

#include <string>
#include <vector>

namespace optrt::detail {

/// An optimizer as sharded checkpoints see it.
struct ShardedView {
  /// Its state: tensorSize(t) is this rank's part of tensor t (the whole
  /// tensor in one process), withBuffer and writeBuffer that part's bytes.
  StateAccess &access;
  std::vector<size_t> sizes;      ///< every tensor's elements
  std::vector<OwnedRange> owned;  ///< this rank's part of each
  const ShardPlan *plan = nullptr; ///< every rank's parts; null in one process
  Communicator *comm = nullptr;    ///< null in one process
  std::string rule, layout;
  int64_t step = 0;
};

/// True when `path` is a folder (a sharded checkpoint) rather than a file.
bool isShardedCheckpoint(const std::string &path);

/// This rank's parts into folder/rank-R-of-N.state and rank 0's
/// manifest.json, once every rank's file is complete. Sharded only.
void saveShards(const std::string &folder, const ShardedView &view, const char *caller);

/// This optimizer's parts from a sharded checkpoint folder (any number of
/// ranks) or one process's file. Everything is read and checked first;
/// sharded, the ranks agree that each succeeded before any changes anything.
void loadParts(const std::string &path, ShardedView &view, bool convert, const char *caller);

} // namespace optrt::detail
