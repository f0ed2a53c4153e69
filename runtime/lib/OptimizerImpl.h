// The inside of optrt::Optimizer, shared by Optimizer.cpp (groups, steps,
// state access) and OptimizerState.cpp (saving and loading state).
#pragma once

#include <array>

#include "optrt/Optimizer.h"

#include "CacheLineVector.h"
#include "ChunkTable.h"
#include "Reduction.h"
#include "LayoutBuffers.h"
#include "RuleLayout.h"
#include "StateArena.h"
#include "ThreadPool.h"
#include "shard/ShardPlan.h"

#include "optrt/Storage.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include "GroupTable.h"

#include <thread>
#include <utility>

namespace optrt {

namespace detail {

struct Tensor {
  void *param;
  size_t size;
  size_t group;
  // The layout it runs: the optimizer's, or its small-tensor fallback.
  const LayoutKernels *layout;
  // Per buffer of that layout, where it starts in the arena (in floats);
  // unused for param and grad, which the caller owns. Buffers hold the
  // owned elements only.
  std::vector<size_t> offsets;
  // The elements whose master and state this rank keeps (all of them
  // without a communicator; ShardPlan.h).
  OwnedRange owned;
  // rank, rows, cols as the rule's `rank`, `rows`, `cols` read them.
  std::array<double, 3> dims{};
  // A rule that reads matrices (RuleLayout::readsMatrices): what the
  // kernels' Dims buffer holds (matrices, rows, cols), and its states per
  // row, column or matrix (f32), each at axisOffsets[buffer] in axisStates.
  std::array<int64_t, 3> matrixDims{1, 1, 1};
  CacheLineVector<float> axisStates;
  std::vector<size_t> axisOffsets;
  // Where buffer b (an AxisState of the layout) lives.
  float *axisBuffer(size_t b) const { return const_cast<float *>(axisStates.data()) + axisOffsets[b]; }
};

/// Arena floats that buffer `buffer` of a tensor of n elements takes: its
/// bytes rounded up to whole floats, then to whole cache lines.
inline size_t bufferFloats(const BufferDesc &buffer, size_t n) {
  size_t bytes = bufferBytes(buffer, n);
  return StateArena::paddedFloats((bytes + sizeof(float) - 1) / sizeof(float));
}

// A chunk's partials slot takes whole cache lines, so chunks run by different
// threads never write the same line.
constexpr size_t doublesPerLine = StateArena::alignmentBytes / sizeof(double);

inline unsigned resolveThreads(unsigned requested) {
  if (requested != 0)
    return requested;
  return std::max(1u, std::thread::hardware_concurrency());
}

} // namespace detail

using namespace detail;

struct Optimizer::Impl {
  Impl(std::shared_ptr<const RuleKernels> kernels, OptimizerOptions options)
      : layout(std::move(kernels), options.layout),
        chunks(options.chunkElements,
               hasQ8States(layout.parsedLayout(), layout.rule().states) ? kQ8BlockElements : 1),
        pool(resolveThreads(options.threads)), smallTensorElements(options.smallTensorElements),
        seed(options.seed), comm(options.communicator), gradientMode(options.gradients),
        plan(comm ? comm->rank() : 0, comm ? comm->size() : 1) {
    // A q8 block must never span two chunks: each chunk's kernel quantises
    // whole blocks.
    if (layout.layout().buffers.size() > 0 &&
        hasQ8States(layout.parsedLayout(), layout.rule().states) &&
        options.chunkElements % kQ8BlockElements != 0)
      throw std::invalid_argument("optrt::Optimizer: layout '" + layout.layout().name +
                                  "' has q8 states: chunkElements (" +
                                  std::to_string(options.chunkElements) +
                                  ") must be a multiple of 256, the q8 block");
  }

  RuleLayout layout;
  ChunkTable chunks;
  ThreadPool pool;
  StateArena arena;
  std::vector<Group> groups;
  std::vector<Tensor> tensors;
  std::vector<double> scalars; // numScalar per tensor
  size_t numParams = 0;
  int64_t stepCount = 0;

  // Scratch of step(), kept between steps so a step allocates nothing.
  std::vector<void *> buffers; // the layout's buffers, per tensor
  std::vector<float> uniforms;
  std::vector<double> partials;
  std::vector<double> reductions;
  std::vector<double> scalarsOut;
  std::vector<double> gradPartials; // per chunk: Σ g² of the gradient read
  // Each thread's run of the owned chunks (balancedShares), for a table of
  // shareBoundsChunks chunks: recomputed when a group adds chunks.
  std::vector<size_t> shareBounds;
  size_t shareBoundsChunks = 0;
  // Per rule input, per group: the step's values, or null where not given.
  std::vector<std::vector<const std::vector<const void *> *>> inputValues;

