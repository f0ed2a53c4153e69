// Optimizer step speed on the CPU: `step/<rule>/<layout>/<shape>`. Each
// benchmark reports GBps (the step's minimal bytes / time) and roofline:
// GBps / the GBps of a same-traffic kernel measured in the same process — a
// loop over the same streams that reads and writes exactly the bytes the step
// must, with trivial arithmetic, on the same number of threads.
#include "optdsl/JIT.h"
#include "optrt/Optimizer.h"

#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>

#include <sys/mman.h>
#include <vector>

namespace {

/// Buffers on 2 MiB boundaries with transparent huge pages requested, as a
/// training framework's allocator gives them (PyTorch's does): on kernels
/// whose THP mode is "madvise", 4 KiB pages would cost bandwidth in the
/// optimizer and the same-traffic kernel alike.
struct HugeDelete {
  void operator()(float *p) const { ::operator delete(p, std::align_val_t(2u << 20)); }
};
using HugeBuffer = std::unique_ptr<float[], HugeDelete>;

HugeBuffer hugeBuffer(size_t elements) {
  size_t bytes = std::max<size_t>(elements * sizeof(float), 1);
  auto *p = static_cast<float *>(::operator new(bytes, std::align_val_t(2u << 20)));
  madvise(p, bytes / (2u << 20) * (2u << 20), MADV_HUGEPAGE);
  return HugeBuffer(p);
}

/// Tensor sizes of a model.
std::vector<size_t> shape(const std::string &name) {
  if (name == "flat16M")
    return {16777216};
  // GPT-2 small (124M parameters), as in its PyTorch state dict.
  std::vector<size_t> sizes{50257 * 768, 1024 * 768};
  for (int layer = 0; layer < 12; ++layer)
    for (size_t size : {768, 768, 768 * 2304, 2304, 768 * 768, 768, 768, 768, 768 * 3072, 3072,
                        3072 * 768, 768})
      sizes.push_back(size);
  sizes.push_back(768);
  sizes.push_back(768);
  return sizes;
}

/// Which f32 streams one step of a rule must touch, per element (hypers
/// fixed as in the benchmark: AdamW without amsgrad).
struct Traffic {
  int readOnly;  // grad
  int readWrite; // param and the states the step updates
};

const std::map<std::string, Traffic> kTraffic = {
    {"adamw", {1, 3}},    // grad; param, exp_avg, exp_avg_sq: 28 B/param
    {"ademamix", {1, 4}}, // grad; param, m1, m2, nu: 36 B/param
    {"lion", {1, 2}},     // grad; param, exp_avg: 20 B/param
};

const std::map<std::string, std::map<std::string, double>> kFixedHypers = {
    {"adamw", {{"amsgrad", 0}}}, {"ademamix", {}}, {"lion", {}}};

unsigned benchThreads() { return std::max(1u, std::thread::hardware_concurrency()); }

/// Streams for the same-traffic kernel, first-touched by the threads that
/// will use them (as the optimizer's own buffers are written by its pool).
struct Streams {
  std::vector<HugeBuffer> readOnly, readWrite;
  size_t size;
};

template <typename Body> void parallelFor(size_t size, unsigned threads, Body body) {
  std::vector<std::thread> pool;
  size_t per = (size + threads - 1) / threads;
  for (unsigned t = 0; t < threads; ++t)
    pool.emplace_back([=] { body(std::min(size, t * per), std::min(size, (t + 1) * per)); });
  for (auto &thread : pool)
    thread.join();
}

/// One pass: each element of every stream read once, each read-write
/// stream written once (x += g), exactly the traffic the step must have.
template <int ReadWrite> void sameTrafficPass(Streams &s, size_t begin, size_t end) {
  const float *g = s.readOnly[0].get();
  float *x[ReadWrite];
  for (int k = 0; k < ReadWrite; ++k)
    x[k] = s.readWrite[k].get();
#pragma GCC ivdep
  for (size_t i = begin; i < end; ++i)
    for (int k = 0; k < ReadWrite; ++k)
      x[k][i] += g[i];
}

void sameTraffic(Streams &s, unsigned threads) {
  parallelFor(s.size, threads, [&](size_t begin, size_t end) {
    switch (s.readWrite.size()) {
    case 2: sameTrafficPass<2>(s, begin, end); break;
    case 3: sameTrafficPass<3>(s, begin, end); break;
    case 4: sameTrafficPass<4>(s, begin, end); break;
    default: throw std::logic_error("same-traffic kernel: unsupported stream count");
    }
  });
}

/// Mean GBps of the same-traffic kernel over `passes` passes — the same
/// statistic as the step's, measured right after it.
double sameTrafficGBps(const Traffic &traffic, size_t elements, unsigned threads, int64_t passes) {
  Streams s;
  s.size = elements;
  for (int i = 0; i < traffic.readOnly; ++i)
    s.readOnly.push_back(hugeBuffer(elements));
  for (int i = 0; i < traffic.readWrite; ++i)
    s.readWrite.push_back(hugeBuffer(elements));
  parallelFor(elements, threads, [&](size_t begin, size_t end) {
    for (auto *group : {&s.readOnly, &s.readWrite})
      for (auto &stream : *group)
        std::fill(stream.get() + begin, stream.get() + end, 1e-3f);
  });
  sameTraffic(s, threads); // warm
  double bytes = 4.0 * elements * (traffic.readOnly + 2 * traffic.readWrite);
  auto start = std::chrono::steady_clock::now();
  for (int64_t pass = 0; pass < passes; ++pass)
    sameTraffic(s, threads);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return bytes * static_cast<double>(passes) / seconds / 1e9;
}

void BM_Step(benchmark::State &state, const std::string &rule, const std::string &shapeName) {
  std::vector<size_t> sizes = shape(shapeName);
  size_t elements = 0;
  for (size_t size : sizes)
    elements += size;
  unsigned threads = benchThreads();
  auto kernels = optdsl::jitCompileFile(std::string(OPTDSL_DSL_DIR) + "/" + rule + ".opt",
                                        kFixedHypers.at(rule));
  optrt::Optimizer optimizer(kernels, {threads});
  std::vector<HugeBuffer> params, grads;
  std::mt19937 rng(42);
  std::normal_distribution<float> normal;
  std::vector<float *> paramPointers;
  std::vector<const float *> gradPointers;
  for (size_t size : sizes) {
    params.push_back(hugeBuffer(size));
    grads.push_back(hugeBuffer(size));
    std::fill(params.back().get(), params.back().get() + size, 0.0f);
    std::fill(grads.back().get(), grads.back().get() + size, 0.0f);
    for (size_t i = 0; i < size; i += 97) { // sparse values: setup time, not realism
      params.back()[i] = normal(rng);
      grads.back()[i] = normal(rng) * 1e-2f;
    }
    paramPointers.push_back(params.back().get());
    gradPointers.push_back(grads.back().get());
  }
  optimizer.addGroup(paramPointers, sizes);
  optimizer.step({gradPointers}); // warm: first touch of the state arena
  auto start = std::chrono::steady_clock::now();
  for (auto _ : state)
    optimizer.step({gradPointers});
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const Traffic &traffic = kTraffic.at(rule);
  double bytesPerStep = 4.0 * elements * (traffic.readOnly + 2 * traffic.readWrite);
  double gbps = bytesPerStep * static_cast<double>(state.iterations()) / seconds / 1e9;
  double rooflineGBps = sameTrafficGBps(traffic, elements, threads, state.iterations());
  state.counters["GBps"] = gbps;
  state.counters["roofline"] = gbps / rooflineGBps;
  state.counters["same_traffic_GBps"] = rooflineGBps;
  state.counters["bytes_per_param"] = bytesPerStep / static_cast<double>(elements);
  state.counters["threads"] = threads;
}

void registerAll() {
  for (const char *rule : {"adamw", "ademamix", "lion"})
    for (const char *shapeName : {"flat16M", "gpt2s"})
      benchmark::RegisterBenchmark(("step/" + std::string(rule) + "/f32/" + shapeName).c_str(),
                                   BM_Step, rule, shapeName)
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime()
          ->MinTime(2.0);
}

const bool registered = (registerAll(), true);

} // namespace
