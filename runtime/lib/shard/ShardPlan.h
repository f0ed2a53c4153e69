// Which rank owns which part of each parameter group (ZeRO stage 1,
// docs/sharding.md). A group's tensors, flattened in order, are cut at chunk
// boundaries (ChunkTable.h) into one contiguous part per rank, in rank
// order, balanced by state bytes: each element weighs the bytes of master
// and state its tensor's layout keeps for it (a small tensor's f32 fallback
// weighs more than q8), and chunk c, starting at weight s of a group that
// weighs W in all, belongs to rank floor(s * ranks / W); so each rank keeps
// 1/ranks of the group's state bytes within one chunk's. Cutting only between chunks is what
// makes a sharded step bitwise the single-process step: every chunk is
// stepped by one rank exactly as one process would step it (same element
// range, same reduction partial, same stochastic-rounding bits), and q8
// blocks never straddle ranks (chunks are whole blocks). A group is
// partitioned when added, so later groups never move earlier state.
//
// Without a communicator the plan is that of one rank: it owns everything.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace optrt::detail {

/// A tensor's elements [begin, end) (relative to its first) that this rank owns.
struct OwnedRange {
  size_t begin = 0, end = 0;
  size_t size() const { return end - begin; }
};

class ShardPlan {
public:
  ShardPlan(int rank, int ranks) : rank_(static_cast<size_t>(rank)), ranks_(static_cast<size_t>(ranks)) {}

  size_t rank() const { return rank_; }
  size_t ranks() const { return ranks_; }

  /// Partitions the next group: tensors of `sizes` elements, cut into chunks
  /// of chunkLengths[t] elements as ChunkTable::addTensor cuts them, whose
  /// elements weigh `weights` each (any unit; all 0: by elements).
  void addGroup(const std::vector<size_t> &sizes, const std::vector<uint64_t> &weights,
                const std::vector<size_t> &chunkLengths);

  const OwnedRange &owned(size_t tensor) const { return tensors_[tensor].owned; }
  /// The elements of `tensor` that rank r owns (owned(tensor) for this rank).
  OwnedRange ownedBy(size_t r, size_t tensor, size_t tensorSize) const;
  /// Where tensor starts in its group's flattened elements.
  size_t groupOffset(size_t tensor) const { return tensors_[tensor].groupOffset; }
  /// Where this rank's part of `group` starts in its gradient shard (the
  /// rank's parts of every group, one after another).
  size_t shardOffset(size_t group) const { return groups_[group].shardOffset; }
  /// Flattened element where rank r's part of `group` starts; r = ranks() gives the group's end.
  size_t bound(size_t group, size_t r) const { return groups_[group].bounds[r]; }
  /// Elements this rank owns over every group.
  size_t ownedElements() const { return ownedElements_; }

  /// The chunks (ChunkTable indices) this rank steps, in table order.
  const std::vector<size_t> &ownedChunks() const { return ownedChunks_; }
  /// Every chunk sorted by owner then index: rank r's are
  /// chunksByRank()[firstOfRank(r) .. firstOfRank(r + 1)).
  const std::vector<size_t> &chunksByRank() const { return chunksByRank_; }
  size_t firstOfRank(size_t r) const { return rankStarts_[r]; }

  /// The elements of flattened range [begin, end) of `group` that each rank
  /// owns, in rank order (they add up to end - begin).
  std::vector<size_t> partsOf(size_t group, size_t begin, size_t end) const;

private:
  struct TensorEntry {
    OwnedRange owned;
    size_t group;
    size_t groupOffset;
  };
  struct GroupEntry {
    std::vector<size_t> bounds; // ranks + 1 entries
    size_t shardOffset;
  };
  size_t rank_, ranks_;
  std::vector<TensorEntry> tensors_;
  std::vector<GroupEntry> groups_;
  std::vector<int> chunkOwner_;
  std::vector<size_t> ownedChunks_;
  std::vector<size_t> chunksByRank_;
  std::vector<size_t> rankStarts_;
  size_t ownedElements_ = 0;
};

} // namespace optrt::detail