  size_t smallTensorElements;
  uint32_t seed;
  // Sharding (ZeRO stage 1): null without a communicator, when the plan
  // gives this process everything.
  std::shared_ptr<Communicator> comm;
  ShardedGradients gradientMode;
  ShardPlan plan;
  std::vector<char> shardGrads; // this rank's part of the summed gradients
  std::vector<std::vector<char>> shardInputs; // per rule input: the same for its values
  std::vector<double> gathered; // scratch of gatherChunkValues
  std::vector<float> axisGathered; // scratch of gatherAxisSums
  // Per tensor: 1 when the next tensor of its group starts where its param
  // ends on every rank, so one collective moves both (ShardedStep.cpp).
  std::vector<uint8_t> paramJoins;
  std::vector<uint8_t> gradJoins; // the same for this step's gradients
  double commSeconds = 0;       // of the current step
  size_t buffersPerTensor() const { return layout.layout().buffers.size(); }
  /// Calls task(i) for every owned chunk (plan.ownedChunks()[i]), each of the
  /// pool's threads taking a run of consecutive chunks of about equal
  /// elements (balancedShares). Which thread steps a chunk never changes a
  /// result.
  template <typename Task> void forOwnedChunks(Task &task) {
    const std::vector<size_t> &owned = plan.ownedChunks();
    if (shareBounds.empty() || shareBoundsChunks != chunks.chunks().size()) {
      balancedShares(chunks.chunks(), owned, pool.numThreads(), shareBounds);
      shareBoundsChunks = chunks.chunks().size();
    }
    auto runShare = [&](size_t share) {
      for (size_t i = shareBounds[share]; i < shareBounds[share + 1]; ++i)
        task(i);
    };
    pool.parallelFor(pool.numThreads(), runShare);
  }
  // Whether kernels read each tensor's key (stochastic rounding, random()),
  // in one more uniform slot.
  bool tensorKeys() const { return layout.parsedLayout().stochastic || layout.rule().usesRandom; }
  size_t uniformStride() const { return std::max<size_t>(1, layout.maxUniforms() + (tensorKeys() ? 1 : 0)); }
  size_t partialStride() const {
    // A phase with column sums: one more slot, the pointer to the chunk's
    // column partials (RuleKernels.h KernelFn).
    size_t slots = layout.maxReductionsPerPhase() + (layout.maxColumnSlots() > 0 ? 1 : 0);
    size_t lines = std::max<size_t>(1, (slots + doublesPerLine - 1) / doublesPerLine);
    return lines * doublesPerLine;
  }
  // A rule that reads matrices: per chunk (and one past the last), where its
  // column partials begin in columnPartials (maxColumnSums regions of the
  // chunk's matrices x cols floats).
  // Each chunk's region starts a cache line (CacheLineVector.h).
  CacheLineVector<float> columnPartials;
  std::vector<size_t> columnPartialBegin{0};
  std::vector<std::vector<double>> columnScratch; // per thread: combineColumns's sums of its columns of one tensor
  // The matrices chunk [begin, end) of tensor t touches (ChunkTable.h).
  static ColumnRegion columnRegion(const Tensor &t, int64_t begin, int64_t end) {
    return optrt::columnRegion(t.matrixDims[1], t.matrixDims[2], begin, end);
  }
  // Adds the chunks' column partials of phase p in chunk order into their
  // scratch states.
  void combineColumns(int phase);
  // Elements per row of tensor t as its chunks are cut: whole rows for a
  // rule that reads matrices, else 1 (any element).
  size_t rowLength(const Tensor &t) const {
    return layout.readsMatrices() ? static_cast<size_t>(t.matrixDims[2]) : 1;
  }
  // Sets t's matrixDims from its shape and allocates its states per row,
  // column or matrix (zero; addGroup writes their initial values).
  void allocateAxisStates(Tensor &t, const std::vector<size_t> &shape) const {
    t.matrixDims = matrixDimensions(shape, t.size);
    const std::vector<BufferDesc> &buffers = t.layout->buffers;
    t.axisOffsets.assign(buffers.size(), 0);
    size_t floats = 0;
    for (size_t b = 0; b < buffers.size(); ++b)
      if (buffers[b].role == BufferRole::AxisState) {
        t.axisOffsets[b] = floats;
        floats += StateArena::paddedFloats(spanValues(layout.rule().states[buffers[b].state].span, t.matrixDims));
      }
    t.axisStates.assign(floats, 0.0f);
  }

