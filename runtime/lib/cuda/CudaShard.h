// A sharded CudaOptimizer's part of the work (ZeRO stage 1,
// docs/sharding.md): the plan of which rank owns which chunks (the CPU
// optimizer's ShardPlan), the gradient shard in device memory, and the
// collectives of a step on device memory: through the engine directly when
// it moves device memory (NCCL, on the step's stream), else staged through
// host buffers (MPI; several ranks can then share one GPU, which is how the
// sharded GPU tests run on a machine with one).
//
// The device chunk table stays one process's (every chunk of every tensor):
// a rank launches its element kernels over its own chunks only, a range of
// each segment (the chunks of one run and one group, where each rank's are
// contiguous and in rank order), and gathers the other ranks' rows of the
// per-chunk tables (reduction partials, gradient statistics) before the
// kernels that combine them in chunk order, which then run on every rank as
// in one process. So every chunk is computed once, as one process computes
// it, and every rank combines the same values in the same order.
#pragma once

#include "../shard/ShardPlan.h"
#include "DeviceMemory.h"
#include "optrt/Communicator.h"
#include "optrt/Layout.h"

#include <memory>
#include <span>
#include <vector>

namespace optrt::cuda {

/// The chunks of one run (the layout's kernels or its small-tensor
/// fallback's) and one group: rank r's are [starts[r], starts[r + 1]), as
/// indices of the whole chunk table.
struct ChunkSegment {
  int run = 0;
  std::vector<size_t> starts;
};

/// The segments of a chunk table: `chunks` {tensor, begin, end} records,
/// runs [first, first + count) of them, tensorGroup[t], tensorSizes[t] and
/// the plan's ranges. Throws std::logic_error if a rank's chunks are not
/// contiguous (the plan would be broken).
std::vector<ChunkSegment> chunkSegments(const detail::ShardPlan &plan, const std::vector<int64_t> &chunks,
                                        const std::vector<std::pair<size_t, size_t>> &runs,
                                        const std::vector<size_t> &tensorGroup,
                                        const std::vector<size_t> &tensorSizes);

class CudaShard {
public:
  CudaShard(std::shared_ptr<Communicator> comm, ShardedGradients gradients)
      : comm(std::move(comm)), gradients(gradients), plan(this->comm->rank(), this->comm->size()) {}

  std::shared_ptr<Communicator> comm;
  ShardedGradients gradients;
  detail::ShardPlan plan;
  std::vector<ChunkSegment> segments;
  std::vector<uint8_t> paramJoins; // joinsOnEveryRank of the params, per tensor
  DeviceMemory gradShard;           // this rank's part of the averaged gradients
  std::vector<DeviceMemory> inputShards; // per input of the rule: its part, as gradShard
  std::vector<CUdeviceptr> checkedGrads; // per tensor: the gradient pointer last checked
  std::vector<std::vector<CUdeviceptr>> checkedInputs; // per input, per tensor: as checkedGrads
  double commSeconds = 0;           // seconds spent in collectives

  size_t rank() const { return plan.rank(); }
  /// Whether a step reduce-scatters the gradients into gradShard.
  bool gradsInShard() const { return gradients == ShardedGradients::Average && plan.ranks() > 1; }

  /// Collectives in device memory, enqueued on `stream` (NCCL) or staged
  /// through the host (an engine of host memory: synchronizes the stream).
  void allGatherInPlace(const Driver &d, CUdeviceptr buffer, std::span<const size_t> bytesPerRank, CUstream stream);
  void reduceScatterMean(const Driver &d, CUdeviceptr send, CUdeviceptr recv, std::span<const size_t> countsPerRank,
                         Dtype dtype, CUstream stream);
  /// Rows of rowBytes bytes per chunk of the table at `table` (partials,
  /// statistics): every segment's rows from the ranks that computed them.
  void gatherChunkRows(const Driver &d, CUdeviceptr table, size_t rowBytes, CUstream stream);

private:
  std::vector<char> staging_, stagingRecv_;
};

} // namespace optrt::cuda
