// Optimizer step speed on the GPU: `step/<rule>/<layout>/<shape>`, run by
// optrt::CudaOptimizer on GPU 0 with one device allocation per tensor (as a
// framework's allocator gives them), params and gradients stored in the
// layout's dtypes. Counters: GBps (the step's minimal bytes / time: the
// streams of LayoutStreams.h, each tensor in the layout it runs),
// same_traffic_GBps (the same-traffic kernel of SameTrafficKernel.h moving
// exactly those streams, in the same process right after) and roofline =
// GBps / same_traffic_GBps; copy_GBps (a device-to-device copy of as many
// bytes: the bandwidth ceiling) and copy_roofline; bytes_per_param (the
// traffic) and state_bytes_per_param (resident master + states,
// memoryReport). Each iteration is one step followed by a context
// synchronize, timed on the host (a step is ~1 ms at 124M params, the
// synchronize some microseconds). Adafactor and CAME, which read tensors as
// matrices, take several passes: GPT-2 small's shapes, and the streams of
// all their passes (kMatrixPassStreams). Exits with a message where there
// is no GPU.
#include "common/RuleLibrary.h"
#include "optdsl/CUDACompile.h"
#include "optdsl/JIT.h"
#include "optrt/CudaOptimizer.h"
#include "optrt/Layout.h"
#include "optrt/MemoryReport.h"
#include "optrt/Storage.h"

#include "LayoutStreams.h"
#include "SameTrafficKernel.h"

#include "cuda/DeviceMemory.h"
#include "cuda/Driver.h"
#include "nccl/NcclLibrary.h"
#include "optrt/NcclCommunicator.h"

#include <benchmark/benchmark.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <string>
#include <vector>

