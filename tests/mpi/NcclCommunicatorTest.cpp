// What the NCCL engine asks of NCCL (the collectives themselves are checked
// for both engines in CommunicatorTest.cpp): the stream it is given, one
// collective for equal parts and a group for uneven ones, its own division
// (never ncclAvg), a failing call named, the caller's communicator left
// alone, set-up errors on every rank, and the CPU optimizer refusing it.
// Over the fake libnccl (FakeNccl.cpp) and fake driver.
#include "EngineMemory.h"
#include "MpiWorld.h"

#include "common/JitKernels.h"

#include "optrt/NcclCommunicator.h"
#include "optrt/Optimizer.h"
#include "optrt/Storage.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <dlfcn.h>
#include <numeric>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace optdsl::test {
namespace {

using Reduction = optrt::Communicator::Reduction;

void *loaded(const char *variable) {
  const char *path = std::getenv(variable);
  void *handle = path ? dlopen(path, RTLD_NOW | RTLD_LOCAL) : nullptr;
  if (!handle)
    throw std::runtime_error(std::string("set ") + variable + " to the fake library");
  return handle;
}

template <typename F> F symbol(void *library, const char *name) {
  auto f = reinterpret_cast<F>(dlsym(library, name));
  if (!f)
    throw std::runtime_error(std::string("the fake library lacks ") + name);
  return f;
}

/// The fake NCCL's control functions and the NCCL calls a trainer makes.
struct FakeNccl {
  void *library = loaded("OPTDSL_LIBNCCL");
  void (*reset)() = symbol<void (*)()>(library, "fake_nccl_reset");
  void (*fail)(const char *, int) = symbol<void (*)(const char *, int)>(library, "fake_nccl_fail");
  size_t (*numCalls)() = symbol<size_t (*)()>(library, "fake_nccl_num_calls");
  const char *(*call)(size_t) = symbol<const char *(*)(size_t)>(library, "fake_nccl_call");
  void *(*stream)(size_t) = symbol<void *(*)(size_t)>(library, "fake_nccl_stream");
  int (*liveComms)() = symbol<int (*)()>(library, "fake_nccl_live_comms");

  std::vector<std::string> calls() const {
    std::vector<std::string> names;
    for (size_t i = 0; i < numCalls(); ++i)
      names.push_back(call(i));
    return names;
  }

  /// A communicator of every rank, made as a trainer makes one.
  ncclComm_t makeComm() const {
    struct Id {
      char internal[128];
    } id{};
    if (worldRank() == 0)
      symbol<int (*)(Id *)>(library, "ncclGetUniqueId")(&id);
    MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD);
    ncclComm_t comm = nullptr;
    int result = symbol<int (*)(ncclComm_t *, int, Id, int)>(library, "ncclCommInitRank")(&comm, worldSize(), id,
                                                                                           worldRank());
    if (result != 0)
      throw std::runtime_error("the fake ncclCommInitRank failed");
    return comm;
  }
  void destroy(ncclComm_t comm) const { symbol<int (*)(ncclComm_t)>(library, "ncclCommDestroy")(comm); }
};

/// The names of the fake driver's launches.
std::vector<std::string> launches() {
  void *driver = loaded("OPTDSL_LIBCUDA");
  auto count = symbol<size_t (*)()>(driver, "fake_cuda_num_launches");
  auto name = symbol<const char *(*)(size_t)>(driver, "fake_cuda_launch");
  std::vector<std::string> names;
  for (size_t i = 0; i < count(); ++i)
    names.push_back(name(i));
  return names;
}

void resetLaunches() { symbol<void (*)()>(loaded("OPTDSL_LIBCUDA"), "fake_cuda_reset")(); }

class NcclEngine : public testing::Test {
protected:
  void SetUp() override { fake.reset(); }
  FakeNccl fake;
  std::shared_ptr<optrt::Communicator> comm = optrt::ncclCommunicator(MPI_COMM_WORLD, 0);
};

