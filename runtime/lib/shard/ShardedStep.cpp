// The collectives of a sharded step (ZeRO stage 1, docs/sharding.md): the
// gradients (and the inputs given, the same way) summed and scattered so
// each rank receives its part, the
// reduction partials of every chunk gathered so each rank combines them in
// chunk order exactly as one process would, and the updated params gathered.
//
// Gradients and params are moved group by group, one collective per run of
// tensors that lie back to back in memory on every rank (a trainer with one
// flat buffer per group makes one call per group); which tensors join is
// agreed by all ranks, so every rank makes the same calls.
#include "../OptimizerImpl.h"

#include "CommTimer.h"
#include "JoinedRuns.h"

namespace optrt {

const void *Optimizer::Impl::shardPointer(const std::vector<char> &shard, size_t t) const {
  const Tensor &tensor = tensors[t];
  // The tensor's owned elements sit in the shard where its group's part
  // does, at their distance from the start of this rank's part; the kernels
  // index from the tensor's first element.
  size_t unit = elementBytes(layout.parsedLayout().grad, 1);
  size_t firstOwned = plan.groupOffset(t) + tensor.owned.begin;
  size_t mineBegin = plan.bound(tensor.group, plan.rank());
  auto at = reinterpret_cast<uintptr_t>(shard.data()) +
            (plan.shardOffset(tensor.group) + firstOwned - std::min(firstOwned, mineBegin)) * unit;
  return reinterpret_cast<const void *>(at - tensor.owned.begin * unit);
}

void Optimizer::Impl::reduceScatterGradients(const std::vector<std::vector<const void *>> &gradsPerGroup) {
  reduceScatter(gradsPerGroup, shardGrads, gradJoins);
}

void Optimizer::Impl::reduceScatterInputs() {
  shardInputs.resize(inputValues.size());
  std::vector<uint8_t> joins;
  for (size_t slot = 0; slot < inputValues.size(); ++slot) {
    // Every rank agreed on the groups that have it (describeStep).
    std::vector<std::vector<const void *>> perGroup(groups.size());
    for (size_t g = 0; g < groups.size(); ++g)
      if (inputValues[slot][g])
        perGroup[g] = *inputValues[slot][g];
    reduceScatter(perGroup, shardInputs[slot], joins);
  }
}

void Optimizer::Impl::reduceScatter(const std::vector<std::vector<const void *>> &perGroup, std::vector<char> &shard,
                                    std::vector<uint8_t> &joins) {
  CommTimer timer(commSeconds);
  Dtype dtype = layout.parsedLayout().grad;
  size_t unit = elementBytes(dtype, 1);
  shard.resize(plan.ownedElements() * unit); // the gradients': reserved by addGroup

  // Tensors of a group without values are null here: they join nothing.
  std::vector<const void *> pointers;
  std::vector<size_t> sizes;
  for (size_t g = 0; g < groups.size(); ++g)
    for (size_t i = 0; i < groups[g].numTensors; ++i) {
      pointers.push_back(perGroup[g].empty() ? nullptr : perGroup[g][i]);
      sizes.push_back(tensors[groups[g].firstTensor + i].size);
    }
  joins = joinsOnEveryRank(*comm, pointers, sizes, unit);

  size_t me = plan.rank();
  for (size_t g = 0; g < groups.size(); ++g) {
    const Group &group = groups[g];
    if (perGroup[g].empty())
      continue;
    forEachJoinedRun(group.firstTensor, group.numTensors, joins, [&](size_t first, size_t end) {
      size_t flatBegin = plan.groupOffset(first);
      size_t flatEnd = plan.groupOffset(end - 1) + tensors[end - 1].size;
      size_t mineFrom = std::clamp(plan.bound(g, me), flatBegin, flatEnd);
      char *recv = shard.data() + (plan.shardOffset(g) + mineFrom - plan.bound(g, me)) * unit;
      // Divided, not multiplied by 1/ranks, so that a sum that was exact
      // gives exactly the single-process gradient.
      comm->reduceScatter(pointers[first], recv, plan.partsOf(g, flatBegin, flatEnd), dtype,
                          Communicator::Reduction::Average, nullptr);
    });
  }
}

void Optimizer::Impl::gatherChunkValues(double *values, size_t stride, size_t count) {
  CommTimer timer(commSeconds);
  const std::vector<size_t> &byRank = plan.chunksByRank();
  gathered.resize(byRank.size() * count);
  size_t me = plan.rank();
  for (size_t i = plan.firstOfRank(me); i < plan.firstOfRank(me + 1); ++i)
    std::copy_n(values + byRank[i] * stride, count, gathered.data() + i * count);
  std::vector<size_t> parts(plan.ranks());
  for (size_t r = 0; r < plan.ranks(); ++r)
    parts[r] = (plan.firstOfRank(r + 1) - plan.firstOfRank(r)) * count * sizeof(double);
  comm->allGatherInPlace(gathered.data(), parts, nullptr);
  for (size_t i = 0; i < byRank.size(); ++i)
    std::copy_n(gathered.data() + i * count, count, values + byRank[i] * stride);
}

void Optimizer::Impl::gatherParams() {
  CommTimer timer(commSeconds);
  Dtype dtype = layout.parsedLayout().param;
  for (size_t g = 0; g < groups.size(); ++g) {
    const Group &group = groups[g];
    forEachJoinedRun(group.firstTensor, group.numTensors, paramJoins, [&](size_t first, size_t end) {
      size_t flatBegin = plan.groupOffset(first);
      size_t flatEnd = plan.groupOffset(end - 1) + tensors[end - 1].size;
      std::vector<size_t> parts = plan.partsOf(g, flatBegin, flatEnd);
      for (size_t &part : parts)
        part = elementBytes(dtype, part);
      comm->allGatherInPlace(tensors[first].param, parts, nullptr);
    });
  }
}

} // namespace optrt
