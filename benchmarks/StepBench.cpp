// Optimizer step speed on the CPU: `step/<rule>/<layout>/<shape>`. Each
// benchmark reports GBps (the step's minimal bytes / time) and roofline:
// GBps / the GBps of a same-traffic kernel measured in the same process — a
// loop over the same streams that reads and writes exactly the bytes the step
// must under the layout (2-byte params, 1-byte q8 codes plus their absmax,
// ...), with trivial arithmetic, on the same number of threads and the same
// thread pool, timed in alternation with the step (see BM_Step). Also
// bytes_per_param (moved per step) and state_bytes_per_param (resident
// optimizer state, Optimizer::memoryReport).
//
// `step/<rule>/<layout>/<shape>/checked` and `.../clipped` run the step with
// the non-finite check (StepOptions::checkFinite) or clipping by global norm
// (maxGradNorm, small enough that every step clips): both read every
// gradient once before the rule's pass, so their same-traffic kernel moves
// the step's bytes plus one more read of the gradients.
//
// `step/sophia/<layout>/<shape>/given` passes Sophia's Hessian estimate (an
// input, read like a gradient); `.../plain` does not (the steps between
// refreshes), and reads no byte of it.
//
// Adafactor and CAME read tensors as matrices and take several passes over
// the elements (row and column means first, then the update's RMS, then the
// update): their same-traffic kernel moves the bytes of all their passes
// (kMatrixPassStreams, LayoutStreams.h), and their tensors carry shapes
// (gpt2s: GPT-2 small's; square16M: one 4096 x 4096 matrix).
#include "optdsl/JIT.h"
#include "optrt/MemoryReport.h"
#include "LayoutStreams.h"
#include "optrt/Optimizer.h"
#include "optrt/Storage.h"

#include "ThreadPool.h" // the runtime's own pool, so both kernels are scheduled alike

#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
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

/// Tensor sizes of a model. `cached32K`: one tensor small enough for every
/// layout's buffers to stay in L2 (at most 1.2 MiB), stepped on one thread:
/// what a step costs in instructions, not in memory traffic.
std::vector<size_t> shape(const std::string &name) {
  if (name == "flat16M" || name == "square16M")
    return {16777216};
  if (name == "cached32K" || name == "cachedMatrix32K")
    return {32768};
  // GPT-2 small (124M parameters), as in its PyTorch state dict.
  return optrt::gpt2SmallTensorSizes();
}

/// The tensors' shapes (empty: every tensor 1-D).
std::vector<std::vector<size_t>> shapesOf(const std::string &name) {
  if (name == "square16M")
    return {{4096, 4096}};
  if (name == "cachedMatrix32K")
    return {{64, 512}};
  if (name == "gpt2s")
    return optrt::gpt2SmallTensorShapes();
  return {};
}

const std::map<std::string, std::map<std::string, double>> kFixedHypers = {
    {"adamw", {{"amsgrad", 0}}}, {"ademamix", {}}, {"lion", {}}, {"adam_atan2", {}}, {"lookahead_adamw", {}},
    {"adamw_clip", {}}, {"sophia", {}}, {"lamb", {}},
    // transformers' default (beta1=None): no momentum is read.
    {"adafactor", {{"beta1", 0}}}, {"came", {}}};

const std::vector<std::string> kLayouts = {"f32",
                                           "state=bf16",
                                           "state=q8",
                                           "param=bf16,master=f32",
                                           "param=bf16,grad=bf16,master=f32",
                                           "param=bf16,master=remainder",
                                           "param=bf16,master=f32,state=q8"};

/// The layouts of the rules that read matrices: their momentum in f32, bf16
/// and q8 (the states per row and column stay f32; tensors under 4096
/// elements keep a q8 momentum in f32, which the streams do not count: a
/// few KB of GPT-2 small's biases and norms).
const std::vector<std::string> kMatrixLayouts = {"f32", "state=bf16", "state=q8"};

unsigned benchThreads() { return std::max(1u, std::thread::hardware_concurrency()); }

using optdsl::bench::Stream;
using optdsl::bench::streamsOf;
using optdsl::bench::bytesPerParam;
using optdsl::bench::kMatrixPassStreams;

/// Splits [0, size) into one contiguous range per thread of the pool, as a
/// hand-written OpenMP loop would (schedule(static)); body gets the share too.
template <typename Body> void parallelFor(optrt::ThreadPool &pool, size_t size, Body body) {
  size_t shares = pool.numThreads();
  auto task = [&](size_t share) { body(share, share * size / shares, (share + 1) * size / shares); };
  pool.parallelFor(shares, task);
}

/// The same-traffic kernel's memory: each stream as 32-bit words
/// (elements x bytes per element / 4), first-touched by the threads that
/// use it.
struct Streams {
  std::vector<HugeBuffer> data;
  std::vector<size_t> words;
  std::vector<bool> read, written;
};

