// The work list of one step: every tensor of every group cut into chunks of
// at most chunkElements elements, tensors in order and each tensor's chunks
// in element order. Chunk i writes its reduction partials to slot i, and a
// tensor's chunks are contiguous, so combining a tensor's partials in chunk
// order is a loop over a fixed range of slots: the same sums in the same
// order for any number of threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace optrt {

struct Chunk {
  size_t tensor;
  // Element range relative to the tensor's first element, as kernels take it.
  int64_t begin;
  int64_t end;
};

/// The matrices a chunk [begin, end) of whole rows touches in a tensor of
/// `rows` x `cols` matrices: the first, and the floats of one region of its
/// column partials (those matrices x cols; RuleKernels.h KernelFn).
struct ColumnRegion {
  int64_t firstMatrix;
  size_t floats;
};
inline ColumnRegion columnRegion(int64_t rows, int64_t cols, int64_t begin, int64_t end) {
  int64_t firstMatrix = begin / cols / rows, lastMatrix = (end / cols - 1) / rows;
  return {firstMatrix, static_cast<size_t>((lastMatrix - firstMatrix + 1) * cols)};
}

/// Splits `chunks` (indices into `table`, in order) into `shares` runs of
/// consecutive chunks with about equal elements, one per thread: share s
/// steps chunks[bounds[s] .. bounds[s + 1]) (shares + 1 entries, written
/// into `bounds`). An equal count of chunks per thread is not equal work
/// where chunks are whole rows of different lengths (GPT-2 small: 85 rows
/// of 768 = 65,280 elements, 64 rows of 3072 = 196,608, a bias in one).
/// `shares` must be positive.
void balancedShares(const std::vector<Chunk> &table, const std::vector<size_t> &chunks, size_t shares,
                    std::vector<size_t> &bounds);

class ChunkTable {
public:
  /// `blockElements`: every chunk begins at a multiple of it (a layout with
  /// q8 states: 256, so each chunk's kernel quantises whole q8 blocks).
  /// Chunks of single elements take chunkElements as given (the caller
  /// checks it is a multiple).
  explicit ChunkTable(size_t chunkElements, size_t blockElements = 1)
      : chunkElements_(chunkElements), blockElements_(blockElements) {}

  size_t chunkElements() const { return chunkElements_; }
  /// Elements per chunk of a tensor whose chunks are whole rows of
  /// `rowLength` (1: any element may begin a chunk): as many whole rows as
  /// chunkElements holds, at least kMinRows, rounded up to whole
  /// blockElements.
  static constexpr size_t kMinRows = 64;
  size_t chunkLength(size_t rowLength = 1) const;
  size_t numChunksFor(size_t numElements, size_t rowLength = 1) const {
    size_t length = chunkLength(rowLength);
    return numElements / length + (numElements % length != 0);
  }

  /// Makes room for more tensors and chunks, so that addTensor cannot throw
  /// once the caller has started committing a change.
  void reserve(size_t moreTensors, size_t moreChunks);
  /// Appends the chunks of the next tensor; its index is the number of
  /// tensors added before it. numElements must be positive (and a multiple
  /// of rowLength).
  void addTensor(size_t numElements, size_t rowLength = 1);

  const std::vector<Chunk> &chunks() const { return chunks_; }
  size_t firstChunk(size_t tensor) const { return tensorFirstChunk_[tensor]; }
  size_t endChunk(size_t tensor) const { return tensorFirstChunk_[tensor + 1]; }

private:
  size_t chunkElements_;
  size_t blockElements_;
  std::vector<Chunk> chunks_;
  // One entry per tensor plus the end, so endChunk needs no special case.
  std::vector<size_t> tensorFirstChunk_{0};
};

} // namespace optrt
