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

} // namespace optrt