namespace {

using namespace optrt::cuda;
namespace bench = optdsl::bench;

/// Tensor sizes of a model, as in its PyTorch state dict.
std::vector<size_t> shape(const std::string &name) {
  // GPT-2 small (124M) and a GPT-3 XL-like 1.3B (d 2048, 24 layers, 2048 context).
  size_t d = name == "gpt2s" ? 768 : 2048, layers = name == "gpt2s" ? 12 : 24,
         context = name == "gpt2s" ? 1024 : 2048;
  std::vector<size_t> sizes{50257 * d, context * d};
  for (size_t layer = 0; layer < layers; ++layer)
    for (size_t size : {d, d, d * 3 * d, 3 * d, d * d, d, d, d, d * 4 * d, 4 * d, 4 * d * d, d})
      sizes.push_back(size);
  sizes.push_back(d);
  sizes.push_back(d);
  return sizes;
}

/// The layouts measured: f32 (torch's fused AdamW's peer), 16-bit states,
/// q8 states (bitsandbytes' 8-bit optimizers' peer), bf16 params with an f32
/// or a 16-bit-remainder master.
const std::vector<std::string> kLayouts = {"f32", "state=bf16", "state=q8", "param=bf16,master=f32",
                                           "param=bf16,master=f32,state=q8",
                                           "param=bf16,grad=bf16,master=remainder,state=q8"};

const std::map<std::string, std::map<std::string, double>> kFixedHypers = {
    {"adamw", {{"amsgrad", 0}}}, {"ademamix", {}},
    // transformers' default (beta1=None): no momentum is read.
    {"adafactor", {{"beta1", 0}}}, {"came", {}}};

struct Gpu {
  const Driver *d = nullptr;
  CUcontext context = nullptr;
  std::string name;
};

Gpu &gpu() {
  static Gpu g = [] {
    Gpu g;
    g.d = &driver();
    CUdevice device = 0;
    g.d->check(g.d->cuDeviceGet(&device, 0), "cuDeviceGet");
    g.d->check(g.d->cuDevicePrimaryCtxRetain(&g.context, device), "cuDevicePrimaryCtxRetain");
    g.d->check(g.d->cuCtxPushCurrent_v2(g.context), "cuCtxPushCurrent_v2");
    return g;
  }();
  return g;
}

/// GBps of `run` moving `bytes` each time: once to warm up, then
/// `repetitions` times between two synchronizes, on the host clock.
template <typename Run> double timedGBps(double bytes, int repetitions, Run run) {
  const Driver &d = *gpu().d;
  run();
  d.check(d.cuCtxSynchronize(), "cuCtxSynchronize");
  auto start = std::chrono::steady_clock::now();
  for (int r = 0; r < repetitions; ++r)
    run();
  d.check(d.cuCtxSynchronize(), "cuCtxSynchronize");
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return bytes * repetitions / seconds / 1e9;
}

/// GBps of cuMemcpyDtoD moving `bytes` in total (bytes / 2 read, bytes / 2
/// written), through one pair of buffers of at most 2 GiB reused, so the
/// ceiling costs no more memory than it must.
double copyGBps(double bytes, int repetitions) {
  const Driver &d = *gpu().d;
  size_t half = static_cast<size_t>(bytes / 2);
  size_t piece = std::min<size_t>(half, size_t(2) << 30);
  DeviceMemory from(d, gpu().context, piece, "copy source"), to(d, gpu().context, piece, "copy target");
  auto copyAll = [&] {
    for (size_t done = 0; done < half; done += piece)
      d.check(d.cuMemcpyDtoD_v2(to.get(), from.get(), std::min(piece, half - done)), "cuMemcpyDtoD_v2");
  };
  return timedGBps(2.0 * static_cast<double>(half), repetitions, copyAll);
}

/// GBps of the same-traffic kernel (SameTrafficKernel.h) over `streams`
/// (each with its tensor's element count), in fresh device memory: the
/// layout's step without its arithmetic.
double sameTrafficGBps(const std::vector<std::pair<bench::Stream, size_t>> &streams, int repetitions) {
  const Driver &d = *gpu().d;
  CUdevice device = 0;
  int major = 0, multiprocessors = 1;
  d.check(d.cuCtxGetDevice(&device), "cuCtxGetDevice");
  d.check(d.cuDeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, device), "cuDeviceGetAttribute");
  d.check(d.cuDeviceGetAttribute(&multiprocessors, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, device),
          "cuDeviceGetAttribute");
  static std::map<std::string, std::string> ptxByArch;
  std::string arch = major >= 9 ? "sm_90" : "sm_80";
  if (!ptxByArch.count(arch))
    ptxByArch[arch] = bench::sameTrafficPtx(arch);
  CUmodule module = nullptr;
  d.check(d.cuModuleLoadDataEx(&module, ptxByArch[arch].c_str(), 0, nullptr, nullptr), "cuModuleLoadDataEx");
  CUfunction kernel = nullptr;
  d.check(d.cuModuleGetFunction(&kernel, module, bench::kSameTrafficEntry), "cuModuleGetFunction");
  // One allocation, each stream on its own 256-byte boundary; its bytes
  // rounded up to whole 16-byte words.
  std::vector<size_t> words;
  size_t bytes = 0;
  double moved = 0;
  for (const auto &[stream, n] : streams) {
    words.push_back((static_cast<size_t>(std::ceil(stream.bytesPerElement * static_cast<double>(n))) + 15) / 16);
    bytes += (words.back() * 16 + 255) / 256 * 256;
    moved += static_cast<double>(words.back() * 16) * ((stream.read ? 1 : 0) + (stream.written ? 1 : 0));
  }
  DeviceMemory memory(d, gpu().context, bytes, "same-traffic streams");
  d.check(d.cuMemsetD32_v2(memory.get(), 0, bytes / 4), "cuMemsetD32_v2");
  std::vector<int64_t> records;
  CUdeviceptr at = memory.get();
  for (size_t i = 0; i < streams.size(); ++i) {
    records.insert(records.end(), {static_cast<int64_t>(at), static_cast<int64_t>(words[i]),
                                   streams[i].first.read ? 1 : 0, streams[i].first.written ? 1 : 0});
    at += (words[i] * 16 + 255) / 256 * 256;
  }
  DeviceMemory table(d, gpu().context, records.size() * sizeof(int64_t) + 16, "same-traffic table");
  d.check(d.cuMemcpyHtoDAsync_v2(table.get(), records.data(), records.size() * sizeof(int64_t), nullptr),
          "cuMemcpyHtoDAsync_v2");
  CUdeviceptr recordsAt = table.get(), sink = table.get() + records.size() * sizeof(int64_t);
  auto numStreams = static_cast<int64_t>(streams.size());
  void *args[] = {&recordsAt, &numStreams, &sink};
  auto launch = [&] {
    d.check(d.cuLaunchKernel(kernel, static_cast<unsigned>(multiprocessors * 8), 1, 1, 256, 1, 1, 0, nullptr, args,
                             nullptr),
            "cuLaunchKernel(optdsl_same_traffic)");
  };
  double gbps = timedGBps(moved, repetitions, launch);
  d.check(d.cuModuleUnload(module), "cuModuleUnload");
  return gbps;
}

