#include "ChunkTable.h"

#include <algorithm>
#include <numeric>

namespace optrt {

void ChunkTable::reserve(size_t moreTensors, size_t moreChunks) {
  tensorFirstChunk_.reserve(tensorFirstChunk_.size() + moreTensors);
  chunks_.reserve(chunks_.size() + moreChunks);
}

size_t ChunkTable::chunkLength(size_t rowLength) const {
  if (rowLength <= 1)
    return chunkElements_;
  // At least kMinRows rows: a chunk computes its columns' values once
  // (RuleKernels::columnSlots), which whole rows then share. Then a whole
  // number of blocks: rows in multiples of blockElements / gcd.
  size_t rows = std::max<size_t>(kMinRows, chunkElements_ / rowLength);
  size_t rowsPerBlock = blockElements_ / std::gcd(rowLength, blockElements_);
  return (rows + rowsPerBlock - 1) / rowsPerBlock * rowsPerBlock * rowLength;
}

void ChunkTable::addTensor(size_t numElements, size_t rowLength) {
  size_t tensor = tensorFirstChunk_.size() - 1;
  size_t length = chunkLength(rowLength);
  // end = begin + min(rest, length) rather than begin + length, so a huge
  // chunkElements cannot overflow.
  for (size_t begin = 0, end = 0; begin < numElements; begin = end) {
    end = begin + std::min(numElements - begin, length);
    chunks_.push_back({tensor, static_cast<int64_t>(begin), static_cast<int64_t>(end)});
  }
  tensorFirstChunk_.push_back(chunks_.size());
}

void balancedShares(const std::vector<Chunk> &table, const std::vector<size_t> &chunks, size_t shares,
                    std::vector<size_t> &bounds) {
  auto length = [&](size_t i) { return static_cast<size_t>(table[chunks[i]].end - table[chunks[i]].begin); };
  size_t total = 0;
  for (size_t i = 0; i < chunks.size(); ++i)
    total += length(i);
  bounds.assign(shares + 1, chunks.size());
  bounds[0] = 0;
  // A chunk goes to the share its middle element falls in (of `shares`
  // equal parts of the elements): each boundary is within half a chunk of
  // its ideal place, so each share within one chunk of 1/shares of the
  // elements. Shares stay in chunk order; one may be empty where a chunk is
  // longer than a share.
  size_t done = 0, share = 0;
  for (size_t i = 0; i < chunks.size(); ++i) {
    size_t twiceMiddle = 2 * done + length(i);
    size_t owner = std::min(shares - 1, twiceMiddle * shares / (2 * total));
    for (; share < owner; ++share)
      bounds[share + 1] = i;
    done += length(i);
  }
}

} // namespace optrt
