// How a step's chunks are split among threads (ChunkTable.h balancedShares):
// consecutive runs, each owned chunk exactly once, and about equal elements
// per thread where chunks differ in length (whole rows of different widths).
#include "ChunkTable.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>

namespace optrt {
namespace {

/// A table of chunks of the given lengths, one tensor each (the split only
/// reads their lengths).
std::vector<Chunk> tableOf(const std::vector<int64_t> &lengths) {
  std::vector<Chunk> table;
  for (size_t i = 0; i < lengths.size(); ++i)
    table.push_back({i, 0, lengths[i]});
  return table;
}

std::vector<size_t> allOf(const std::vector<Chunk> &table) {
  std::vector<size_t> chunks(table.size());
  std::iota(chunks.begin(), chunks.end(), size_t{0});
  return chunks;
}

/// Checks that bounds split `chunks` into `shares` consecutive runs covering
/// them once, each within one chunk of an equal part (its two ends each
/// within half a chunk of their ideal places).
void expectBalanced(const std::vector<Chunk> &table, const std::vector<size_t> &chunks, size_t shares) {
  std::vector<size_t> bounds;
  balancedShares(table, chunks, shares, bounds);
  ASSERT_EQ(bounds.size(), shares + 1);
  EXPECT_EQ(bounds.front(), 0u);
  EXPECT_EQ(bounds.back(), chunks.size());
  int64_t total = 0, longest = 0;
  for (size_t c : chunks) {
    total += table[c].end - table[c].begin;
    longest = std::max(longest, table[c].end - table[c].begin);
  }
  for (size_t s = 0; s < shares; ++s) {
    ASSERT_LE(bounds[s], bounds[s + 1]) << "share " << s;
    int64_t elements = 0;
    for (size_t i = bounds[s]; i < bounds[s + 1]; ++i)
      elements += table[chunks[i]].end - table[chunks[i]].begin;
    double fair = static_cast<double>(total) / static_cast<double>(shares);
    EXPECT_LE(std::abs(static_cast<double>(elements) - fair), static_cast<double>(longest))
        << "share " << s << " of " << shares << ": " << elements << " elements, a fair part is " << fair;
  }
}

TEST(BalancedShares, ChunksOfDifferentLengthsGiveEachThreadAboutEqualElements) {
  // GPT-2 small's chunks as a rule that reads matrices cuts them (85 rows of
  // 768, 64 rows of 2304 or 3072, each vector one chunk): the first half of
  // the chunks by count holds 11% fewer elements than the second.
  std::vector<int64_t> lengths;
  auto matrix = [&](int64_t rows, int64_t cols) {
    int64_t length = std::max<int64_t>(64, 65536 / cols) * cols;
    for (int64_t begin = 0; begin < rows * cols; begin += length)
      lengths.push_back(std::min(length, rows * cols - begin));
  };
  matrix(50257, 768);
  matrix(1024, 768);
  for (int layer = 0; layer < 12; ++layer) {
    for (int64_t vector : {768, 768})
      lengths.push_back(vector);
    matrix(768, 2304);
    lengths.push_back(2304);
    matrix(768, 768);
    for (int64_t vector : {768, 768, 768})
      lengths.push_back(vector);
    matrix(768, 3072);
    lengths.push_back(3072);
    matrix(3072, 768);
    lengths.push_back(768);
  }
  std::vector<Chunk> table = tableOf(lengths);
  for (size_t shares : {1, 2, 3, 8})
    expectBalanced(table, allOf(table), shares);
}

TEST(BalancedShares, RandomLengthsAndARanksSubsetOfTheChunks) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int64_t> length(1, 200000);
  std::vector<int64_t> lengths(500);
  for (int64_t &l : lengths)
    l = length(rng);
  std::vector<Chunk> table = tableOf(lengths);
  // A sharded optimizer steps the chunks its rank owns: a run in the middle.
  std::vector<size_t> owned;
  for (size_t c = 120; c < 377; ++c)
    owned.push_back(c);
  for (size_t shares : {2, 5, 16}) {
    expectBalanced(table, allOf(table), shares);
    expectBalanced(table, owned, shares);
  }
}

TEST(BalancedShares, FewerChunksThanThreadsLeaveSomeThreadsNothing) {
  std::vector<Chunk> table = tableOf({1000, 10});
  std::vector<size_t> bounds;
  balancedShares(table, allOf(table), 4, bounds);
  EXPECT_EQ(bounds, (std::vector<size_t>{0, 0, 1, 1, 2}));
  balancedShares(table, {}, 3, bounds);
  EXPECT_EQ(bounds, (std::vector<size_t>{0, 0, 0, 0}));
  balancedShares(table, allOf(table), 1, bounds);
  EXPECT_EQ(bounds, (std::vector<size_t>{0, 2}));
}

} // namespace
} // namespace optrt