  const Group &checkedGroup(int group, const char *caller) const;
  const Tensor &checkedTensor(int group, size_t tensor, const char *caller) const;
  size_t elementwiseSlot(const std::string &name, const char *caller) const;
  // The buffer of elementwise state `name` in tensor t's layout.
  size_t stateBuffer(const Tensor &t, const std::string &name, const char *caller) const;
  void *bufferAt(const Tensor &t, size_t buffer) const {
    return arena.data() + t.offsets[buffer];
  }
  // What the kernels get for buffer b of t: they index from the tensor's
  // first element, and the arena holds the owned elements only. (Integer
  // arithmetic: the address may lie before the allocation; the kernels only
  // touch owned elements.)
  void *kernelBuffer(const Tensor &t, size_t buffer) const {
    auto at = reinterpret_cast<uintptr_t>(bufferAt(t, buffer));
    return reinterpret_cast<void *>(at - bufferBytes(t.layout->buffers[buffer], t.owned.begin));
  }
  // The memory report of the tensors, master and state counting this rank's
  // parts only when ownedOnly; std::logic_error naming `caller` before any group.
  MemoryReport memoryOf(bool ownedOnly, const char *caller) const;
  // Throws std::logic_error when sharded: streams and safetensors hold one
  // process's state.
  void refuseSharded(const char *caller) const;
  // Sharded checkpoints (shard/ShardedCheckpoint.cpp): this rank's parts
  // into folder/rank-R-of-N.state and rank 0's manifest.json; and loading
  // this optimizer's parts from such a folder (any number of ranks), or,
  // sharded, from one process's file.
  void saveShards(const std::string &folder) const;
  void loadParts(const std::string &path, bool convert);
  const float *absmaxOf(const Tensor &t, size_t stateBufferIndex) const;
  // State `name` of t when it spans rows, columns or matrices (kept with the
  // tensor, f32); an empty span (null data) for any other state.
  std::span<float> axisState(const Tensor &t, const std::string &name) const;
  int addGroupImpl(std::vector<void *> params, std::vector<size_t> sizes,
                   std::map<std::string, double> hyperOverrides, std::vector<std::vector<size_t>> shapes);
  // Writes each tensor's dimensions into the hidden scalar states of rank,
  // rows and cols (RuleKernels.h kShapeScalars), from tensor `first` on:
  // after a group's init, and after a load (they are the optimizer's, not
  // the checkpoint's).
  void applyShapes(size_t first = 0);
  StepResult stepImpl(const std::vector<std::vector<const void *>> &gradsPerGroup, const StepOptions &options);
  // Σ g² over every gradient element, chunks combined in table order.
  double gradSumOfSquares();
  // The values scheduled hypers take at this step, each checked against its
  // range: (group, hyper, value).
  struct ScheduledValue {
    size_t group, hyper;
    double value;
  };
  std::vector<ScheduledValue> scheduledValues(const char *caller) const;
  // Two chunks writing the same floats from different threads would race, and
  // a tensor listed twice would be stepped twice: so params may not overlap.
  // Returns the first clash, or "" when there is none.
  std::string findOverlap(const std::vector<void *> &params, const std::vector<size_t> &sizes,
                          int newGroup) const;

  void validateGrads(const std::vector<std::vector<const void *>> &gradsPerGroup) const;
  // Checks StepOptions::inputs against the rule and the groups; returns
  // what inputValues becomes for the step (nothing is changed here).
  // Sharded steps (shard/ShardedStep.cpp). Each returns after the
  // collective; every rank calls them in the same order.
  // Sums the gradients of every rank's part into shardGrads and averages;
  // then each input given this step into its shardInputs entry.
  void reduceScatterGradients(const std::vector<std::vector<const void *>> &gradsPerGroup);
  void reduceScatterInputs();
  // One grad-shaped value (per group its tensors' pointers; a group with
  // none is left out), summed over the ranks and averaged into `shard`, this
  // rank's part; `joins` gets the runs of tensors moved together.
  void reduceScatter(const std::vector<std::vector<const void *>> &perGroup, std::vector<char> &shard,
                     std::vector<uint8_t> &joins);
  // values[c * stride + k], k < count, of every chunk c, from the rank that ran it.
  void gatherChunkValues(double *values, size_t stride, size_t count);
  // A rule that reads matrices, after a pass over the elements: each chunk's
  // row sums (in its tensors' states per row) and column partials, from the
  // rank that ran it, so every rank holds whole states per row and column.
  void gatherAxisSums(int phase);
  // Every rank's updated params, into every rank's param tensors.
  void gatherParams();
  // Whether kernels read the gradients from shardGrads (summed across
  // ranks) rather than from the caller's: with one rank the sum is the
  // caller's gradient itself, and nothing needs to move.
  bool gradsInShard() const { return comm && gradientMode == ShardedGradients::Average && plan.ranks() > 1; }
  // Where kernels read tensor t's gradient (or an input, from its shard)
  // when gradsInShard().
  const void *shardGrad(size_t t) const { return shardPointer(shardGrads, t); }
  const void *shardPointer(const std::vector<char> &shard, size_t t) const;
  void prepareStep(const std::vector<std::vector<const void *>> &gradsPerGroup);
  void runPhase(int phase);
  void combinePhase(int phase);
  void updateScalars();
  // The step the kernels see for tensor t: its group's steps + 1.
  double tensorStep(size_t t) const { return static_cast<double>(groups[tensors[t].group].steps + 1); }
};


} // namespace optrt
