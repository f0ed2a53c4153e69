// A sharded CudaOptimizer's host side under mpirun, on the fake driver (no
// kernel runs) with both engines: NCCL (the fake libnccl) and MPI (staged
// through host memory). What can be checked without a GPU: each rank keeps
// its share of the state and launches the element kernels over its own
// chunks only (every chunk by exactly one rank), the params and row sums
// each rank computes reach every rank, the memory per rank adds up to one
// process's, mistakes on one rank are errors on every rank with nothing
// launched, and checkpoints move between rank counts and optimizers. The bits of a sharded step
// against one process are checked on a GPU (docs/sharding.md).
#include "MpiWorld.h"

#include "cuda/FakeDriverControl.h"
#include "optrt/NcclCommunicator.h"
#include "optrt/Optimizer.h"
#include "optrt/Storage.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <numeric>
#include <set>
#include <sstream>


namespace optdsl::test {
namespace {

using optrt::CudaOptimizer;
using optrt::CudaOptimizerOptions;

constexpr size_t kChunk = 1024;
// Chunks: 6 + 3 + 1, fewer than the fake GPU's resident blocks (4 x 8), so
// each element launch's grid is its number of chunks.
const std::vector<size_t> kSizes = {5 * kChunk + 10, 3000, 700};
// A rule that reads matrices: chunks of 64 rows (ChunkTable's least) of 256
// columns (whole q8 blocks), and a rank-1 tensor (one row: the fallback in
// q8 layouts). Chunks: 6 + 3 + 1.
const std::vector<size_t> kMatrixSizes = {6 * 64 * 256, 3 * 64 * 256, 700};
const std::vector<std::vector<size_t>> kMatrixShapes = {{6 * 64, 256}, {3 * 64, 256}, {700}};

std::shared_ptr<optrt::Communicator> engine(const std::string &name) {
  return name == "NCCL" ? optrt::ncclCommunicator(MPI_COMM_WORLD, 0) : worldCommunicator();
}

CudaOptimizerOptions options(const std::string &layout, std::shared_ptr<optrt::Communicator> comm) {
  CudaOptimizerOptions o;
  o.layout = layout;
  o.chunkElements = kChunk;
  o.smallTensorElements = 2048; // 700 runs the q8 layouts' fallback
  o.communicator = std::move(comm);
  return o;
}

/// Device tensors of kSizes in `dtype`, element i of tensor t holding `value(t, i)`.
struct DeviceTensors {
  std::vector<DevicePtr> pointers;
  optrt::Dtype dtype;
  std::vector<size_t> sizes;
  DeviceTensors(optrt::Dtype dtype, float (*value)(size_t, size_t), const std::vector<size_t> &sizes = kSizes)
      : dtype(dtype), sizes(sizes) {
    for (size_t t = 0; t < sizes.size(); ++t) {
      pointers.push_back(Fake::get().alloc(optrt::elementBytes(dtype, sizes[t])));
      std::vector<float> values(sizes[t]);
      for (size_t i = 0; i < values.size(); ++i)
        values[i] = value(t, i);
      write(t, 0, values);
    }
  }
  void write(size_t t, size_t first, const std::vector<float> &values) {
    optrt::encodeF32(dtype, values, reinterpret_cast<char *>(pointers[t]) + optrt::elementBytes(dtype, first), nullptr);
  }
  std::vector<float> read(size_t t) const {
    std::vector<float> values(sizes[t]);
    optrt::decodeToF32(dtype, reinterpret_cast<const char *>(pointers[t]), nullptr, values);
    return values;
  }
};

float initial(size_t t, size_t i) { return static_cast<float>((t * 7 + i) % 64) / 16; }
float gradient(size_t t, size_t i) { return static_cast<float>((t + i * 3) % 32) / 1024; }
// What rank r's kernels would have written: exact in bf16.
float updated(int r, size_t i) { return static_cast<float>(r + 1) * 16 + static_cast<float>(i % 8); }

struct Case {
  const char *engine, *layout, *rule;
};
void PrintTo(const Case &c, std::ostream *out) { *out << c.engine << " " << c.layout << " " << c.rule; }

class ShardedCudaHost : public testing::TestWithParam<Case> {
protected:
  void SetUp() override {
    if (!optdsl::findCudaToolkit())
      GTEST_SKIP() << "no CUDA toolkit (libdevice) to build the kernels with";
    Fake::get().reset();
  }
  std::string layout() const { return GetParam().layout; }
  bool matrices() const { return std::string(GetParam().rule) == "adafactor"; }
  const std::vector<size_t> &sizes() const { return matrices() ? kMatrixSizes : kSizes; }
  std::vector<std::vector<size_t>> shapes() const {
    return matrices() ? kMatrixShapes : std::vector<std::vector<size_t>>{};
  }
  optrt::Dtype paramDtype() const { return optrt::Layout::parse(layout()).param; }
};

TEST_P(ShardedCudaHost, EachRankStepsItsChunksAndEveryRankGetsEveryParam) {
  const std::vector<size_t> &tensorSizes = sizes();
  LayoutRule rule = compileLayouts(GetParam().rule, {layout()});
  CudaOptimizer sharded(rule.host, rule.device, options(layout(), engine(GetParam().engine)));
  DeviceTensors params(paramDtype(), initial, tensorSizes), grads(optrt::Layout::parse(layout()).grad, gradient, tensorSizes);
  sharded.addGroup(params.pointers, tensorSizes, {}, shapes());

  // Each tensor's elements are owned once, in rank order, cut at chunks.
  for (size_t t = 0; t < tensorSizes.size(); ++t) {
    auto [begin, end] = sharded.ownedRange(0, t);
    std::vector<size_t> begins = gatherFromRanks(begin), ends = gatherFromRanks(end);
    size_t at = 0;
    for (int r = 0; r < worldSize(); ++r) {
      if (begins[r] == ends[r])
        continue;
      EXPECT_EQ(begins[r], at) << "tensor " << t << " rank " << r;
      EXPECT_EQ(begins[r] % kChunk, 0u);
      at = ends[r];
    }
    EXPECT_EQ(at, tensorSizes[t]);
  }

  // The kernels do not run on the fake driver: write what this rank's would
  // (into its own elements), and the step's gather must bring every rank's.
  for (size_t t = 0; t < tensorSizes.size(); ++t) {
    auto [begin, end] = sharded.ownedRange(0, t);
    std::vector<float> mine(end - begin);
    for (size_t i = begin; i < end; ++i)
      mine[i - begin] = updated(worldRank(), i);
    params.write(t, begin, mine);
  }
  // A rule that reads matrices: each rank's pass over the elements sums its
  // own rows (into the scratch state per row): write what it would, and the
  // step's gather must bring every rank's rows.
  const char *rowSums = "row_mean(0)";
  std::vector<std::vector<int>> owners(tensorSizes.size()); // per tensor, each row's rank
  if (matrices())
    for (size_t t = 0; t < tensorSizes.size(); ++t) {
      std::vector<float> rows(sharded.readState(rowSums, 0, t).size(), -1.0f);
      size_t cols = tensorSizes[t] / rows.size();
      std::vector<size_t> ends = gatherFromRanks(sharded.ownedRange(0, t).second);
      int owner = 0;
      for (size_t row = 0; row < rows.size(); ++row) {
        while (row * cols >= ends[owner])
          ++owner;
        owners[t].push_back(owner);
        if (owner == worldRank())
          rows[row] = updated(worldRank(), row);
      }
      sharded.writeState(rowSums, 0, t, rows);
    }
  Fake::get().reset();
  sharded.step({grads.pointers});
  for (size_t t = 0; t < tensorSizes.size() && matrices(); ++t) {
    std::vector<float> rows = sharded.readState(rowSums, 0, t);
    for (size_t row = 0; row < rows.size(); ++row)
      ASSERT_EQ(rows[row], updated(owners[t][row], row)) << "tensor " << t << " row " << row;
  }
  for (size_t t = 0; t < tensorSizes.size(); ++t) {
    std::vector<size_t> ends = gatherFromRanks(sharded.ownedRange(0, t).second);
    std::vector<float> got = params.read(t);
    int owner = 0;
    for (size_t i = 0; i < tensorSizes[t]; ++i) {
      while (i >= ends[owner])
        ++owner;
      ASSERT_EQ(got[i], updated(owner, i)) << "tensor " << t << " element " << i;
    }
  }

  // Every chunk of a pass over the elements was launched by exactly one
  // rank: the grids of this rank's launches of those passes (one block per
  // chunk here) add up over the ranks to one process's chunks, in every
  // such pass. (A pass over rows or columns runs every chunk on every rank.)
  std::set<std::string> overElements;
  for (const auto &device : rule.device)
    for (size_t p = 0; p < device->elementEntries.size(); ++p)
      if (rule.host->phaseDomains.empty() || rule.host->phaseDomains[p] == optrt::PhaseDomain::Elements)
        overElements.insert(device->elementEntries[p]);
  size_t chunks = 0;
  for (size_t i = 0; i < Fake::get().numLaunches(); ++i)
    if (overElements.count(Fake::get().launch(i)))
      chunks += Fake::get().launchGrid(i);
  std::vector<size_t> all = gatherFromRanks(chunks);
  size_t passes = 0;
  for (size_t p = 0; p < rule.device[0]->elementEntries.size(); ++p)
    passes += overElements.count(rule.device[0]->elementEntries[p]);
  EXPECT_EQ(std::accumulate(all.begin(), all.end(), size_t{0}), passes * (6 + 3 + 1));
}

TEST_P(ShardedCudaHost, EachRankKeepsItsShareOfTheState) {
  LayoutRule rule = compileLayouts("adamw", {layout()});
  DeviceTensors params(paramDtype(), initial);
  CudaOptimizer sharded(rule.host, rule.device, options(layout(), engine(GetParam().engine)));
  sharded.addGroup(params.pointers, kSizes);
  CudaOptimizerOptions alone = options(layout(), nullptr);
  CudaOptimizer one(rule.host, rule.device, alone);
  one.addGroup(params.pointers, kSizes);
  optrt::MemoryReport mine = sharded.memoryReport(), whole = one.memoryReport();
  std::vector<double> states = gatherFromRanks(mine.state), masters = gatherFromRanks(mine.master);
  EXPECT_NEAR(std::accumulate(states.begin(), states.end(), 0.0), whole.state, 1e-12);
  EXPECT_NEAR(std::accumulate(masters.begin(), masters.end(), 0.0), whole.master, 1e-12);
  EXPECT_EQ(mine.param, whole.param); // params stay whole on every rank
  // Each rank's state as read back has its owned elements only.
  for (size_t t = 0; t < kSizes.size(); ++t) {
    auto [begin, end] = sharded.ownedRange(0, t);
    EXPECT_EQ(sharded.readState("exp_avg", 0, t).size(), end - begin);
  }
}

// Each mistake on one rank: an error naming it on every rank, nothing
// launched, and the next correct step goes through.
TEST_P(ShardedCudaHost, AMistakeOnOneRankIsAnErrorOnEveryRank) {
  LayoutRule rule = compileLayouts("adamw", {layout()});
  DeviceTensors params(paramDtype(), initial), grads(optrt::Layout::parse(layout()).grad, gradient);
  CudaOptimizer sharded(rule.host, rule.device, options(layout(), engine(GetParam().engine)));
  sharded.addGroup(params.pointers, kSizes);
  int last = worldSize() - 1;

  std::vector<DevicePtr> mine = grads.pointers;
  if (worldRank() == last)
    mine.pop_back();
  Fake::get().reset();
  std::string message = messageOf([&] { sharded.step({mine}); });
  EXPECT_TRUE(contains(message, "got 2 gradients for group 0, which has 3 tensors")) << message;
  if (worldRank() != last)
    EXPECT_TRUE(contains(message, "rank " + std::to_string(last) + " failed")) << message;
  EXPECT_EQ(Fake::get().numLaunches(), 0u);

  if (worldSize() > 1) {
    if (worldRank() == last)
      sharded.setHyper("lr", 0.5);
    message = messageOf([&] { sharded.step({grads.pointers}); });
    EXPECT_TRUE(contains(message, "the ranks disagree on the step's arguments")) << message;
    EXPECT_EQ(Fake::get().numLaunches(), 0u);
    sharded.setHyper("lr", 0.5);
    std::vector<size_t> other = kSizes;
    if (worldRank() == last)
      other[1] += 1;
    DeviceTensors more(paramDtype(), initial, other);
    message = messageOf([&] { sharded.addGroup(more.pointers, other); });
    EXPECT_TRUE(contains(message, "the ranks disagree on the new group")) << message;
    EXPECT_EQ(sharded.numGroups(), 1);
  }
  sharded.step({grads.pointers});
  EXPECT_GT(Fake::get().numLaunches(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Engines, ShardedCudaHost,
                         testing::Values(Case{"NCCL", "f32", "adamw"},
                                         Case{"NCCL", "param=bf16,master=f32,state=q8", "adamw"},
                                         Case{"MPI", "f32", "adamw"}, Case{"MPI", "param=bf16,master=f32,state=q8", "adamw"},
                                         Case{"NCCL", "param=bf16,master=f32,state=q8", "adafactor"},
                                         Case{"MPI", "f32", "adafactor"}),
                         [](const testing::TestParamInfo<Case> &info) {
                           return std::string(info.param.engine) +
                                  (std::string(info.param.layout) == "f32" ? "_f32_" : "_bf16_q8_") + info.param.rule;
                         });


// A sharded CUDA checkpoint loads into one process, into fewer ranks and
// into the sharded CPU optimizer, and one process's file into the sharded
// CUDA optimizer, the state landing bit for bit where one process keeps it
// (q8 codes and absmax included: parts are whole blocks). Streams are
// refused by name. (Kernels do not run on the fake driver: the state is
// written, not stepped.)
TEST(ShardedCudaHostCheckpoints, MoveBetweenRankCountsAndTheCpuOptimizer) {
  if (!optdsl::findCudaToolkit())
    GTEST_SKIP() << "no CUDA toolkit (libdevice) to build the kernels with";
  const std::string layout = "param=bf16,master=f32,state=q8";
  LayoutRule rule = compileLayouts("adamw", {layout});
  DeviceTensors params(optrt::Dtype::BF16, initial);
  auto value = [](size_t t, size_t i) { return static_cast<float>((t * 5 + i * 3) % 97) / 64 - 0.75f; };
  auto whole = [&](size_t t) {
    std::vector<float> v(kSizes[t]);
    for (size_t i = 0; i < v.size(); ++i)
      v[i] = value(t, i);
    return v;
  };
  // What one process keeps, written whole.
  CudaOptimizer reference(rule.host, rule.device, options(layout, nullptr));
  reference.addGroup(params.pointers, kSizes);
  for (size_t t = 0; t < kSizes.size(); ++t)
    reference.writeState("exp_avg", 0, t, whole(t));
  auto expectParts = [&](auto &optimizer, const std::string &where) {
    for (size_t t = 0; t < kSizes.size(); ++t) {
      auto [begin, end] = optimizer.ownedRange(0, t);
      std::vector<float> expected = reference.readState("exp_avg", 0, t);
      expected = std::vector<float>(expected.begin() + static_cast<long>(begin), expected.begin() + static_cast<long>(end));
      std::vector<float> got = optimizer.readState("exp_avg", 0, t);
      ASSERT_EQ(got.size(), expected.size()) << where << " tensor " << t;
      // Bits, not values (a part of no elements compares equal).
      EXPECT_TRUE(got.empty() || std::memcmp(got.data(), expected.data(), got.size() * sizeof(float)) == 0)
          << where << " tensor " << t;
    }
  };

  CudaOptimizer sharded(rule.host, rule.device, options(layout, engine("NCCL")));
  sharded.addGroup(params.pointers, kSizes);
  for (size_t t = 0; t < kSizes.size(); ++t) {
    auto [begin, end] = sharded.ownedRange(0, t);
    std::vector<float> all = whole(t);
    sharded.writeState("exp_avg", 0, t, std::vector<float>(all.begin() + static_cast<long>(begin),
                                                           all.begin() + static_cast<long>(end)));
  }
  expectParts(sharded, "written");
  std::string folder = sharedFolder("optdsl-cuda-shard-ckpt", "adamw");
  sharded.saveState(folder);
  EXPECT_TRUE(std::filesystem::exists(folder + "/manifest.json"));
  std::ostringstream stream;
  EXPECT_THROW(sharded.saveState(stream), std::logic_error);

  CudaOptimizer alone(rule.host, rule.device, options(layout, nullptr));
  alone.addGroup(params.pointers, kSizes);
  alone.loadState(folder);
  expectParts(alone, "one process");

  if (worldSize() > 1) { // resharded onto one rank fewer (the MPI engine over them)
    MPI_Comm fewer = MPI_COMM_NULL;
    MPI_Comm_split(MPI_COMM_WORLD, worldRank() + 1 < worldSize() ? 0 : MPI_UNDEFINED, worldRank(), &fewer);
    if (fewer != MPI_COMM_NULL) {
      CudaOptimizer resharded(rule.host, rule.device, options(layout, optrt::mpiCommunicator(fewer)));
      resharded.addGroup(params.pointers, kSizes);
      resharded.loadState(folder);
      expectParts(resharded, "fewer ranks");
      MPI_Comm_free(&fewer);
    }
  }

  optrt::OptimizerOptions cpuOptions;
  cpuOptions.layout = layout;
  cpuOptions.threads = 1;
  cpuOptions.chunkElements = kChunk;
  cpuOptions.smallTensorElements = 2048; // the CUDA optimizers' fallback
  cpuOptions.communicator = worldCommunicator();
  std::vector<std::vector<uint16_t>> hostParams;
  std::vector<void *> hostPointers;
  for (size_t n : kSizes) {
    hostParams.emplace_back(n, 0x3F80);
    hostPointers.push_back(hostParams.back().data());
  }
  optrt::Optimizer cpu(rule.host, cpuOptions);
  cpu.addGroupStored(hostPointers, kSizes);
  cpu.loadState(folder);
  expectParts(cpu, "the CPU optimizer");

  // And back: one process's file into the sharded CUDA optimizer.
  std::string file = folder + "-one-process-of-rank-" + std::to_string(worldRank());
  alone.saveState(file);
  CudaOptimizer again(rule.host, rule.device, options(layout, engine("MPI")));
  again.addGroup(params.pointers, kSizes);
  again.loadState(file);
  expectParts(again, "from one process's file");

  MPI_Barrier(MPI_COMM_WORLD);
  std::filesystem::remove(file);
  if (worldRank() == 0)
    std::filesystem::remove_all(folder);
}

} // namespace
} // namespace optdsl::test