/// A device buffer of n elements of `dtype`, every element `value`.
DeviceMemory filled(optrt::Dtype dtype, size_t n, float value, const char *what) {
  const Driver &d = *gpu().d;
  size_t words = (optrt::elementBytes(dtype, n) + 3) / 4;
  DeviceMemory memory(d, gpu().context, words * 4, what);
  uint32_t pattern = 0;
  if (dtype == optrt::Dtype::F32) {
    std::memcpy(&pattern, &value, 4);
  } else {
    uint16_t half = dtype == optrt::Dtype::BF16 ? optrt::f32ToBf16(value) : optrt::f32ToF16(value);
    pattern = static_cast<uint32_t>(half) * 0x10001u;
  }
  d.check(d.cuMemsetD32_v2(memory.get(), pattern, words), "cuMemsetD32_v2");
  return memory;
}

/// `withOptions`: the step of a mixed-precision trainer (CudaStepOptions:
/// the device's dynamic loss scale, the non-finite check and clipping by
/// global norm), which reads every gradient once more before the rule's
/// pass; its same-traffic kernel moves that read too.
/// A real NCCL communicator of one rank on GPU 0 (the process's, never
/// destroyed: NCCL outlives the benchmarks); null with `why` without NCCL.
ncclComm_t oneNcclRank(std::string &why) {
  static ncclComm_t comm = nullptr;
  static std::string failure;
  static bool tried = false;
  if (!tried) {
    tried = true;
    try {
      const optrt::nccl::Library &nccl = optrt::nccl::library();
      optrt::nccl::UniqueId id{};
      nccl.check(nccl.ncclGetUniqueId(&id), "ncclGetUniqueId");
      nccl.check(nccl.ncclCommInitRank(&comm, 1, id, 0), "ncclCommInitRank");
    } catch (const std::exception &e) {
      failure = e.what();
    }
  }
  why = failure;
  return comm;
}

