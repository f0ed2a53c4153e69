#include "ChunkTable.h"

#include <algorithm>

namespace optrt {

void ChunkTable::reserve(size_t moreTensors, size_t moreChunks) {
  tensorFirstChunk_.reserve(tensorFirstChunk_.size() + moreTensors);
  chunks_.reserve(chunks_.size() + moreChunks);
}

void ChunkTable::addTensor(size_t numElements) {
  size_t tensor = tensorFirstChunk_.size() - 1;
  // end = begin + min(rest, chunkElements) rather than begin + chunkElements,
  // so a huge chunkElements cannot overflow.
  for (size_t begin = 0, end = 0; begin < numElements; begin = end) {
    end = begin + std::min(numElements - begin, chunkElements_);
    chunks_.push_back({tensor, static_cast<int64_t>(begin), static_cast<int64_t>(end)});
  }
  tensorFirstChunk_.push_back(chunks_.size());
}

} // namespace optrt
