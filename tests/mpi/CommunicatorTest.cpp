// The engines' collectives on every rank, with parts of uneven, equal and
// zero length: MPI (optrt/MpiCommunicator.h) in whole calls and split into
// pieces (a small maxCountPerCall stands in for counts above INT_MAX), and
// NCCL (optrt/NcclCommunicator.h) over the fake libnccl and fake driver.
#include "EngineMemory.h"
#include "MpiWorld.h"

#include "optrt/NcclCommunicator.h"

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

// Equal parts (one NCCL collective), when there is more than one rank.
std::vector<size_t> equalParts(int ranks) { return std::vector<size_t>(static_cast<size_t>(ranks), 6); }

struct Engine {
  const char *name;
  size_t maxCountPerCall; // MPI's
};
void PrintTo(const Engine &engine, std::ostream *out) { *out << engine.name << " " << engine.maxCountPerCall; }

class CommunicatorTest : public testing::TestWithParam<Engine> {
protected:
  std::shared_ptr<optrt::Communicator> comm =
      std::string(GetParam().name) == "NCCL" ? optrt::ncclCommunicator(MPI_COMM_WORLD, 0)
                                             : worldCommunicator({GetParam().maxCountPerCall});
};

TEST_P(CommunicatorTest, KnowsItsRankAndSize) {
  EXPECT_EQ(comm->rank(), worldRank());
  EXPECT_EQ(comm->size(), worldSize());
  EXPECT_EQ(comm->engine(), GetParam().name);
  EXPECT_EQ(comm->memory(), comm->engine() == "NCCL" ? optrt::Communicator::Memory::Device
                                                      : optrt::Communicator::Memory::Host);
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
  for (const std::vector<size_t> &parts : {unevenParts(worldSize()), equalParts(worldSize())}) {
    size_t total = std::accumulate(parts.begin(), parts.end(), size_t{0});
    std::vector<uint8_t> buffer(total, 0xFF);
    size_t start = std::accumulate(parts.begin(), parts.begin() + worldRank(), size_t{0});
    for (size_t i = 0; i < parts[worldRank()]; ++i)
      buffer[start + i] = static_cast<uint8_t>(worldRank() * 40 + i);
    EngineMemory memory(*comm, total);
    memory.upload(buffer.data(), total);
    comm->allGatherInPlace(memory.data(), parts, memory.stream());
    memory.download(buffer.data(), total);
    size_t at = 0;
    for (int r = 0; r < worldSize(); ++r)
      for (size_t i = 0; i < parts[r]; ++i)
        EXPECT_EQ(buffer[at++], static_cast<uint8_t>(r * 40 + i)) << "rank " << r << " element " << i;
  }
}

// Rank r contributes (r^2 + 1) * ((i mod 8) + 1) / 8 to element i: small
// multiples of 1/8, exact in f32, bf16 and f16 and in their sums, so the
// expected sum does not depend on the engine's order of addition. With 3
// ranks, multiplying each by 1/3 before adding (NCCL's own average) gives
// other bits than the mean of the sum for a quarter of the f32 elements.
float contribution(int rank, size_t i) {
  return static_cast<float>(rank * rank + 1) * (static_cast<float>(i % 8) + 1) / 8;
}

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
  for (const std::vector<size_t> &counts : {unevenParts(worldSize()), equalParts(worldSize())}) {
    size_t total = std::accumulate(counts.begin(), counts.end(), size_t{0});
    size_t start = std::accumulate(counts.begin(), counts.begin() + worldRank(), size_t{0});
    size_t mine = counts[worldRank()];
    for (Reduction reduction : {Reduction::Sum, Reduction::Average})
      for (Dtype dtype : {Dtype::F32, Dtype::BF16, Dtype::F16}) {
        SCOPED_TRACE(optrt::dtypeName(dtype) + (reduction == Reduction::Sum ? " sum" : " mean") + " of " +
                     std::to_string(total));
        std::vector<float> values(total);
        for (size_t i = 0; i < total; ++i)
          values[i] = contribution(worldRank(), i);
        std::vector<char> send(optrt::elementBytes(dtype, total)), recv(optrt::elementBytes(dtype, mine) + 1);
        optrt::encodeF32(dtype, values, send.data(), nullptr);
        EngineMemory sendMemory(*comm, send.size()), recvMemory(*comm, recv.size());
        sendMemory.upload(send.data(), send.size());
        comm->reduceScatter(sendMemory.data(), recvMemory.data(), counts, dtype, reduction, recvMemory.stream());
        recvMemory.download(recv.data(), recv.size());
        std::vector<float> got(mine);
        optrt::decodeToF32(dtype, recv.data(), nullptr, got);
        for (size_t i = 0; i < mine; ++i)
          EXPECT_EQ(got[i], reduction == Reduction::Sum ? expectedSum(start + i) : expectedMean(start + i, dtype))
              << "element " << start + i;
      }
  }
}

TEST_P(CommunicatorTest, RefusesPartsThatDoNotMatchTheRanks) {
  std::vector<size_t> parts(static_cast<size_t>(worldSize()) + 1, 0);
  EngineMemory memory(*comm, 1);
  EXPECT_THROW(comm->allGatherInPlace(memory.data(), parts, memory.stream()), std::invalid_argument);
  using Reduction = optrt::Communicator::Reduction;
  EXPECT_THROW(comm->reduceScatter(memory.data(), memory.data(), parts, Dtype::F32, Reduction::Sum, memory.stream()),
               std::invalid_argument);
  std::vector<size_t> right(static_cast<size_t>(worldSize()), 0);
  EXPECT_THROW(
      comm->reduceScatter(memory.data(), memory.data(), right, Dtype::Q8Signed, Reduction::Sum, memory.stream()),
      std::invalid_argument);
}

// MPI in whole calls and in pieces of at most 3 bytes or elements; NCCL.
INSTANTIATE_TEST_SUITE_P(Engines, CommunicatorTest,
                         testing::Values(Engine{"MPI", size_t{INT_MAX}}, Engine{"MPI", size_t{3}},
                                         Engine{"NCCL", 0}),
                         [](const testing::TestParamInfo<Engine> &info) {
                           return std::string(info.param.name) +
                                  (info.param.maxCountPerCall == 3 ? "_in_pieces" : "");
                         });

TEST(MpiCommunicator, RefusesANullCommunicatorAndABadMaxCount) {
  EXPECT_THROW(optrt::mpiCommunicator(MPI_COMM_NULL), std::invalid_argument);
  EXPECT_THROW(optrt::mpiCommunicator(MPI_COMM_WORLD, {0}), std::invalid_argument);
  EXPECT_THROW(optrt::mpiCommunicator(MPI_COMM_WORLD, {size_t{INT_MAX} + 1}), std::invalid_argument);
}

} // namespace
} // namespace optdsl::test
