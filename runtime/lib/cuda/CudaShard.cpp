#include "CudaShard.h"

#include "../shard/CommTimer.h"
#include "optrt/Storage.h"

#include <numeric>
#include <stdexcept>
#include <string>

namespace optrt::cuda {

std::vector<ChunkSegment> chunkSegments(const detail::ShardPlan &plan, const std::vector<int64_t> &chunks,
                                        const std::vector<std::pair<size_t, size_t>> &runs,
                                        const std::vector<size_t> &tensorGroup,
                                        const std::vector<size_t> &tensorSizes) {
  size_t ranks = plan.ranks();
  std::vector<ChunkSegment> made;
  for (size_t run = 0; run < runs.size(); ++run) {
    auto [first, count] = runs[run];
    for (size_t c = first; c < first + count;) {
      // The run's chunks of one group are contiguous (groups are appended).
      auto groupOf = [&](size_t chunk) { return tensorGroup[static_cast<size_t>(chunks[chunk * 3])]; };
      size_t group = groupOf(c), end = c;
      while (end < first + count && groupOf(end) == group)
        ++end;
      ChunkSegment segment{static_cast<int>(run), std::vector<size_t>(ranks + 1, end)};
      segment.starts[0] = c;
      size_t owner = 0;
      for (size_t k = c; k < end; ++k) {
        auto tensor = static_cast<size_t>(chunks[k * 3]);
        auto begin = static_cast<size_t>(chunks[k * 3 + 1]);
        // Ranks' parts of a tensor follow each other: the owner is the
        // first rank whose part ends after the chunk's start.
        size_t r = 0;
        while (r + 1 < ranks && plan.ownedBy(r, tensor, tensorSizes[tensor]).end <= begin)
          ++r;
        if (r < owner)
          throw std::logic_error("optrt::CudaOptimizer: the shard plan gives rank " + std::to_string(r) +
                                 " a chunk after rank " + std::to_string(owner) + "'s");
        for (; owner < r; ++owner)
          segment.starts[owner + 1] = k;
      }
      made.push_back(std::move(segment));
      c = end;
    }
  }
  return made;
}

void CudaShard::allGatherInPlace(const Driver &d, CUdeviceptr buffer, std::span<const size_t> bytesPerRank,
                                 CUstream stream) {
  detail::CommTimer timer(commSeconds);
  if (comm->memory() == Communicator::Memory::Device) {
    comm->allGatherInPlace(reinterpret_cast<void *>(buffer), bytesPerRank, stream);
    return;
  }
  size_t total = std::accumulate(bytesPerRank.begin(), bytesPerRank.end(), size_t{0});
  if (total == 0)
    return;
  staging_.resize(total);
  d.check(d.cuStreamSynchronize(stream), "cuStreamSynchronize");
  d.check(d.cuMemcpyDtoH_v2(staging_.data(), buffer, total), "cuMemcpyDtoH_v2");
  comm->allGatherInPlace(staging_.data(), bytesPerRank, nullptr);
  d.check(d.cuMemcpyHtoDAsync_v2(buffer, staging_.data(), total, stream), "cuMemcpyHtoDAsync_v2");
  d.check(d.cuStreamSynchronize(stream), "cuStreamSynchronize"); // the host buffer is read until then
}

void CudaShard::reduceScatterMean(const Driver &d, CUdeviceptr send, CUdeviceptr recv,
                                  std::span<const size_t> countsPerRank, Dtype dtype, CUstream stream) {
  detail::CommTimer timer(commSeconds);
  if (comm->memory() == Communicator::Memory::Device) {
    comm->reduceScatter(reinterpret_cast<const void *>(send), reinterpret_cast<void *>(recv), countsPerRank, dtype,
                        Communicator::Reduction::Average, stream);
    return;
  }
  size_t total = elementBytes(dtype, std::accumulate(countsPerRank.begin(), countsPerRank.end(), size_t{0}));
  size_t mine = elementBytes(dtype, countsPerRank[rank()]);
  staging_.resize(total);
  stagingRecv_.resize(mine);
  d.check(d.cuStreamSynchronize(stream), "cuStreamSynchronize");
  if (total > 0)
    d.check(d.cuMemcpyDtoH_v2(staging_.data(), send, total), "cuMemcpyDtoH_v2");
  comm->reduceScatter(staging_.data(), stagingRecv_.data(), countsPerRank, dtype, Communicator::Reduction::Average,
                      nullptr);
  if (mine > 0) {
    d.check(d.cuMemcpyHtoDAsync_v2(recv, stagingRecv_.data(), mine, stream), "cuMemcpyHtoDAsync_v2");
    d.check(d.cuStreamSynchronize(stream), "cuStreamSynchronize");
  }
}

void CudaShard::gatherChunkRows(const Driver &d, CUdeviceptr table, size_t rowBytes, CUstream stream) {
  std::vector<size_t> parts(plan.ranks());
  for (const ChunkSegment &segment : segments) {
    for (size_t r = 0; r < parts.size(); ++r)
      parts[r] = (segment.starts[r + 1] - segment.starts[r]) * rowBytes;
    allGatherInPlace(d, table + segment.starts[0] * rowBytes, parts, stream);
  }
}

} // namespace optrt::cuda
