// A sharded step of a rule that reads tensors as matrices (docs/sharding.md
// "Matrices"): each rank runs the passes over the elements of its chunks
// only, which leave each chunk's row sums in its rows of the tensor's
// states per row and its column sums in its column partials. Gathering both
// from the rank that ran each chunk gives every rank the whole states per
// row and all the partials, which it then combines in chunk order exactly
// as one process does; the passes over rows, columns and matrices (a few
// values per row) then run on every rank alike, so every rank keeps the
// same states per row and column, the ones one process would.
#include "../OptimizerImpl.h"

#include "CommTimer.h"

#include <algorithm>

namespace optrt {

void Optimizer::Impl::gatherAxisSums(int phase) {
  CommTimer timer(commSeconds);
  const RuleKernels &rule = layout.rule();
  const std::vector<size_t> &rowSums = layout.rowSums(phase), &columnSums = layout.columnSums(phase);
  const std::vector<Chunk> &table = chunks.chunks();
  const std::vector<size_t> &byRank = plan.chunksByRank();
  // What chunk c contributes, in floats: its rows of each row sum's state,
  // then its column partials of each column sum.
  auto rowRange = [&](const Chunk &chunk) {
    auto cols = static_cast<size_t>(tensors[chunk.tensor].matrixDims[2]);
    return std::pair{static_cast<size_t>(chunk.begin) / cols, static_cast<size_t>(chunk.end) / cols};
  };
  auto floatsOf = [&](size_t c) {
    const Chunk &chunk = table[c];
    auto [firstRow, endRow] = rowRange(chunk);
    size_t columnFloats = columnSums.empty() ? 0 : columnRegion(tensors[chunk.tensor], chunk.begin, chunk.end).floats;
    return (endRow - firstRow) * rowSums.size() + columnFloats * columnSums.size();
  };
  // Copies chunk c's contribution to (out) or from (in) `at`.
  auto move = [&](size_t c, float *at, bool out) {
    const Chunk &chunk = table[c];
    const Tensor &tensor = tensors[chunk.tensor];
    auto [firstRow, endRow] = rowRange(chunk);
    auto copy = [&](float *place, size_t n) {
      if (out)
        std::copy_n(place, n, at);
      else
        std::copy_n(at, n, place);
      at += n;
    };
    for (size_t k : rowSums) {
      int b = findBuffer(tensor.layout->buffers, BufferRole::AxisState, rule.axisReductions[k].state);
      copy(tensor.axisBuffer(static_cast<size_t>(b)) + firstRow, endRow - firstRow);
    }
    if (!columnSums.empty())
      copy(columnPartials.data() + columnPartialBegin[c],
           columnRegion(tensor, chunk.begin, chunk.end).floats * columnSums.size());
  };
  std::vector<size_t> parts(plan.ranks(), 0), offsets(byRank.size() + 1, 0);
  for (size_t r = 0; r < plan.ranks(); ++r)
    for (size_t i = plan.firstOfRank(r); i < plan.firstOfRank(r + 1); ++i) {
      size_t floats = floatsOf(byRank[i]);
      offsets[i + 1] = offsets[i] + floats;
      parts[r] += floats * sizeof(float);
    }
  axisGathered.resize(offsets.back());
  size_t me = plan.rank();
  for (size_t i = plan.firstOfRank(me); i < plan.firstOfRank(me + 1); ++i)
    move(byRank[i], axisGathered.data() + offsets[i], true);
  comm->allGatherInPlace(axisGathered.data(), parts, nullptr);
  for (size_t r = 0; r < plan.ranks(); ++r)
    if (r != me)
      for (size_t i = plan.firstOfRank(r); i < plan.firstOfRank(r + 1); ++i)
        move(byRank[i], axisGathered.data() + offsets[i], false);
}

} // namespace optrt
