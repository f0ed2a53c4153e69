// CudaOptimizer's inside (CudaOptimizer.cpp: construction, groups, the
// step; CudaOptimizerState.cpp: state reads and writes, checkpoints, memory;
// ShardedStep.cpp: a sharded step's collectives): the device tables of
// optrt/CudaKernels.h, the tensors and runs, and the optimizer's state.
#pragma once

#include "../ChunkTable.h"
#include "../GroupTable.h"
#include "../LayoutBuffers.h"
#include "../RuleLayout.h"
#include "CudaShard.h"
#include "DeviceMemory.h"
#include "Driver.h"
#include "ModuleCache.h"
#include "optrt/CudaOptimizer.h"

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace optrt {

namespace cuda {

struct Tensor {
  DevicePtr param;
  size_t size;
  size_t group;
  int run;                    // 0: the layout's kernels, 1: its small-tensor fallback's
  std::vector<size_t> offsets; // per buffer of the run's layout: byte offset in the arena (owned buffers)
  std::array<double, 3> dims{}; // rank, rows, cols as the rule reads them
  // A rule that reads matrices: matrices, rows, cols (its Dims buffer).
  std::array<int64_t, 3> matrixDims{1, 1, 1};
  // The elements whose state this rank keeps (sharded; else all of them):
  // the arena holds these only, and the buffers table points where element
  // 0 would be, so the kernels index every buffer by the element's index.
  size_t ownedBegin = 0, ownedEnd = 0;
  size_t owned() const { return ownedEnd - ownedBegin; }
};

// Device tables and owned buffers start on 256-byte boundaries (the driver's
// own allocation granularity), so every one is aligned for any access width.
inline constexpr size_t kSegmentAlign = 256;

inline size_t alignUp(size_t n, size_t alignment) { return (n + alignment - 1) / alignment * alignment; }

/// The counter segment: steps completed, then the stochastic-rounding seed
/// and the skip flag (CudaKernels.h); then each group's steps, one double
/// per group.
struct CounterRecord {
  double counter;
  uint32_t seed;
  uint32_t skip;
};

/// Byte offsets of the tables of CudaKernels.h in one device allocation; one
/// buffers table per run (the layout's kernels and the fallback's take
/// different buffers).
struct TableLayout {
  size_t tensors = 0, chunks = 0, buffers[2] = {0, 0}, hypers = 0, counter = 0, scalars = 0,
         reductions = 0, step = 0, stats = 0, partials = 0, uniforms = 0, columns = 0, bytes = 0;
  size_t statsChunks = 0; // chunks of every run: the stats segment's length

  static TableLayout make(size_t numTensors, size_t numChunks, size_t numGroups, const RuleLayout &rule,
                          const CudaKernels &k, size_t fallbackPerTensor, size_t columnFloats) {
    TableLayout t;
    size_t at = 0;
    auto take = [&](size_t bytes) {
      size_t here = at;
      at = alignUp(at + std::max<size_t>(bytes, 8), kSegmentAlign);
      return here;
    };
    t.tensors = take(numTensors * 4 * sizeof(int64_t));
    t.chunks = take(numChunks * 3 * sizeof(int64_t));
    t.buffers[0] = take(numTensors * k.buffersPerTensor * sizeof(CUdeviceptr));
    t.buffers[1] = take(numTensors * fallbackPerTensor * sizeof(CUdeviceptr));
    t.hypers = take(numGroups * rule.numHypers() * sizeof(double));
    t.counter = take(sizeof(CounterRecord) + numGroups * sizeof(double));
    t.scalars = take(numTensors * rule.numScalar() * sizeof(double));
    t.reductions = take(numTensors * std::max<size_t>(1, rule.numReductions()) * sizeof(double));
    t.step = take(sizeof(CudaStepRecord));
    t.stats = take(numChunks * sizeof(double));
    t.statsChunks = numChunks;
    t.partials = take(numChunks * k.partialStride * sizeof(double));
    t.uniforms = take(numTensors * k.uniformStride * sizeof(float));
    t.columns = take(columnFloats * sizeof(float));
    t.bytes = at;
    return t;
  }
};

/// The kernels one class of tensors runs: the layout's, or its small-tensor
/// fallback's.
struct Run {
  const LayoutKernels *host = nullptr;
  std::shared_ptr<const CudaKernels> kernels;
  std::shared_ptr<const LoadedModule> module;
  std::vector<CUdeviceptr> bufferTable; // host mirror of this run's buffers table
  size_t firstChunk = 0, numChunks = 0;  // its range of the chunk table
  size_t perTensor() const { return host->buffers.size(); }
};

} // namespace cuda

struct CudaOptimizer::Impl {
  // The names its .cpp files use unqualified (they use both namespaces).
  using Run = cuda::Run;
  using Tensor = cuda::Tensor;
  using TableLayout = cuda::TableLayout;
  using CudaShard = cuda::CudaShard;
  using ChunkSegment = cuda::ChunkSegment;
  using Driver = cuda::Driver;
  using DeviceMemory = cuda::DeviceMemory;
  using LoadedModule = cuda::LoadedModule;
  using CUcontext = cuda::CUcontext;
  using CUdevice = cuda::CUdevice;
  using CUdeviceptr = cuda::CUdeviceptr;
  using CUstream = cuda::CUstream;
  using CUfunction = cuda::CUfunction;
  using Group = detail::Group;
  Impl(std::shared_ptr<const RuleKernels> host, const CudaOptimizerOptions &options)
      : layout(std::move(host), options.layout), chunkElements(options.chunkElements),
        smallTensorElements(options.smallTensorElements), seed(options.seed) {}
  ~Impl() {
    // Device memory and the modules go while the context is still retained.
    shard.reset();
    tables = DeviceMemory();
    arena = DeviceMemory();
    for (Run &run : runs)
      run.module.reset();
    if (primaryRetained)
      d->cuDevicePrimaryCtxRelease_v2(device);
  }

  RuleLayout layout;
  std::vector<Run> runs; // [0] the layout, [1] its small-tensor fallback (q8 layouts)
  size_t chunkElements;
  size_t smallTensorElements;
  uint32_t seed;
  const Driver *d = nullptr;
  CUcontext context = nullptr;
  CUdevice device = 0;
  bool primaryRetained = false;
  int multiprocessors = 1;

  std::vector<Group> groups;
  std::vector<Tensor> tensors;
  size_t numParams = 0;
  int64_t stepCount = 0;
  DeviceMemory arena;
  size_t arenaBytes = 0;
  DeviceMemory tables;
  TableLayout tableLayout;
  bool hypersDirty = false;
  // The step segment as the host last uploaded it (its options, the
  // scaler's settings and initial scale); the device owns the scale and
  // tracker from then on, and writes the results.
  CudaStepRecord stepRecord;
  bool anyStep = false;      // a step was enqueued
  bool lastStepRead = false; // ... and read the gradients (stepoptions ran)
  std::unique_ptr<CudaShard> shard; // sharded (a communicator in the options); else null
  // A rule that sums columns: each chunk's first float in the column
  // partials (and the end), and its pointer there as its partials row holds it.
  std::vector<size_t> columnBegins;
  std::vector<CUdeviceptr> columnPointers;

  const CudaKernels &kernels() const { return *runs[0].kernels; }
  const LayoutKernels &hostLayout(const Tensor &t) const { return *runs[t.run].host; }
  Dtype paramDtype() const { return layout.parsedLayout().param; }
  Dtype gradDtype() const { return layout.parsedLayout().grad; }
  void selectKernels(const std::vector<std::shared_ptr<const CudaKernels>> &device);
  const Group &checkedGroup(int group, const char *caller) const;
  const Tensor &checkedTensor(int group, size_t tensor, const char *caller) const;
  void checkDevicePointer(DevicePtr pointer, size_t bytes, size_t alignment, const std::string &what) const;
  std::vector<double> hyperTable() const;
  void acquireContext(int ordinal);
  void launch(CUfunction function, const std::string &name, size_t threads, unsigned maxBlocks,
              CUstream stream, std::vector<void *> args) const;
  /// Buffer `b` of tensor t's run layout: a host copy of its bytes.
  std::vector<uint8_t> download(const Tensor &t, int b) const;
  int stateBufferOf(const Tensor &t, const std::string &name, const char *caller) const;
  /// The device's counters after everything enqueued so far: the
  /// optimizer's steps, then each group's (synchronizes).
  std::vector<int64_t> deviceCounters() const;
  /// The step segment after everything enqueued so far (synchronizes); the
  /// host's record before the first addGroup.
  CudaStepRecord deviceStepRecord() const;
  /// Bytes [offsetof(first), offsetof(end)) of the step segment from the host's record.
  void uploadStepFields(size_t first, size_t end, CUstream stream) const;
  void stepImpl(const std::vector<std::vector<DevicePtr>> &gradsPerGroup, CUstream stream,
                const CudaStepOptions &options);
  // Sharded (CudaShard.h): where tensor t's kernels read its gradient (or
  // input) in a shard starting at shardBase (as if element 0 were there),
  // the averaged gradients' (or an input's) move into a shard (groups with
  // no values skipped), and the updated params' move to every rank.
  CUdeviceptr shardSlot(CUdeviceptr shardBase, size_t t) const;
  void reduceScatterInto(const std::vector<std::vector<DevicePtr>> &perGroup, CUdeviceptr shardBase,
                         CUstream stream);
  void gatherParams(CUstream stream);
  // After pass p over the elements: the rows of each state per row its
  // chunks summed, and their column partials, from the ranks that ran them
  // (docs/sharding.md "Matrices"); and the chunks' reduction partials.
  void gatherAxisSums(int phase, CUstream stream);
  void gatherPartials(CUstream stream);
  /// use(run, its chunks, its buffers table, its number of chunks) for each
  /// run with chunks: the device addresses of its part of the tables.
  /// Sharded, use(...) for each segment's chunks of this rank instead, with
  /// `firstChunk` the first of them (partials and statistics are indexed by
  /// it); with `everyChunk` (a pass over rows, columns or matrices, which
  /// every rank runs alike) every run's chunks as one process.
  template <typename Use> void forEachRun(Use use, bool everyChunk = false) const {
    auto visit = [&](size_t r, size_t first, size_t count) {
      if (count > 0)
        use(runs[r], first, tables.get() + tableLayout.chunks + first * 3 * sizeof(int64_t),
            tables.get() + tableLayout.buffers[r], static_cast<int64_t>(count));
    };
    if (!shard || everyChunk) {
      for (size_t r = 0; r < runs.size(); ++r)
        visit(r, runs[r].firstChunk, runs[r].numChunks);
      return;
    }
    size_t me = shard->rank();
    for (const ChunkSegment &segment : shard->segments)
      visit(static_cast<size_t>(segment.run), segment.starts[me], segment.starts[me + 1] - segment.starts[me]);
  }
};

} // namespace optrt
