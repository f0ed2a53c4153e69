// A sharded CudaOptimizer's collectives around its kernels (docs/sharding.md
// "On the GPU"): the averaged gradients and inputs into their shards, the
// rows of the per-chunk tables and the states per row and column from the
// ranks that computed them, and the updated params to every rank.
#include "CudaOptimizerImpl.h"

#include "../shard/JoinedRuns.h"
#include "optrt/Storage.h"

#include <algorithm>

namespace optrt {

using namespace cuda;
using namespace detail;

CUdeviceptr CudaOptimizer::Impl::shardSlot(CUdeviceptr shardBase, size_t t) const {
  const detail::ShardPlan &plan = shard->plan;
  const Tensor &tensor = tensors[t];
  size_t g = tensor.group;
  // The shard holds this rank's part of each group, one after another;
  // element e of the tensor is at (its group offset + e - the part's start).
  // Unsigned arithmetic wraps, as the kernels' address arithmetic does, for a
  // tensor whose first elements are another rank's.
  return shardBase +
         (plan.shardOffset(g) + plan.groupOffset(t) - plan.bound(g, plan.rank())) * elementBytes(gradDtype(), 1);
}

void CudaOptimizer::Impl::reduceScatterInto(const std::vector<std::vector<DevicePtr>> &perGroup,
                                            CUdeviceptr shardBase, CUstream stream) {
  CudaShard &sh = *shard;
  const detail::ShardPlan &plan = sh.plan;
  Dtype dtype = gradDtype();
  size_t unit = elementBytes(dtype, 1);
  std::vector<const void *> pointers;
  std::vector<size_t> sizes;
  for (size_t g = 0; g < groups.size(); ++g)
    for (size_t i = 0; i < groups[g].numTensors; ++i) {
      pointers.push_back(perGroup[g].empty() ? nullptr : reinterpret_cast<const void *>(perGroup[g][i]));
      sizes.push_back(tensors[groups[g].firstTensor + i].size);
    }
  // Gradients back to back on every rank move in one collective.
  std::vector<uint8_t> joins = joinsOnEveryRank(*sh.comm, pointers, sizes, unit);
  size_t me = plan.rank();
  for (size_t g = 0; g < groups.size(); ++g) {
    if (perGroup[g].empty()) // the ranks agreed on it
      continue;
    forEachJoinedRun(groups[g].firstTensor, groups[g].numTensors, joins, [&](size_t first, size_t end) {
      size_t flatBegin = plan.groupOffset(first);
      size_t flatEnd = plan.groupOffset(end - 1) + tensors[end - 1].size;
      size_t mineFrom = std::clamp(plan.bound(g, me), flatBegin, flatEnd);
      CUdeviceptr recv = shardBase + (plan.shardOffset(g) + mineFrom - plan.bound(g, me)) * unit;
      sh.reduceScatterMean(*d, perGroup[g][first - groups[g].firstTensor], recv, plan.partsOf(g, flatBegin, flatEnd),
                           dtype, stream);
    });
  }
}

void CudaOptimizer::Impl::gatherAxisSums(int phase, CUstream stream) {
  CudaShard &sh = *shard;
  const detail::ShardPlan &plan = sh.plan;
  const RuleKernels &rule = layout.rule();
  CUdeviceptr base = tables.get();
  std::vector<size_t> parts(plan.ranks());
  for (size_t k : layout.rowSums(phase))
    for (size_t t = 0; t < tensors.size(); ++t) {
      const Tensor &tensor = tensors[t];
      int b = findBuffer(hostLayout(tensor).buffers, BufferRole::AxisState, rule.axisReductions[k].state);
      // Rank r's chunks are its rows (chunks are whole rows), in order.
      auto cols = static_cast<size_t>(tensor.matrixDims[2]);
      for (size_t r = 0; r < parts.size(); ++r)
        parts[r] = plan.ownedBy(r, t, tensor.size).size() / cols * sizeof(float);
      // The parts cover every row of the tensor's matrices, from the first.
      sh.allGatherInPlace(*d, arena.get() + tensor.offsets[static_cast<size_t>(b)], parts, stream);
    }
  if (layout.columnSums(phase).empty())
    return;
  // Each chunk's column partials, one region after another in chunk order.
  for (const ChunkSegment &segment : sh.segments) {
    for (size_t r = 0; r < parts.size(); ++r)
      parts[r] = (columnBegins[segment.starts[r + 1]] - columnBegins[segment.starts[r]]) * sizeof(float);
    sh.allGatherInPlace(*d, base + tableLayout.columns + columnBegins[segment.starts[0]] * sizeof(float), parts,
                        stream);
  }
}

void CudaOptimizer::Impl::gatherPartials(CUstream stream) {
  size_t stride = kernels().partialStride * sizeof(double);
  CUdeviceptr partials = tables.get() + tableLayout.partials;
  shard->gatherChunkRows(*d, partials, stride, stream);
  if (columnPointers.empty())
    return;
  // The rows came with the other ranks' pointers to their own column
  // partials in their last slots: this rank's go back.
  CUDA_MEMCPY2D copy{};
  copy.srcMemoryType = CU_MEMORYTYPE_HOST;
  copy.srcHost = columnPointers.data();
  copy.srcPitch = sizeof(CUdeviceptr);
  copy.dstMemoryType = CU_MEMORYTYPE_DEVICE;
  copy.dstDevice = partials + stride - sizeof(CUdeviceptr);
  copy.dstPitch = stride;
  copy.WidthInBytes = sizeof(CUdeviceptr);
  copy.Height = columnPointers.size();
  d->check(d->cuMemcpy2DAsync_v2(&copy, stream), "cuMemcpy2DAsync_v2");
}

void CudaOptimizer::Impl::gatherParams(CUstream stream) {
  CudaShard &sh = *shard;
  const detail::ShardPlan &plan = sh.plan;
  Dtype dtype = paramDtype();
  for (size_t g = 0; g < groups.size(); ++g)
    forEachJoinedRun(groups[g].firstTensor, groups[g].numTensors, sh.paramJoins, [&](size_t first, size_t end) {
      size_t flatBegin = plan.groupOffset(first);
      size_t flatEnd = plan.groupOffset(end - 1) + tensors[end - 1].size;
      std::vector<size_t> parts = plan.partsOf(g, flatBegin, flatEnd);
      for (size_t &part : parts)
        part = elementBytes(dtype, part); // in the params' storage dtype: bf16 moves 2 bytes
      sh.allGatherInPlace(*d, tensors[first].param, parts, stream);
    });
}

} // namespace optrt