void BM_Step(benchmark::State &state, const std::string &rule, const std::string &layoutText,
             const std::string &shapeName, bool withOptions, bool shardedOverNccl) {
  const Driver &d = *gpu().d;
  // A rule that reads tensors as matrices gets GPT-2 small's shapes.
  bool matrices = optdsl::bench::kMatrixPassStreams.count(rule) > 0;
  std::vector<size_t> sizes = matrices ? optrt::gpt2SmallTensorSizes() : shape(shapeName);
  std::vector<std::vector<size_t>> shapes =
      matrices ? optrt::gpt2SmallTensorShapes() : std::vector<std::vector<size_t>>{};
  size_t elements = 0;
  for (size_t size : sizes)
    elements += size;
  optdsl::CheckedRule checked = optdsl::loadRuleFile(optdsl::test::ruleLibraryDir() + "/" + rule + ".opt");
  auto host = optdsl::jitCompile(checked, kFixedHypers.at(rule), {layoutText});
  std::vector<std::shared_ptr<const optrt::CudaKernels>> device;
  for (const optrt::LayoutKernels &layout : host->layouts) {
    optdsl::CudaCompileOptions options;
    options.layout = layout.name;
    device.push_back(std::make_shared<optrt::CudaKernels>(optdsl::cudaCompile(checked, kFixedHypers.at(rule), options)));
  }
  optrt::CudaOptimizerOptions options;
  options.layout = layoutText;
  if (shardedOverNccl) {
    std::string why;
    ncclComm_t comm = oneNcclRank(why);
    if (!comm) {
      state.SkipWithError(("no NCCL: " + why).c_str());
      return;
    }
    options.communicator = optrt::ncclCommunicator(comm);
  }
  optrt::CudaOptimizer optimizer(host, device, options);
  optrt::Layout layout = optrt::Layout::parse(layoutText);
  std::vector<DeviceMemory> params, grads;
  std::vector<optrt::DevicePtr> paramPointers, gradPointers;
  double bytesPerStep = 0;
  for (size_t size : sizes) {
    params.push_back(filled(layout.param, size, 0.02f, "param"));
    grads.push_back(filled(layout.grad, size, 1e-3f, "grad"));
    paramPointers.push_back(params.back().get());
    gradPointers.push_back(grads.back().get());
  }
  optimizer.addGroup(paramPointers, sizes, {}, shapes);
  optrt::CudaStepOptions stepOptions;
  if (withOptions) {
    stepOptions.dynamicLossScale = true;
    stepOptions.maxGradNorm = 1.0;
    // The gradients are 1e-3 each and stay unscaled: a scale of 1 that
    // never grows (a growth would happen on the device every 2000 steps).
    optimizer.setLossScaler({1.0, 2.0, 0.5, std::numeric_limits<int32_t>::max()});
  }
  for (int warm = 0; warm < 3; ++warm)
    optimizer.step({gradPointers}, nullptr, stepOptions);
  d.check(d.cuCtxSynchronize(), "cuCtxSynchronize");
  double total = 0;
  double communication = 0;
  for (auto _ : state) {
    auto start = std::chrono::steady_clock::now();
    optimizer.step({gradPointers}, nullptr, stepOptions);
    d.check(d.cuCtxSynchronize(), "cuCtxSynchronize");
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    state.SetIterationTime(seconds);
    total += seconds;
    if (shardedOverNccl)
      communication += optimizer.lastStepResult().communicationSeconds;
  }
  if (shardedOverNccl) // the host's time in the step's collectives, per step
    state.counters["communication_ms"] = communication * 1e3 / static_cast<double>(state.iterations());
  // Each tensor's streams, in the layout it runs (the small-tensor
  // fallback's for small ones).
  std::vector<std::pair<bench::Stream, size_t>> streams;
  for (size_t t = 0; t < sizes.size(); ++t)
    for (const optrt::LayoutKernels &kernels : host->layouts)
      if (kernels.name == optimizer.tensorLayout(0, t))
        for (const bench::Stream &stream :
             matrices ? bench::matrixPassStreams(rule, layout) : bench::streamsOf(kernels)) {
          streams.emplace_back(stream, sizes[t]);
          bytesPerStep += stream.bytesPerElement * static_cast<double>(sizes[t]) *
                          ((stream.read ? 1 : 0) + (stream.written ? 1 : 0));
        }
  if (withOptions)
    for (size_t t = 0; t < sizes.size(); ++t) {
      bench::Stream gradRead{static_cast<double>(optrt::elementBytes(layout.grad, 1)), true, false};
      streams.emplace_back(gradRead, sizes[t]);
      bytesPerStep += gradRead.bytesPerElement * static_cast<double>(sizes[t]);
    }
  if (withOptions && optimizer.lastStepResult().skipped)
    state.SkipWithError("the measured steps were skipped: not a step's traffic");
  optrt::MemoryReport memory = optimizer.memoryReport();
  double gbps = bytesPerStep * static_cast<double>(state.iterations()) / total / 1e9;
  params.clear();
  grads.clear();
  int repetitions = static_cast<int>(std::min<int64_t>(state.iterations(), 50));
  double reference = sameTrafficGBps(streams, repetitions);
  double ceiling = copyGBps(bytesPerStep, repetitions);
  state.counters["GBps"] = gbps;
  state.counters["same_traffic_GBps"] = reference;
  state.counters["copy_GBps"] = ceiling;
  state.counters["roofline"] = gbps / reference;
  state.counters["copy_roofline"] = gbps / ceiling;
  state.counters["bytes_per_param"] = bytesPerStep / static_cast<double>(elements);
  state.counters["state_bytes_per_param"] = memory.master + memory.state;
  state.counters["params_M"] = static_cast<double>(elements) / 1e6;
  state.SetLabel(optimizer.imageInUse());
}

} // namespace

