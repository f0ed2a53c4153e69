// The sharded step (ZeRO stage 1 over MPI), under mpirun: run it with
// `mpirun -np 1` and `-np 2` (docs/sharding.md). Per step it reports the
// time, the part spent in collectives (StepResult::communicationSeconds) and
// the rest (compute), and the bytes each rank sends by the ring algorithms'
// count: (N-1)/N of the gradients (reduce-scatter) plus (N-1)/N of the params
// (all-gather), i.e. the ZeRO paper's 2Ψ elements, as much as an all-reduce.
// With one rank it also runs the unsharded optimizer with every core, the
// baseline the sharded step is held to.
//
// Every rank must run the same iterations (the step is collective), so the
// iteration counts are fixed rather than chosen by time; only rank 0 prints.
#include "common/JitKernels.h"
#include "common/RandomValues.h"

#include "optrt/MpiCommunicator.h"
#include "optrt/Optimizer.h"
#include "optrt/Storage.h"

#include <benchmark/benchmark.h>
#include <mpi.h>

#include <random>
#include <thread>

namespace {

// What ranks other than 0 report: nothing.
class QuietReporter : public benchmark::BenchmarkReporter {
public:
  bool ReportContext(const Context &) override { return true; }
  void ReportRuns(const std::vector<Run> &) override {}
};

using optdsl::test::jitKernels;
using optdsl::test::normalValues;

constexpr size_t kElements = size_t{16} << 20; // flat16M: one tensor of 16M parameters
constexpr int kIterations = 20;

int worldSize() {
  int size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  return size;
}

unsigned cores() { return std::max(1u, std::thread::hardware_concurrency()); }

// sharded: over MPI_COMM_WORLD with cores / ranks threads per rank;
// otherwise one process with every core.
void BM_Step(benchmark::State &state, const char *rule, const char *layout, bool sharded) {
  auto kernels = jitKernels(rule, {"f32", "param=bf16,grad=bf16,master=f32"});
  optrt::OptimizerOptions options;
  options.layout = layout;
  int ranks = sharded ? worldSize() : 1;
  options.threads = std::max(1u, cores() / static_cast<unsigned>(ranks));
  if (sharded)
    options.communicator = optrt::mpiCommunicator(MPI_COMM_WORLD);
  // Params and gradients in the layout's storage.
  optrt::Layout parsed = optrt::Layout::parse(layout);
  std::mt19937 rng(1);
  std::vector<char> params(optrt::elementBytes(parsed.param, kElements)),
      grads(optrt::elementBytes(parsed.grad, kElements));
  optrt::encodeF32(parsed.param, normalValues(kElements, rng), params.data(), nullptr);
  optrt::encodeF32(parsed.grad, normalValues(kElements, rng, 0.01f), grads.data(), nullptr);
  optrt::Optimizer optimizer(kernels, options);
  optimizer.addGroupStored({params.data()}, {kElements});
  // One step first: page faults of the first step's scratch are not the step's cost.
  optimizer.stepStored({{grads.data()}});
  double comm = 0;
  for (auto _ : state) {
    optrt::StepResult result = optimizer.stepStored({{grads.data()}});
    comm += result.communicationSeconds;
  }
  double steps = static_cast<double>(state.iterations());
  state.counters["ranks"] = ranks;
  state.counters["threads_per_rank"] = options.threads;
  state.counters["comm_ms"] = comm / steps * 1e3;
  // Bytes each rank sends per step: gradients and params, (N-1)/N of each.
  double share = static_cast<double>(ranks - 1) / ranks;
  double sentBytes = share * static_cast<double>(optrt::elementBytes(parsed.grad, kElements) +
                                                 optrt::elementBytes(parsed.param, kElements));
  state.counters["sent_MB"] = sentBytes / 1e6;
  state.counters["comm_GBps"] = comm > 0 ? sentBytes * steps / comm / 1e9 : 0;
  state.counters["state_MB_per_rank"] = static_cast<double>(optimizer.stateBytes()) / 1e6;
}

} // namespace

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  benchmark::Initialize(&argc, argv);
  // f32, and bf16 params and gradients with an f32 master: half the bytes to move.
  for (const char *layout : {"f32", "param=bf16,grad=bf16,master=f32"})
    for (const char *rule : {"adamw", "ademamix"}) {
      std::string base = std::string("shard/") + rule + "/" + layout + "/flat16M/";
      if (worldSize() == 1)
        benchmark::RegisterBenchmark((base + "unsharded").c_str(), BM_Step, rule, layout, false)
            ->Iterations(kIterations)
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime();
      benchmark::RegisterBenchmark((base + "ranks" + std::to_string(worldSize())).c_str(), BM_Step, rule, layout,
                                   true)
          ->Iterations(kIterations)
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime();
    }
  if (rank == 0) {
    benchmark::RunSpecifiedBenchmarks();
  } else {
    QuietReporter quiet;
    benchmark::RunSpecifiedBenchmarks(&quiet);
  }
  benchmark::Shutdown();
  MPI_Finalize();
  return 0;
}
