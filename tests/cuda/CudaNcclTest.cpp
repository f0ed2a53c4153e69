// The NCCL engine on a real GPU: its division kernels (hand-written PTX)
// against the host's division in every dtype, bit for bit; and one rank of
// a real NCCL (several ranks need several GPUs), where libnccl.so.2 (or
// $OPTDSL_LIBNCCL) is installed: its collectives, and a CudaOptimizer
// sharded over it against one process. Skipped, with the reason, without
// them.
#include "GpuTestSupport.h"

#include "nccl/DivideKernels.h"
#include "nccl/NcclLibrary.h"
#include "optrt/CudaOptimizer.h"
#include "optrt/NcclCommunicator.h"
#include "optrt/Storage.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

namespace optdsl::gputest {
namespace {

using optrt::Dtype;

optrt::cuda::CUcontext currentContext(const optrt::cuda::Driver &d) {
  optrt::cuda::CUcontext context = nullptr;
  d.check(d.cuCtxGetCurrent(&context), "cuCtxGetCurrent");
  return context;
}

// Values of every magnitude a gradient sum has, both signs, and subnormals.
std::vector<float> sums(size_t n) {
  std::mt19937 rng(2026);
  std::uniform_real_distribution<float> exponent(-30, 30), sign(-1, 1);
  std::vector<float> values(n);
  for (float &v : values)
    v = std::copysign(std::exp2(exponent(rng)), sign(rng));
  values[0] = 1e-40f;
  values[1] = -3.0f;
  return values;
}

TEST(NcclDivision, IsTheHostsDivisionInEveryDtype) {
  OPTDSL_REQUIRE_GPU();
  std::string why;
  const optrt::cuda::Driver &d = *gpu(why);
  optrt::nccl::DivideKernels kernels(d, currentContext(d));
  size_t n = 300000; // more than the grid: the stride loop runs
  std::vector<float> values = sums(n);
  for (Dtype dtype : {Dtype::F32, Dtype::BF16, Dtype::F16})
    for (float divisor : {3.0f, 7.0f}) {
      SCOPED_TRACE(optrt::dtypeName(dtype) + " / " + std::to_string(divisor));
      StoredArray array(dtype, values, false);
      kernels.divide(array.address(), n, dtype, divisor, nullptr);
      d.check(d.cuCtxSynchronize(), "cuCtxSynchronize");
      std::vector<float> stored = decoded(dtype, array.host, n), expected(n);
      for (size_t i = 0; i < n; ++i)
        expected[i] = stored[i] / divisor;
      std::vector<uint8_t> expectedBytes(optrt::elementBytes(dtype, n));
      optrt::encodeF32(dtype, expected, expectedBytes.data(), nullptr);
      EXPECT_EQ(firstDifference(decoded(dtype, array.downloaded(), n), decoded(dtype, expectedBytes, n)), -1);
    }
}

/// A real NCCL communicator of one rank on the current GPU, and the library;
/// null (with `why`) when NCCL cannot be loaded.
ncclComm_t oneRank(const optrt::nccl::Library *&nccl, std::string &why) {
  try {
    nccl = &optrt::nccl::library();
  } catch (const std::exception &e) {
    why = e.what();
    return nullptr;
  }
  optrt::nccl::UniqueId id{};
  nccl->check(nccl->ncclGetUniqueId(&id), "ncclGetUniqueId");
  ncclComm_t comm = nullptr;
  nccl->check(nccl->ncclCommInitRank(&comm, 1, id, 0), "ncclCommInitRank");
  return comm;
}

TEST(NcclOneRank, CollectivesOnTheGpu) {
  OPTDSL_REQUIRE_GPU();
  std::string why;
  const optrt::cuda::Driver &d = *gpu(why);
  const optrt::nccl::Library *nccl = nullptr;
  ncclComm_t comm = oneRank(nccl, why);
  if (!comm)
    GTEST_SKIP() << "no NCCL: " << why;
  {
    std::shared_ptr<optrt::Communicator> engine = optrt::ncclCommunicator(comm);
    EXPECT_EQ(engine->size(), 1);
    EXPECT_EQ(engine->memory(), optrt::Communicator::Memory::Device);
    double record = 2.5, all = 0;
    engine->allGather(&record, &all, sizeof record);
    EXPECT_EQ(all, 2.5);
    std::vector<float> values = sums(1000), got(1000);
    DeviceFloats send(1000), recv(1000);
    send.upload(0, values.data(), values.size());
    size_t counts[] = {1000};
    for (auto reduction : {optrt::Communicator::Reduction::Sum, optrt::Communicator::Reduction::Average}) {
      engine->reduceScatter(reinterpret_cast<void *>(send.at(0)), reinterpret_cast<void *>(recv.at(0)), counts,
                            Dtype::F32, reduction, nullptr);
      d.check(d.cuCtxSynchronize(), "cuCtxSynchronize");
      recv.download(0, got.data(), got.size());
      EXPECT_EQ(firstDifference(got, values), -1); // the sum and mean of one rank
    }
    size_t bytes[] = {4000};
    engine->allGatherInPlace(reinterpret_cast<void *>(recv.at(0)), bytes, nullptr);
    d.check(d.cuCtxSynchronize(), "cuCtxSynchronize");
    recv.download(0, got.data(), got.size());
    EXPECT_EQ(firstDifference(got, values), -1);
  }
  nccl->check(nccl->ncclCommDestroy(comm), "ncclCommDestroy");
}

// A CudaOptimizer sharded over one real NCCL rank steps as one process, bit
// for bit (the NCCL path of the step: reduce-scatter, gathers, all-gather).
TEST(NcclOneRank, ShardedCudaOptimizerStepsAsOneProcess) {
  OPTDSL_REQUIRE_GPU();
  std::string why;
  const optrt::nccl::Library *nccl = nullptr;
  ncclComm_t comm = oneRank(nccl, why);
  if (!comm)
    GTEST_SKIP() << "no NCCL: " << why;
  const CompiledRule &rule = compiledRule("lamb"); // per-tensor reductions: partials gathered
  std::vector<size_t> sizes = {70001, 300};
  std::vector<std::vector<float>> initial = {sums(70001), sums(300)};
  std::vector<std::vector<float>> after;
  for (bool sharded : {false, true}) {
    optrt::CudaOptimizerOptions options;
    if (sharded)
      options.communicator = optrt::ncclCommunicator(comm);
    optrt::CudaOptimizer optimizer(rule.host, rule.device, options);
    std::vector<DeviceFloats> params, grads;
    std::vector<optrt::DevicePtr> paramPointers, gradPointers;
    for (size_t t = 0; t < sizes.size(); ++t) {
      params.emplace_back(sizes[t]);
      params.back().upload(0, initial[t].data(), sizes[t]);
      paramPointers.push_back(params.back().at(0));
      std::vector<float> g = sums(sizes[t]);
      for (float &x : g)
        x *= 1e-20f;
      grads.emplace_back(sizes[t]);
      grads.back().upload(0, g.data(), sizes[t]);
      gradPointers.push_back(grads.back().at(0));
    }
    optimizer.addGroup(paramPointers, sizes);
    for (int step = 0; step < 3; ++step)
      optimizer.step({gradPointers});
    optimizer.stepCount();
    for (size_t t = 0; t < sizes.size(); ++t) {
      std::vector<float> values(sizes[t]);
      params[t].download(0, values.data(), sizes[t]);
      if (!sharded)
        after.push_back(values);
      else
        EXPECT_EQ(firstDifference(values, after[t]), -1) << "tensor " << t;
    }
  }
  nccl->check(nccl->ncclCommDestroy(comm), "ncclCommDestroy");
}

} // namespace
} // namespace optdsl::gputest
