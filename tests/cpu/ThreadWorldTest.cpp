// The in-process ranks of tests/common/ThreadWorld.h, which the sharded
// CUDA tests run on one GPU, checked where it can be: the sharded CPU
// optimizer over 3 thread ranks gives one process's params bit for bit (as
// it does over MPI, tests/mpi), with per-tensor reductions (lamb) and q8
// states, gradients averaged and clipped by global norm.
#include "common/JitKernels.h"
#include "common/ThreadWorld.h"

#include "optrt/Optimizer.h"

#include <gtest/gtest.h>

#include <cstring>

namespace optdsl::test {
namespace {

constexpr size_t kChunk = 1024;
const std::vector<size_t> kSizes = {5 * kChunk + 10, 3000, 700};
constexpr int kRanks = 3;

// Rank r's gradient: multiples of 1/1024 whose sum over the ranks is exact,
// so the mean is one rounding, the same as one process's division; the sum
// (8 times a multiple of 1/1024) is not a multiple of 3, so multiplying by
// 1/3 instead would round otherwise.
float gradient(int rank, size_t t, size_t i, int step) {
  return static_cast<float>(static_cast<int>((t * 13 + i * 7 + static_cast<size_t>(step) * 5) % 61) - 30) *
         static_cast<float>(rank * rank + 1) / 1024;
}

std::vector<std::vector<float>> initialParams() {
  std::vector<std::vector<float>> params;
  for (size_t t = 0; t < kSizes.size(); ++t) {
    params.emplace_back(kSizes[t]);
    for (size_t i = 0; i < kSizes[t]; ++i)
      params.back()[i] = static_cast<float>((i * 31 + t) % 97) / 97 - 0.5f;
  }
  return params;
}

class ThreadWorldTest : public testing::TestWithParam<std::tuple<const char *, const char *>> {};

TEST_P(ThreadWorldTest, ShardsTheCpuOptimizerAsMpiDoes) {
  auto [rule, layout] = GetParam();
  auto kernels = jitKernels(rule, {layout});
  optrt::OptimizerOptions options;
  options.layout = layout;
  options.threads = 1;
  options.chunkElements = kChunk;
  optrt::StepOptions clipped;
  clipped.maxGradNorm = 0.05;

  std::vector<std::vector<float>> reference = initialParams();
  optrt::Optimizer one(kernels, options);
  one.addGroup({reference[0].data(), reference[1].data(), reference[2].data()}, kSizes);
  for (int step = 0; step < 3; ++step) {
    std::vector<std::vector<float>> mean(kSizes.size());
    for (size_t t = 0; t < kSizes.size(); ++t)
      for (size_t i = 0; i < kSizes[t]; ++i) {
        float sum = 0;
        for (int r = 0; r < kRanks; ++r)
          sum += gradient(r, t, i, step);
        mean[t].push_back(sum / kRanks);
      }
    one.step({{mean[0].data(), mean[1].data(), mean[2].data()}}, step == 1 ? clipped : optrt::StepOptions{});
  }

  ThreadWorld world(kRanks);
  std::vector<std::vector<std::vector<float>>> params(kRanks, initialParams());
  world.run([&](int rank) {
    optrt::OptimizerOptions sharded = options;
    sharded.communicator = world.communicator(rank);
    optrt::Optimizer optimizer(kernels, sharded);
    std::vector<std::vector<float>> &mine = params[static_cast<size_t>(rank)];
    optimizer.addGroup({mine[0].data(), mine[1].data(), mine[2].data()}, kSizes);
    for (int step = 0; step < 3; ++step) {
      std::vector<std::vector<float>> grads(kSizes.size());
      for (size_t t = 0; t < kSizes.size(); ++t)
        for (size_t i = 0; i < kSizes[t]; ++i)
          grads[t].push_back(gradient(rank, t, i, step));
      optimizer.step({{grads[0].data(), grads[1].data(), grads[2].data()}},
                     step == 1 ? clipped : optrt::StepOptions{});
    }
  });
  for (int r = 0; r < kRanks; ++r)
    for (size_t t = 0; t < kSizes.size(); ++t)
      EXPECT_EQ(std::memcmp(params[r][t].data(), reference[t].data(), kSizes[t] * sizeof(float)), 0)
          << "rank " << r << " tensor " << t;
}

INSTANTIATE_TEST_SUITE_P(Rules, ThreadWorldTest,
                         testing::Combine(testing::Values("adamw", "lamb"), testing::Values("f32", "state=q8")));

} // namespace
} // namespace optdsl::test