/// One pass over thread's share [begin, end) of the elements, stream by
/// stream: read-only streams summed, read-write ones updated (x += 1e-3),
/// write-only ones filled. One stream after another is the strictest
/// reference we tried on this machine: against a loop touching all streams
/// per element (as the fused step does) the f32 steps measured 0.98-1.03,
/// against this one 0.93-1.04, and streams advancing together in blocks of
/// 2048 elements made a weak reference (steps at 1.33 of it).
/// The bytes are exactly the step's; the reads of read-only streams feed a
/// sum that is stored so they cannot be removed.
void sameTrafficPass(Streams &s, size_t begin, size_t end, size_t elements, float *sink) {
  // An integer xor: a float sum would be one long dependency chain (no
  // reassociation without fast-math) and make the reference compute-bound.
  uint32_t sum = 0;
  for (size_t k = 0; k < s.data.size(); ++k) {
    size_t from = s.words[k] * begin / elements, to = s.words[k] * end / elements;
    float *x = s.data[k].get();
    if (s.written[k] && s.read[k]) {
#pragma GCC ivdep
      for (size_t i = from; i < to; ++i)
        x[i] += 1e-3f;
    } else if (s.written[k]) {
      std::fill(x + from, x + to, 1e-3f);
    } else {
      const uint32_t *words = reinterpret_cast<const uint32_t *>(x);
      for (size_t i = from; i < to; ++i)
        sum ^= words[i];
    }
  }
  std::memcpy(sink, &sum, sizeof sum);
}

/// The same-traffic kernel of a layout's streams over `elements`, its
/// memory first-touched by the pool's threads (as the optimizer's arena is).
class SameTraffic {
public:
  SameTraffic(const std::vector<Stream> &streams, size_t elements, optrt::ThreadPool &pool)
      : elements_(elements), pool_(pool), sinks_(pool.numThreads() * 16) {
    for (const Stream &stream : streams) {
      size_t words = static_cast<size_t>(stream.bytesPerElement * static_cast<double>(elements) / 4 + 0.5);
      s_.data.push_back(hugeBuffer(words));
      s_.words.push_back(words);
      s_.read.push_back(stream.read);
      s_.written.push_back(stream.written);
    }
    parallelFor(pool_, elements_, [&](size_t, size_t begin, size_t end) {
      for (size_t k = 0; k < s_.data.size(); ++k)
        std::fill(s_.data[k].get() + s_.words[k] * begin / elements_,
                  s_.data[k].get() + s_.words[k] * end / elements_, 1e-3f);
    });
  }

  void pass() {
    parallelFor(pool_, elements_, [&](size_t share, size_t begin, size_t end) {
      sameTrafficPass(s_, begin, end, elements_, &sinks_[share * 16]);
    });
    benchmark::DoNotOptimize(sinks_.data());
  }

private:
  Streams s_;
  size_t elements_;
  optrt::ThreadPool &pool_;
  std::vector<float> sinks_;
};

