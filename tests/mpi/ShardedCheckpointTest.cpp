// Checkpoints of a sharded optimizer: a folder with one file per rank and a
// manifest. Saved by the world's ranks, loaded by 1 .. N of them (resharded),
// by one process, and one process's file loaded by the world's ranks; after
// loading, two more steps give params bitwise equal to an optimizer that
// never stopped. A missing file, files of two saves mixed and another rule's
// checkpoint are refused on every rank with nothing changed.
#include "MpiWorld.h"

#include "common/JitKernels.h"
#include "common/RandomValues.h"

#include "optrt/Optimizer.h"
#include "optrt/Storage.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <random>

namespace optdsl::test {
namespace {

using optrt::Dtype;
using optrt::Optimizer;
using optrt::OptimizerOptions;

const char *const kQ8Layout = "param=bf16,master=f32,state=q8";
constexpr size_t kChunk = 1024;
const std::vector<size_t> kSizes = {7 * kChunk + 100, 5000, 300, 3 * kChunk};
// Their shapes for rules that read tensors as matrices (chunks of whole
// rows: 79 x 92 and the stack of two 50 x 50 in two each).
const std::vector<std::vector<size_t>> kShapes = {{79, 92}, {2, 50, 50}, {300}, {48, 64}};

// Params in one layout's storage, one buffer per tensor.
struct Params {
  Params(Dtype dtype, uint32_t seed) {
    std::mt19937 rng(seed);
    for (size_t n : kSizes) {
      tensors.emplace_back(optrt::elementBytes(dtype, n));
      optrt::encodeF32(dtype, normalValues(n, rng), tensors.back().data(), nullptr);
    }
  }
  std::vector<void *> pointers() {
    std::vector<void *> result;
    for (auto &t : tensors)
      result.push_back(t.data());
    return result;
  }
  std::vector<std::vector<char>> tensors;
};

std::vector<std::vector<const float *>> gradients(int step, std::vector<std::vector<float>> &storage) {
  std::mt19937 rng(100 + step);
  storage.clear();
  std::vector<const float *> group;
  for (size_t n : kSizes) {
    storage.push_back(normalValues(n, rng, 0.1f));
    group.push_back(storage.back().data());
  }
  return {group};
}

OptimizerOptions optionsFor(const std::string &layout, std::shared_ptr<optrt::Communicator> comm) {
  OptimizerOptions options;
  options.layout = layout;
  options.threads = 1;
  options.chunkElements = kChunk;
  options.communicator = std::move(comm);
  options.gradients = optrt::ShardedGradients::Reduced; // the same gradients everywhere
  return options;
}

void stepTo(Optimizer &optimizer, int from, int to) {
  for (int step = from; step <= to; ++step) {
    std::vector<std::vector<float>> storage;
    optimizer.step(gradients(step, storage));
  }
}


// MPI_COMM_WORLD's first `ranks` ranks, or MPI_COMM_NULL on the others.
MPI_Comm firstRanks(int ranks) {
  MPI_Comm comm;
  MPI_Comm_split(MPI_COMM_WORLD, worldRank() < ranks ? 0 : MPI_UNDEFINED, worldRank(), &comm);
  return comm;
}

const std::map<std::string, double> kHypers = {{"lr", 3e-3}};

Optimizer makeOptimizer(std::shared_ptr<const optrt::RuleKernels> kernels, const std::string &layout,
                        std::shared_ptr<optrt::Communicator> comm, Params &params) {
  bool matrices = optrt::readsMatrices(kernels->states);
  Optimizer optimizer(std::move(kernels), optionsFor(layout, std::move(comm)));
  optimizer.addGroupStored(params.pointers(), kSizes, kHypers, matrices ? kShapes : std::vector<std::vector<size_t>>{});
  return optimizer;
}

struct CheckpointCase {
  std::string rule, layout;
};

void PrintTo(const CheckpointCase &c, std::ostream *out) { *out << c.rule << " in " << c.layout; }

class ShardedCheckpoint : public testing::TestWithParam<CheckpointCase> {};

TEST_P(ShardedCheckpoint, ReshardsToAnyWorldSizeAndToOneProcessAndBack) {
  const std::string &layout = GetParam().layout;
  auto kernels = jitKernels(GetParam().rule, {"f32", kQ8Layout});
  Dtype dtype = optrt::Layout::parse(layout).param;
  std::string folder = sharedFolder("optdsl-shard-ckpt", GetParam().rule + (dtype == Dtype::F32 ? "-f32" : "-q8"));
  std::string singleFile = folder + "-one-process-of-rank-" + std::to_string(worldRank());

  // The run that never stops: one process, 4 steps; its params after step 2
  // and its state file then.
  Params reference(dtype, 9);
  Optimizer one = makeOptimizer(kernels, layout, nullptr, reference);
  stepTo(one, 1, 2);
  Params at2 = reference;
  one.saveState(singleFile);
  stepTo(one, 3, 4);

  { // The world's ranks train 2 steps sharded and save.
    Params params(dtype, 9);
    Optimizer sharded = makeOptimizer(kernels, layout, worldCommunicator(), params);
    stepTo(sharded, 1, 2);
    EXPECT_TRUE(params.tensors == at2.tensors);
    sharded.saveState(folder);
  }
  EXPECT_TRUE(std::filesystem::exists(folder + "/manifest.json"));

  // Loaded by the first 1 .. N ranks: the checkpoint is resharded.
  for (int ranks = 1; ranks <= worldSize(); ++ranks) {
    MPI_Comm comm = firstRanks(ranks);
    if (comm == MPI_COMM_NULL)
      continue;
    {
      Params resumed = at2;
      Optimizer sharded = makeOptimizer(kernels, layout, optrt::mpiCommunicator(comm), resumed);
      sharded.loadState(folder);
      EXPECT_EQ(sharded.stepCount(), 2);
      stepTo(sharded, 3, 4);
      EXPECT_TRUE(resumed.tensors == reference.tensors) << "resumed on " << ranks << " ranks";
    }
    MPI_Comm_free(&comm);
  }
  { // Loaded by one process.
    Params resumed = at2;
    Optimizer alone = makeOptimizer(kernels, layout, nullptr, resumed);
    alone.loadState(folder);
    stepTo(alone, 3, 4);
    EXPECT_TRUE(resumed.tensors == reference.tensors) << "resumed in one process";
  }
  { // One process's file, loaded by the world's ranks.
    Params resumed = at2;
    Optimizer sharded = makeOptimizer(kernels, layout, worldCommunicator(), resumed);
    sharded.loadState(singleFile);
    stepTo(sharded, 3, 4);
    EXPECT_TRUE(resumed.tensors == reference.tensors) << "one process's file resumed sharded";
  }
  std::filesystem::remove(singleFile);
  MPI_Barrier(MPI_COMM_WORLD);
  if (worldRank() == 0)
    std::filesystem::remove_all(folder);
}

INSTANTIATE_TEST_SUITE_P(Rules, ShardedCheckpoint,
                         testing::Values(CheckpointCase{"adamw", "f32"}, CheckpointCase{"adamw", kQ8Layout},
                                         CheckpointCase{"lamb", "f32"}, CheckpointCase{"ademamix", kQ8Layout},
                                         // states per row and column: whole in every rank's file
                                         CheckpointCase{"came", "f32"}, CheckpointCase{"adafactor", kQ8Layout}));


// The name docs/checkpoints.md gives rank r's file of a save by every rank.
std::string shardFile(int r) {
  char name[64];
  std::snprintf(name, sizeof name, "rank-%05d-of-%05d.state", r, worldSize());
  return name;
}

TEST(ShardedCheckpointErrors, AMissingFileMixedSavesAndAnotherRuleAreRefusedOnEveryRank) {
  auto kernels = jitKernels("adamw", {"f32", kQ8Layout});
  std::string early = sharedFolder("optdsl-shard-ckpt", "early"), late = sharedFolder("optdsl-shard-ckpt", "late");
  Params params(Dtype::F32, 4);
  Optimizer sharded = makeOptimizer(kernels, "f32", worldCommunicator(), params);
  stepTo(sharded, 1, 2);
  sharded.saveState(early);
  stepTo(sharded, 3, 3);
  sharded.saveState(late);
  auto stateOf = [&] {
    std::vector<std::vector<float>> state;
    for (size_t t = 0; t < kSizes.size(); ++t)
      state.push_back(sharded.readState("exp_avg_sq", 0, t));
    return state;
  };
  auto before = stateOf();
  std::string lastFile = shardFile(worldSize() - 1);

  // Files of two saves mixed: rank 0's file of the early save in the late one.
  if (worldRank() == 0)
    std::filesystem::copy_file(early + "/" + shardFile(0), late + "/" + shardFile(0),
                               std::filesystem::copy_options::overwrite_existing);
  MPI_Barrier(MPI_COMM_WORLD);
  std::string message = messageOf([&] { sharded.loadState(late); });
  EXPECT_TRUE(contains(message, "files of two checkpoints were mixed")) << message;

  // A missing file.
  if (worldRank() == 0)
    std::filesystem::remove(early + "/" + lastFile);
  MPI_Barrier(MPI_COMM_WORLD);
  message = messageOf([&] { sharded.loadState(early); });
  EXPECT_TRUE(contains(message, lastFile)) << message;

  // Another rule's checkpoint.
  Params other(Dtype::F32, 4);
  Optimizer lamb = makeOptimizer(jitKernels("lamb", {"f32"}), "f32", worldCommunicator(), other);
  message = messageOf([&] { lamb.loadState(late); });
  EXPECT_TRUE(contains(message, "of rule 'adamw'")) << message;

  EXPECT_EQ(sharded.stepCount(), 3);
  EXPECT_TRUE(stateOf() == before);
  MPI_Barrier(MPI_COMM_WORLD);
  if (worldRank() == 0) {
    std::filesystem::remove_all(early);
    std::filesystem::remove_all(late);
  }
}

} // namespace
} // namespace optdsl::test
