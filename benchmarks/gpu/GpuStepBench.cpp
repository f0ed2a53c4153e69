// Optimizer step speed on the GPU: `step/<rule>/<layout>/<shape>`, run by
// optrt::CudaOptimizer on GPU 0 with one device allocation per tensor (as a
// framework's allocator gives them), params and gradients stored in the
// layout's dtypes. Counters: GBps (the step's minimal bytes / time: every
// buffer of the layout's kernels read once and, but for the gradient and a
// param that has an f32 master, written once), copy_GBps (the same-traffic
// reference of the layout: a device-to-device copy moving the same bytes,
// read + write, measured in the same process right after: the bandwidth
// ceiling) and roofline = GBps / copy_GBps; bytes_per_param (that traffic)
// and state_bytes_per_param (resident master + states, memoryReport). Each
// iteration is one step followed by a context synchronize, timed on the host
// (a step is ~1 ms at 124M params, the synchronize some microseconds). Exits
// with a message where there is no GPU.
#include "common/RuleLibrary.h"
#include "optdsl/CUDACompile.h"
#include "optdsl/JIT.h"
#include "optrt/CudaOptimizer.h"
#include "optrt/Layout.h"
#include "optrt/Storage.h"

#include "cuda/DeviceMemory.h"
#include "cuda/Driver.h"

#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

namespace {

using namespace optrt::cuda;

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

/// The layouts measured: f32, 16-bit states, bf16 params with an f32 or a
/// 16-bit-remainder master, q8 states.
const std::vector<std::string> kLayouts = {"f32", "state=bf16", "param=bf16,master=f32",
                                           "param=bf16,master=f32,state=q8",
                                           "param=bf16,grad=bf16,master=remainder,state=q8"};

/// Bytes a step of `layout` must move for a tensor of n elements: each
/// buffer of its kernels read and written once, except the gradient (read
/// only) and a param that has an f32 master (written only: the kernel reads
/// the master).
double stepBytes(const optrt::LayoutKernels &layout, size_t n) {
  bool f32Master = false;
  for (const optrt::BufferDesc &buffer : layout.buffers)
    f32Master |= buffer.role == optrt::BufferRole::Master && buffer.dtype == optrt::Dtype::F32;
  double bytes = 0;
  for (const optrt::BufferDesc &buffer : layout.buffers) {
    double once = buffer.role == optrt::BufferRole::StateAbsmax
                      ? 4.0 * static_cast<double>(optrt::q8Blocks(n, buffer.blockElements))
                      : static_cast<double>(optrt::elementBytes(buffer.dtype, n));
    bool readOnce = buffer.role == optrt::BufferRole::Grad || (buffer.role == optrt::BufferRole::Param && f32Master);
    bytes += readOnce ? once : 2 * once;
  }
  return bytes;
}

const std::map<std::string, std::map<std::string, double>> kFixedHypers = {
    {"adamw", {{"amsgrad", 0}}}, {"ademamix", {}}};

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
  copyAll();
  d.check(d.cuCtxSynchronize(), "cuCtxSynchronize");
  auto start = std::chrono::steady_clock::now();
  for (int r = 0; r < repetitions; ++r)
    copyAll();
  d.check(d.cuCtxSynchronize(), "cuCtxSynchronize");
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return 2.0 * static_cast<double>(half) * repetitions / seconds / 1e9;
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

void BM_Step(benchmark::State &state, const std::string &rule, const std::string &layoutText,
             const std::string &shapeName) {
  const Driver &d = *gpu().d;
  std::vector<size_t> sizes = shape(shapeName);
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
  optimizer.addGroup(paramPointers, sizes);
  for (int warm = 0; warm < 3; ++warm)
    optimizer.step({gradPointers});
  d.check(d.cuCtxSynchronize(), "cuCtxSynchronize");
  double total = 0;
  for (auto _ : state) {
    auto start = std::chrono::steady_clock::now();
    optimizer.step({gradPointers});
    d.check(d.cuCtxSynchronize(), "cuCtxSynchronize");
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    state.SetIterationTime(seconds);
    total += seconds;
  }
  for (size_t t = 0; t < sizes.size(); ++t) {
    const std::string &name = optimizer.tensorLayout(0, t);
    for (const optrt::LayoutKernels &kernels : host->layouts)
      if (kernels.name == name)
        bytesPerStep += stepBytes(kernels, sizes[t]);
  }
  optrt::MemoryReport memory = optimizer.memoryReport();
  double gbps = bytesPerStep * static_cast<double>(state.iterations()) / total / 1e9;
  params.clear();
  grads.clear();
  double ceiling = copyGBps(bytesPerStep, static_cast<int>(std::min<int64_t>(state.iterations(), 50)));
  state.counters["GBps"] = gbps;
  state.counters["copy_GBps"] = ceiling;
  state.counters["roofline"] = gbps / ceiling;
  state.counters["bytes_per_param"] = bytesPerStep / static_cast<double>(elements);
  state.counters["state_bytes_per_param"] = memory.master + memory.state;
  state.counters["params_M"] = static_cast<double>(elements) / 1e6;
  state.SetLabel(optimizer.imageInUse());
}

} // namespace

int main(int argc, char **argv) {
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
                                     rule, layout, shapeName)
          ->Unit(benchmark::kMillisecond)
          ->UseManualTime()
          ->MinTime(2.0);
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