TEST_F(NcclEngine, EqualPartsAreOneCollectiveAndUnevenPartsAGroupPerOwner) {
  size_t ranks = static_cast<size_t>(worldSize());
  std::vector<size_t> equal(ranks, 4), uneven(ranks, 4);
  uneven[0] = 3; // rank 0's part shorter (the only part when alone: then "equal")
  EngineMemory memory(*comm, 4 * 4 * ranks);
  comm->allGatherInPlace(memory.data(), equal, kTestStream);
  comm->reduceScatter(memory.data(), memory.data(), equal, optrt::Dtype::F32, Reduction::Sum, kTestStream);
  EXPECT_EQ(fake.calls(), (std::vector<std::string>{"ncclAllGather", "ncclReduceScatter"}));
  if (ranks == 1)
    return;
  fake.reset();
  EngineMemory recv(*comm, 16);
  comm->allGatherInPlace(memory.data(), uneven, kTestStream);
  comm->reduceScatter(memory.data(), recv.data(), uneven, optrt::Dtype::F32, Reduction::Sum, kTestStream);
  std::vector<std::string> expected(ranks, "ncclBroadcast");
  expected.insert(expected.end(), ranks, "ncclReduce");
  EXPECT_EQ(fake.calls(), expected);
}

TEST_F(NcclEngine, EveryCollectiveIsEnqueuedOnTheStreamItIsGiven) {
  std::vector<size_t> parts(static_cast<size_t>(worldSize()), 2);
  parts[0] = 5;
  EngineMemory send(*comm, 64), recv(*comm, 64);
  comm->allGatherInPlace(send.data(), parts, kTestStream);
  comm->reduceScatter(send.data(), recv.data(), parts, optrt::Dtype::BF16, Reduction::Average, kTestStream);
  ASSERT_GT(fake.numCalls(), 0u);
  for (size_t i = 0; i < fake.numCalls(); ++i)
    EXPECT_EQ(fake.stream(i), kTestStream) << fake.call(i);
}

// The mean is NCCL's sum divided on the device by the engine's own kernel:
// NCCL's ncclAvg (the fake, like NCCL, multiplies by 1/N before adding)
// would give other bits with 3 ranks (CommunicatorTest's means).
TEST_F(NcclEngine, AveragesBySummingThenDividingOnTheDevice) {
  size_t ranks = static_cast<size_t>(worldSize());
  std::vector<size_t> parts(ranks, 3);
  EngineMemory send(*comm, 4 * 3 * ranks), recv(*comm, 4 * 3);
  for (optrt::Dtype dtype : {optrt::Dtype::F32, optrt::Dtype::BF16, optrt::Dtype::F16}) {
    resetLaunches();
    comm->reduceScatter(send.data(), recv.data(), parts, dtype, Reduction::Average, kTestStream);
    std::vector<std::string> expected;
    if (ranks > 1) // a mean of one rank is its values
      expected.push_back("optrt_divide_" + optrt::dtypeName(dtype));
    EXPECT_EQ(launches(), expected);
    resetLaunches();
    comm->reduceScatter(send.data(), recv.data(), parts, dtype, Reduction::Sum, kTestStream);
    EXPECT_TRUE(launches().empty());
  }
}

TEST_F(NcclEngine, HostRecordsTravelThroughDeviceMemory) {
  // The fake NCCL refuses host memory, as NCCL does: the records are staged.
  uint32_t mine[3] = {7u * static_cast<uint32_t>(worldRank()), 0xFEEDu, 1u};
  std::vector<uint32_t> all(3 * static_cast<size_t>(worldSize()));
  comm->allGather(mine, all.data(), sizeof mine);
  for (int r = 0; r < worldSize(); ++r) {
    EXPECT_EQ(all[3 * r], 7u * static_cast<uint32_t>(r));
    EXPECT_EQ(all[3 * r + 1], 0xFEEDu);
  }
}