int main(int argc, char **argv) {
  // --same-traffic-ptx=ARCH: print the reference kernel's PTX (CI assembles
  // it with ptxas; no GPU needed).
  for (int i = 1; i < argc; ++i)
    if (std::string(argv[i]).rfind("--same-traffic-ptx=", 0) == 0) {
      std::fputs(optdsl::bench::sameTrafficPtx(std::string(argv[i]).substr(19)).c_str(), stdout);
      return 0;
    }
  try {
    gpu();
  } catch (const optrt::CudaError &e) {
    std::fprintf(stderr, "optdsl-gpu-bench: no GPU to measure on: %s\n", e.what());
    return 77;
  }
  for (const char *rule : {"adamw", "ademamix"})
    for (const std::string &layout : kLayouts)
      for (const char *shapeName : {"gpt2s", "gpt1.3b"})
        benchmark::RegisterBenchmark(("step/" + std::string(rule) + "/" + layout + "/" + shapeName).c_str(), BM_Step,
                                     rule, layout, shapeName, false, false)
          ->Unit(benchmark::kMillisecond)
          ->UseManualTime()
          // 24 benchmarks: run.sh must fit a lent machine's 10-minute call.
          ->MinTime(1.0);
  // Adafactor and CAME (several passes; their same-traffic kernel moves
  // the bytes of all of them) at GPT-2 small's shapes, their momentum in f32
  // and bf16.
  for (const char *rule : {"adafactor", "came"})
    for (const char *layout : {"f32", "state=bf16"})
      benchmark::RegisterBenchmark(("step/" + std::string(rule) + "/" + layout + "/gpt2s").c_str(), BM_Step, rule,
                                   layout, "gpt2s", false, false)
          ->Unit(benchmark::kMillisecond)
          ->UseManualTime()
          ->MinTime(1.0);
  // The training step's options (issue 12's target: at most one extra read
  // of the gradients), against the plain steps above.
  for (const char *layout : {"f32", "param=bf16,master=f32"})
    benchmark::RegisterBenchmark(("step/adamw/" + std::string(layout) + "/gpt2s/scaled_clipped").c_str(), BM_Step,
                                 "adamw", layout, "gpt2s", true, false)
        ->Unit(benchmark::kMillisecond)
        ->UseManualTime()
        ->MinTime(1.0);
  // ZeRO-1 over one real NCCL rank (where NCCL is installed): the sharded
  // step's own cost (agreement, gathers through NCCL) against the plain step
  // above; several ranks need several GPUs.
  benchmark::RegisterBenchmark("step/adamw/f32/gpt2s/sharded_nccl1", BM_Step, "adamw", "f32", "gpt2s", false, true)
      ->Unit(benchmark::kMillisecond)
      ->UseManualTime()
      ->MinTime(1.0);
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