template <typename Fn> double secondsOf(Fn &&fn) {
  auto start = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

double median(std::vector<double> values) {
  std::nth_element(values.begin(), values.begin() + values.size() / 2, values.end());
  return values[values.size() / 2];
}

std::shared_ptr<const optrt::RuleKernels> kernelsFor(const std::string &rule) {
  // Never destroyed: JIT engines torn down during static destruction would
  // run after LLVM's own globals are gone.
  static auto &cache = *new std::map<std::string, std::shared_ptr<const optrt::RuleKernels>>();
  auto &slot = cache[rule];
  if (!slot)
    slot = optdsl::jitCompileFile(std::string(OPTDSL_DSL_DIR) + "/" + rule + ".opt", kFixedHypers.at(rule),
                                  kMatrixPassStreams.count(rule) ? kMatrixLayouts : kLayouts);
  return slot;
}

/// Each iteration times one optimizer step and then one pass of the
/// same-traffic kernel on a pool of as many threads, so both see the same
/// machine (on a shared VM the load drifts within seconds); roofline is the
/// ratio of the two medians. The reported time is the step's.
void BM_Step(benchmark::State &state, const std::string &rule, const std::string &layoutText,
             const std::string &shapeName, const std::string &mode) {
  std::vector<size_t> sizes = shape(shapeName);
  size_t elements = 0;
  for (size_t size : sizes)
    elements += size;
  unsigned threads = shapeName.rfind("cached", 0) == 0 ? 1 : benchThreads();
  auto kernels = kernelsFor(rule);
  optrt::Optimizer optimizer(kernels, {.threads = threads, .layout = layoutText});
  optrt::Layout layout = optrt::Layout::parse(layoutText);
  std::vector<HugeBuffer> params, grads, inputs;
  std::mt19937 rng(42);
  std::normal_distribution<float> normal;
  std::vector<void *> paramPointers;
  std::vector<const void *> gradPointers, inputPointers;
  for (size_t size : sizes) {
    std::vector<float> p(size, 0.0f), g(size, 0.0f);
    for (size_t i = 0; i < size; i += 97) { // sparse values: setup time, not realism
      p[i] = normal(rng);
      g[i] = normal(rng) * 1e-2f;
    }
    params.push_back(hugeBuffer(size));
    grads.push_back(hugeBuffer(size));
    optrt::encodeF32(layout.param, p, params.back().get(), nullptr);
    optrt::encodeF32(layout.grad, g, grads.back().get(), nullptr);
    paramPointers.push_back(params.back().get());
    gradPointers.push_back(grads.back().get());
    if (mode == "given") {
      for (float &x : g)
        x *= x;
      inputs.push_back(hugeBuffer(size));
      optrt::encodeF32(layout.grad, g, inputs.back().get(), nullptr);
      inputPointers.push_back(inputs.back().get());
    }
  }
  optimizer.addGroupStored(paramPointers, sizes, {}, shapesOf(shapeName));
  const optrt::LayoutKernels *chosen = nullptr;
  for (const auto &candidate : kernels->layouts)
    if (candidate.name == layout.str())
      chosen = &candidate;
  std::vector<Stream> streams =
      kMatrixPassStreams.count(rule) ? optdsl::bench::matrixPassStreams(rule, layout) : streamsOf(*chosen, mode == "given");
  optrt::StepOptions options;
  if (mode == "given") {
    for (const optrt::InputInfo &input : kernels->inputs)
      options.inputs.push_back({input.name, {inputPointers}});
  } else if (mode != "plain") {
    streams.push_back({static_cast<double>(optrt::elementBytes(layout.grad, 1)), true, false});
    if (mode == "clipped")
      options.maxGradNorm = 1e-6;
    else
      options.checkFinite = true;
  }
  optrt::ThreadPool pool(threads);
  SameTraffic sameTraffic(streams, elements, pool);
  optimizer.stepStored({gradPointers}, options); // warm: first touch of the state arena
  sameTraffic.pass();
  std::vector<double> stepSeconds, sameTrafficSeconds;
  for (auto _ : state) {
    double seconds = secondsOf([&] { optimizer.stepStored({gradPointers}, options); });
    state.SetIterationTime(seconds);
    stepSeconds.push_back(seconds);
    sameTrafficSeconds.push_back(secondsOf([&] { sameTraffic.pass(); }));
  }
  double bytesPerStep = bytesPerParam(streams) * static_cast<double>(elements);
  double gbps = bytesPerStep / median(stepSeconds) / 1e9;
  double rooflineGBps = bytesPerStep / median(sameTrafficSeconds) / 1e9;
  optrt::MemoryReport memory = optimizer.memoryReport();
  state.counters["GBps"] = gbps;
  state.counters["roofline"] = gbps / rooflineGBps;
  state.counters["same_traffic_GBps"] = rooflineGBps;
  state.counters["bytes_per_param"] = bytesPerStep / static_cast<double>(elements);
  state.counters["state_bytes_per_param"] = memory.state;
  state.counters["threads"] = threads;
  state.counters["ns_per_param"] = median(stepSeconds) * 1e9 / static_cast<double>(elements);
}

void registerAll() {
  // OPTDSL_BENCH_MIN_TIME (seconds) shortens runs on a shared machine.
  const char *minTime = std::getenv("OPTDSL_BENCH_MIN_TIME");
  double seconds = minTime ? std::atof(minTime) : 2.0;
  // step/<rule>/<layout>/<shape>, with /<mode> unless plain (Sophia's
  // plain is named too, beside its given).
  auto add = [&](const std::string &rule, const std::string &layout, const std::string &shapeName,
                 const std::string &mode, bool nameMode) {
    std::string name = "step/" + rule + "/" + layout + "/" + shapeName + (nameMode ? "/" + mode : "");
    benchmark::RegisterBenchmark(name.c_str(), BM_Step, rule, layout, shapeName, mode)
        ->Unit(benchmark::kMillisecond)
        ->UseManualTime()
        ->MinTime(seconds);
  };
  for (const char *rule : {"adamw", "ademamix", "lion", "adam_atan2", "lookahead_adamw", "adamw_clip", "lamb"})
    for (const std::string &layout : kLayouts)
      for (const char *shapeName : {"flat16M", "gpt2s", "cached32K"})
        add(rule, layout, shapeName, "plain", false);
  for (const char *rule : {"adafactor", "came"})
    for (const std::string &layout : kMatrixLayouts)
      for (const char *shapeName : {"square16M", "gpt2s", "cachedMatrix32K"})
        add(rule, layout, shapeName, "plain", false);
  for (const char *layout : {"f32", "param=bf16,grad=bf16,master=f32", "state=q8"}) {
    for (const char *mode : {"plain", "given"})
      add("sophia", layout, "flat16M", mode, true);
    for (const char *mode : {"checked", "clipped"})
      add("adamw", layout, "flat16M", mode, true);
  }
}

const bool registered = (registerAll(), true);

} // namespace