TEST_F(NcclEngine, AFailingNcclCallIsNamedAndTheNextCallWorks) {
  size_t ranks = static_cast<size_t>(worldSize());
  std::vector<size_t> uneven(ranks, 2);
  uneven[0] = 1;
  EngineMemory send(*comm, 8 * ranks), recv(*comm, 8);
  const char *failing = ranks > 1 ? "ncclReduce" : "ncclReduceScatter";
  fake.fail(failing, 4); // ncclInvalidArgument, on every rank
  std::string message = messageOf(
      [&] { comm->reduceScatter(send.data(), recv.data(), uneven, optrt::Dtype::F32, Reduction::Sum, kTestStream); });
  EXPECT_TRUE(contains(message, std::string(failing) + " failed: invalid argument")) << message;
  EXPECT_TRUE(contains(message, "was told to fail")) << message; // NCCL's last error, quoted
  fake.reset();
  // The group was closed: the next call runs.
  comm->reduceScatter(send.data(), recv.data(), uneven, optrt::Dtype::F32, Reduction::Sum, kTestStream);
  EXPECT_FALSE(fake.calls().empty());
}

TEST(NcclEngineOverACommunicator, LeavesTheCallersCommunicatorToTheCaller) {
  FakeNccl fake;
  int before = fake.liveComms();
  ncclComm_t mine = fake.makeComm();
  {
    std::shared_ptr<optrt::Communicator> comm = optrt::ncclCommunicator(mine);
    EXPECT_EQ(comm->rank(), worldRank());
    EXPECT_EQ(comm->size(), worldSize());
    int value = worldRank() + 100;
    std::vector<int> all(static_cast<size_t>(worldSize()));
    comm->allGather(&value, all.data(), sizeof value);
    EXPECT_EQ(all.back(), worldSize() - 1 + 100);
  }
  EXPECT_EQ(fake.liveComms(), before + 1); // still the caller's
  fake.destroy(mine);
  EXPECT_THROW(optrt::ncclCommunicator(static_cast<ncclComm_t>(nullptr)), std::invalid_argument);
}

TEST(NcclEngineOverMpi, OwnsTheCommunicatorItMakes) {
  FakeNccl fake;
  int before = fake.liveComms();
  {
    std::shared_ptr<optrt::Communicator> comm = optrt::ncclCommunicator(MPI_COMM_WORLD, 0);
    EXPECT_EQ(fake.liveComms(), before + 1);
  }
  EXPECT_EQ(fake.liveComms(), before);
}

TEST(NcclEngineOverMpi, ASetUpErrorOnOneRankIsAnErrorOnEveryRank) {
  FakeNccl fake;
  int before = fake.liveComms();
  std::string message = messageOf([] { optrt::ncclCommunicator(MPI_COMM_WORLD, -1); });
  EXPECT_TRUE(contains(message, "device ordinal must be 0 or more")) << message;
  // The fake driver sees one device.
  message = messageOf([] { optrt::ncclCommunicator(MPI_COMM_WORLD, 3); });
  EXPECT_TRUE(contains(message, "CUDA device 3 requested; the driver sees 1")) << message;
  // NCCL fails on rank 0 only: rank 0 has its own error, the others name it.
  if (worldRank() == 0)
    fake.fail("ncclGetUniqueId", 2);
  message = messageOf([] { optrt::ncclCommunicator(MPI_COMM_WORLD, 0); });
  EXPECT_TRUE(contains(message, "ncclGetUniqueId failed: unhandled system error")) << message;
  if (worldRank() != 0)
    EXPECT_TRUE(contains(message, "rank 0 failed")) << message;
  fake.reset();
  EXPECT_EQ(fake.liveComms(), before);
  optrt::ncclCommunicator(MPI_COMM_WORLD, 0); // and the ranks are still in step
}

TEST(NcclEngineOverMpi, ACpuOptimizerRefusesItOnEveryRank) {
  optrt::OptimizerOptions options;
  options.communicator = optrt::ncclCommunicator(MPI_COMM_WORLD, 0);
  std::string message = messageOf([&] { optrt::Optimizer(jitKernels("adamw", {"f32"}), options); });
  EXPECT_TRUE(contains(message, "the NCCL engine moves device memory; a CPU optimizer shards over an engine of "
                                "host memory"))
      << message;
}

} // namespace
} // namespace optdsl::test
