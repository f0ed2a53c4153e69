// The MPI engine's collectives (optrt/MpiCommunicator.h), on every rank,
// with parts of uneven and zero length, in whole calls and split into
// pieces (a small maxCountPerCall stands in for counts above INT_MAX).
#include "MpiWorld.h"

#include "optrt/Storage.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <numeric>
#include <stdexcept>
#include <vector>

namespace optdsl::test {
namespace {

using optrt::Dtype;

// Uneven parts, rank 1 (when there is one) empty.
std::vector<size_t> unevenParts(int ranks) {
  std::vector<size_t> parts;
  for (int r = 0; r < ranks; ++r)
    parts.push_back(r == 1 ? 0 : static_cast<size_t>(5 + 3 * r));
  return parts;
}

class CommunicatorTest : public testing::TestWithParam<size_t> {
protected:
  std::shared_ptr<optrt::Communicator> comm = worldCommunicator({GetParam()});
};

TEST_P(CommunicatorTest, KnowsItsRankAndSize) {
  EXPECT_EQ(comm->rank(), worldRank());
  EXPECT_EQ(comm->size(), worldSize());
  EXPECT_EQ(comm->engine(), "MPI");
}

TEST_P(CommunicatorTest, AllGatherPutsEveryRanksBytesInRankOrder) {
  uint64_t mine[2] = {static_cast<uint64_t>(worldRank()) * 1000 + 7, 0xABCDEF0123456789ull ^ worldRank()};
  std::vector<uint64_t> all(2 * static_cast<size_t>(worldSize()));
  comm->allGather(mine, all.data(), sizeof mine);
  for (int r = 0; r < worldSize(); ++r) {
    EXPECT_EQ(all[2 * r], static_cast<uint64_t>(r) * 1000 + 7);
    EXPECT_EQ(all[2 * r + 1], 0xABCDEF0123456789ull ^ r);
  }
}

TEST_P(CommunicatorTest, AllGatherInPlaceFillsEveryRanksPart) {
  std::vector<size_t> parts = unevenParts(worldSize());
  size_t total = std::accumulate(parts.begin(), parts.end(), size_t{0});
  std::vector<uint8_t> buffer(total, 0xFF);
  size_t start = std::accumulate(parts.begin(), parts.begin() + worldRank(), size_t{0});
  for (size_t i = 0; i < parts[worldRank()]; ++i)
    buffer[start + i] = static_cast<uint8_t>(worldRank() * 40 + i);
  comm->allGatherInPlace(buffer.data(), parts);
  size_t at = 0;
  for (int r = 0; r < worldSize(); ++r)
    for (size_t i = 0; i < parts[r]; ++i)
      EXPECT_EQ(buffer[at++], static_cast<uint8_t>(r * 40 + i)) << "rank " << r << " element " << i;
}

// Rank r contributes (r + 1) * (i - 7) / 4 to element i: small multiples of
// 1/4, exact in f32, bf16 and f16 and in their sums, so the expected sum
// does not depend on the engine's order of addition.
float contribution(int rank, size_t i) { return static_cast<float>(rank + 1) * (static_cast<float>(i) - 7) / 4; }

float expectedSum(size_t i) {
  float sum = 0;
  for (int r = 0; r < worldSize(); ++r)
    sum += contribution(r, i);
  return sum;
}

// The mean of the exact sum, rounded once in dtype as a division would.
float expectedMean(size_t i, Dtype dtype) {
  float mean = expectedSum(i) / static_cast<float>(worldSize());
  std::vector<char> stored(optrt::elementBytes(dtype, 1));
  optrt::encodeF32(dtype, {&mean, 1}, stored.data(), nullptr);
  float back = 0;
  optrt::decodeToF32(dtype, stored.data(), nullptr, {&back, 1});
  return back;
}

TEST_P(CommunicatorTest, ReduceScatterSumsAndAveragesEveryDtypeIntoRankParts) {
  using Reduction = optrt::Communicator::Reduction;
  std::vector<size_t> counts = unevenParts(worldSize());
  size_t total = std::accumulate(counts.begin(), counts.end(), size_t{0});
  size_t start = std::accumulate(counts.begin(), counts.begin() + worldRank(), size_t{0});
  size_t mine = counts[worldRank()];
  for (Reduction reduction : {Reduction::Sum, Reduction::Average})
    for (Dtype dtype : {Dtype::F32, Dtype::BF16, Dtype::F16}) {
      SCOPED_TRACE(optrt::dtypeName(dtype) + (reduction == Reduction::Sum ? " sum" : " mean"));
      std::vector<float> values(total);
      for (size_t i = 0; i < total; ++i)
        values[i] = contribution(worldRank(), i);
      std::vector<char> send(optrt::elementBytes(dtype, total)), recv(optrt::elementBytes(dtype, mine) + 1);
      optrt::encodeF32(dtype, values, send.data(), nullptr);
      comm->reduceScatter(send.data(), recv.data(), counts, dtype, reduction);
      std::vector<float> got(mine);
      optrt::decodeToF32(dtype, recv.data(), nullptr, got);
      for (size_t i = 0; i < mine; ++i)
        EXPECT_EQ(got[i], reduction == Reduction::Sum ? expectedSum(start + i) : expectedMean(start + i, dtype))
            << "element " << start + i;
    }
}

TEST_P(CommunicatorTest, RefusesPartsThatDoNotMatchTheRanks) {
  std::vector<size_t> parts(static_cast<size_t>(worldSize()) + 1, 0);
  uint8_t byte = 0;
  EXPECT_THROW(comm->allGatherInPlace(&byte, parts), std::invalid_argument);
  using Reduction = optrt::Communicator::Reduction;
  EXPECT_THROW(comm->reduceScatter(&byte, &byte, parts, Dtype::F32, Reduction::Sum), std::invalid_argument);
  std::vector<size_t> right(static_cast<size_t>(worldSize()), 0);
  EXPECT_THROW(comm->reduceScatter(&byte, &byte, right, Dtype::Q8Signed, Reduction::Sum), std::invalid_argument);
}

// Whole calls, and pieces of at most 3 bytes or elements.
INSTANTIATE_TEST_SUITE_P(MaxCount, CommunicatorTest, testing::Values(size_t{INT_MAX}, size_t{3}));

TEST(MpiCommunicator, RefusesANullCommunicatorAndABadMaxCount) {
  EXPECT_THROW(optrt::mpiCommunicator(MPI_COMM_NULL), std::invalid_argument);
  EXPECT_THROW(optrt::mpiCommunicator(MPI_COMM_WORLD, {0}), std::invalid_argument);
  EXPECT_THROW(optrt::mpiCommunicator(MPI_COMM_WORLD, {size_t{INT_MAX} + 1}), std::invalid_argument);
}

} // namespace
} // namespace optdsl::test
