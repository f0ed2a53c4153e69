#include "OptimizerImpl.h"

#include "shard/Agreement.h"
#include "shard/CommTimer.h"
#include "shard/Describe.h"
#include "shard/JoinedRuns.h"
#include "step/GradNorm.h"
#include "step/StepOptionsCheck.h"

#include <cmath>

namespace optrt {

const Group &Optimizer::Impl::checkedGroup(int group, const char *caller) const {
  return detail::checkedGroup(groups, group, caller);
}

const Tensor &Optimizer::Impl::checkedTensor(int group, size_t tensor, const char *caller) const {
  return detail::checkedTensor(groups, tensors, group, tensor, caller);
}

size_t Optimizer::Impl::elementwiseSlot(const std::string &name, const char *caller) const {
  return layout.elementwiseIndex(name, caller);
}

size_t Optimizer::Impl::stateBuffer(const Tensor &t, const std::string &name, const char *caller) const {
  elementwiseSlot(name, caller);
  int b = findBuffer(t.layout->buffers, BufferRole::State, static_cast<int>(layout.stateIndex(name)));
  if (b >= 0)
    return static_cast<size_t>(b);
  throw std::logic_error(std::string(caller) + ": layout '" + t.layout->name + "' has no buffer for state '" +
                         name + "'");
}

const float *Optimizer::Impl::absmaxOf(const Tensor &t, size_t buffer) const {
  int b = findBuffer(t.layout->buffers, BufferRole::StateAbsmax, t.layout->buffers[buffer].state);
  return b < 0 ? nullptr : static_cast<const float *>(bufferAt(t, static_cast<size_t>(b)));
}

std::string Optimizer::Impl::findOverlap(const std::vector<void *> &params,
                                         const std::vector<size_t> &sizes, int newGroup) const {
  Dtype param = layout.parsedLayout().param;
  std::vector<ParamRange> ranges;
  ranges.reserve(tensors.size() + params.size());
  for (size_t g = 0; g < groups.size(); ++g)
    for (size_t i = 0; i < groups[g].numTensors; ++i) {
      const Tensor &t = tensors[groups[g].firstTensor + i];
      auto begin = reinterpret_cast<uintptr_t>(t.param);
      ranges.push_back({begin, begin + elementBytes(param, t.size), g, i});
    }
  for (size_t i = 0; i < params.size(); ++i) {
    auto begin = reinterpret_cast<uintptr_t>(params[i]);
    ranges.push_back({begin, begin + elementBytes(param, sizes[i]), static_cast<size_t>(newGroup), i});
  }
  return firstOverlap(std::move(ranges));
}

Optimizer::Optimizer(std::shared_ptr<const RuleKernels> kernels, OptimizerOptions options) {
  if (options.chunkElements == 0)
    throw std::invalid_argument("optrt::Optimizer: chunkElements must be at least 1");
  // Kernels take int64 element indices.
  if (options.chunkElements > static_cast<size_t>(std::numeric_limits<int64_t>::max()))
    throw std::invalid_argument("optrt::Optimizer: chunkElements exceeds the int64 range");
  if (!options.communicator) {
    impl_ = std::make_unique<Impl>(std::move(kernels), options);
    return;
  }
  // Sharded: one rank's bad rule or layout must not leave the others
  // waiting in the next collective.
  checkOnEveryRank(*options.communicator, "optrt::Optimizer", "the rule and the optimizer's options",
                   describeOptions(kernels.get(), options), [&] {
                     // Every engine moves the agreement's host records, so
                     // this reaches every rank too.
                     if (options.communicator->memory() != Communicator::Memory::Host)
                       throw std::invalid_argument(
                           "optrt::Optimizer: the " + options.communicator->engine() +
                           " engine moves device memory; a CPU optimizer shards over an engine of host "
                           "memory (optrt::mpiCommunicator)");
                     impl_ = std::make_unique<Impl>(std::move(kernels), options);
                   });
}

Optimizer::~Optimizer() = default;
Optimizer::Optimizer(Optimizer &&) noexcept = default;
Optimizer &Optimizer::operator=(Optimizer &&) noexcept = default;

const RuleKernels &Optimizer::rule() const { return impl_->layout.rule(); }
unsigned Optimizer::numThreads() const { return impl_->pool.numThreads(); }
size_t Optimizer::chunkElements() const { return impl_->chunks.chunkElements(); }
int Optimizer::numGroups() const { return static_cast<int>(impl_->groups.size()); }
size_t Optimizer::numTensors(int group) const {
  return impl_->checkedGroup(group, "optrt::Optimizer::numTensors").numTensors;
}
int64_t Optimizer::stepCount() const { return impl_->stepCount; }
int64_t Optimizer::stepCount(int group) const {
  return impl_->checkedGroup(group, "optrt::Optimizer::stepCount").steps;
}
size_t Optimizer::numParams() const { return impl_->numParams; }

int Optimizer::addGroup(std::vector<float *> params, std::vector<size_t> sizes,
                        std::map<std::string, double> hyperOverrides, std::vector<std::vector<size_t>> shapes) {
  const Layout &layout = impl_->layout.parsedLayout();
  if (layout.param != Dtype::F32)
    throw std::invalid_argument("optrt::Optimizer::addGroup: layout '" + layout.str() + "' stores params as " +
                                dtypeName(layout.param) +
                                "; pass them in that format with addGroupStored, not as float");
  return impl_->addGroupImpl(std::vector<void *>(params.begin(), params.end()), std::move(sizes),
                             std::move(hyperOverrides), std::move(shapes));
}

int Optimizer::addGroupStored(std::vector<void *> params, std::vector<size_t> sizes,
                              std::map<std::string, double> hyperOverrides, std::vector<std::vector<size_t>> shapes) {
  return impl_->addGroupImpl(std::move(params), std::move(sizes), std::move(hyperOverrides), std::move(shapes));
}

void Optimizer::Impl::applyShapes(size_t first) {
  for (size_t t = first; t < tensors.size(); ++t)
    setShapeScalars(layout, tensors[t].dims, scalars.data() + t * layout.numScalar());
}

int Optimizer::Impl::addGroupImpl(std::vector<void *> params, std::vector<size_t> sizes,
                                  std::map<std::string, double> hyperOverrides,
                                  std::vector<std::vector<size_t>> shapes) {
  static const char *caller = "optrt::Optimizer::addGroup";
  Impl &s = *this;
  const RuleKernels &rule = s.layout.rule();
  int groupIndex = static_cast<int>(s.groups.size());
  auto fail = [&](const std::string &problem) -> void {
    throw std::invalid_argument(std::string(caller) + ": group " + std::to_string(groupIndex) +
                                ": " + problem);
  };

  // Everything is checked before anything changes; sharded, on every rank.
  std::vector<double> hypers;
  auto check = [&] {
    if (std::string problem = newGroupProblem(params, sizes); !problem.empty())
      fail(problem);
    if (std::string problem = shapeProblem(shapes, sizes); !problem.empty())
      fail(problem);
    if (std::string clash = s.findOverlap(params, sizes, groupIndex); !clash.empty())
      fail(clash);
    hypers = groupHypers(s.layout, hyperOverrides, caller);
  };
  if (s.comm)
    checkOnEveryRank(*s.comm, caller, "the new group", describeGroup(groupIndex, sizes, hyperOverrides, shapes),
                     check);
  else
    check();
  // Sharded, each rank keeps an even share of the state bytes: an element
  // weighs its master and state bytes (exactly, in bytes per 2^14 elements).
  std::vector<uint64_t> weights;
  for (size_t n : sizes) {
    uint64_t weight = 0;
    for (const BufferDesc &buffer : s.layout.layoutFor(n, s.smallTensorElements).buffers)
      if (keptByOptimizer(buffer))
        weight += bufferBytes(buffer, size_t{1} << 14);
    weights.push_back(weight);
  }
  // A rule that reads matrices runs whole rows per chunk.
  std::vector<size_t> chunkLengths;
  for (size_t i = 0; i < sizes.size(); ++i)
    chunkLengths.push_back(s.chunks.chunkLength(
        s.layout.readsMatrices() ? matrixView(shapes.empty() ? std::vector<size_t>{} : shapes[i], sizes[i]).cols : 1));
  ShardPlan plan = s.plan;
  plan.addGroup(sizes, weights, chunkLengths);
  std::vector<uint8_t> joins;
  if (s.comm)
    joins = joinsOnEveryRank(*s.comm, std::vector<const void *>(params.begin(), params.end()), sizes,
                             elementBytes(s.layout.parsedLayout().param, 1));

  size_t numScalar = s.layout.numScalar();
  size_t arenaFloats = s.arena.numFloats();
  size_t moreChunks = 0;
  std::vector<Tensor> added;
  for (size_t i = 0; i < sizes.size(); ++i) {
    const LayoutKernels &chosen = s.layout.layoutFor(sizes[i], s.smallTensorElements);
    OwnedRange owned = plan.owned(s.tensors.size() + i);
    const std::vector<size_t> &shape = shapes.empty() ? std::vector<size_t>{} : shapes[i];
    Tensor tensor{params[i], sizes[i], static_cast<size_t>(groupIndex), &chosen, {}, owned,
                  shapeDimensions(shape, sizes[i])};
    for (const BufferDesc &buffer : chosen.buffers) {
      tensor.offsets.push_back(arenaFloats);
      if (!keptByOptimizer(buffer) || owned.size() == 0)
        continue;
      size_t floats = bufferFloats(buffer, owned.size());
      if (__builtin_add_overflow(arenaFloats, floats, &arenaFloats) ||
          arenaFloats > std::numeric_limits<size_t>::max() / sizeof(float))
        fail("its state would exceed the address space");
    }
    if (s.layout.readsMatrices())
      s.allocateAxisStates(tensor, shape);
    added.push_back(std::move(tensor));
    moreChunks += s.chunks.numChunksFor(sizes[i], s.rowLength(added.back()));
  }
  // A rule that reads matrices: each new chunk's column partials.
  std::vector<size_t> columnBegins;
  size_t columnFloats = s.columnPartialBegin.back();
  if (s.layout.maxColumnSlots() > 0)
    for (const Tensor &tensor : added) {
      size_t length = s.chunks.chunkLength(s.rowLength(tensor));
      for (size_t begin = 0; begin < tensor.size; begin += length) {
        size_t end = std::min(tensor.size, begin + length);
        columnFloats += s.columnRegion(tensor, static_cast<int64_t>(begin), static_cast<int64_t>(end)).floats *
                        s.layout.maxColumnSlots();
        // The next chunk's region starts a cache line.
        columnFloats = (columnFloats + StateArena::floatsPerLine - 1) / StateArena::floatsPerLine *
                       StateArena::floatsPerLine;
        columnBegins.push_back(columnFloats);
      }
    }

  std::vector<float> elementwiseInit(s.layout.numElementwise());
  std::vector<double> scalarInit(numScalar);
  rule.init(hypers.data(), elementwiseInit.data(), scalarInit.data());

  // Whatever can throw (allocation) happens before the first change; the
  // arena grows last since it cannot be shrunk back cheaply.
  s.groups.reserve(s.groups.size() + 1);
  s.tensors.reserve(s.tensors.size() + params.size());
  s.scalars.reserve(s.scalars.size() + params.size() * numScalar);
  s.chunks.reserve(params.size(), moreChunks);
  s.paramJoins.reserve(s.paramJoins.size() + joins.size());
  // States are written a piece at a time (a whole number of q8 blocks), so a
  // tensor of billions of elements needs no f32 copy of itself.
  constexpr size_t kInitPiece = 64 * kQ8BlockElements;
  size_t largest = *std::max_element(sizes.begin(), sizes.end());
  std::vector<float> values(std::min(largest, kInitPiece));
  // A sharded step's reduce-scatter writes this rank's part of the
  // gradients, and of each input, here: allocated now, so a step does not
  // fail for memory halfway through its collectives. (One process, or
  // gradients reduced by the trainer: nothing.)
  if (s.comm && s.gradientMode == ShardedGradients::Average && plan.ranks() > 1) {
    size_t shardBytes = elementBytes(s.layout.parsedLayout().grad, plan.ownedElements());
    s.shardGrads.reserve(shardBytes);
    s.shardInputs.resize(s.layout.rule().inputs.size());
    for (std::vector<char> &shard : s.shardInputs)
      shard.reserve(shardBytes);
  }
  s.columnPartialBegin.reserve(s.columnPartialBegin.size() + columnBegins.size());
  s.columnPartials.resize(columnFloats);
  s.arena.grow(arenaFloats);
  s.columnPartialBegin.insert(s.columnPartialBegin.end(), columnBegins.begin(), columnBegins.end());
  s.plan = std::move(plan);
  s.paramJoins.insert(s.paramJoins.end(), joins.begin(), joins.end());

  size_t firstTensor = s.tensors.size();
  Dtype paramDtype = s.layout.parsedLayout().param;
  for (Tensor &tensor : added) {
    size_t n = tensor.owned.size();
    const std::vector<BufferDesc> &buffers = tensor.layout->buffers;
    for (size_t b = 0; b < buffers.size(); ++b) {
      const BufferDesc &buffer = buffers[b];
      if (buffer.role == BufferRole::Master) {
        // The master starts as the exact value of the stored param: an f32
        // copy, or remainders of 0 (the param is the master's high half).
        if (buffer.dtype == Dtype::Remainder)
          std::fill_n(reinterpret_cast<uint16_t *>(s.arena.data() + tensor.offsets[b]), n, uint16_t{0});
        else
          decodeToF32(paramDtype, static_cast<char *>(tensor.param) + elementBytes(paramDtype, tensor.owned.begin),
                      nullptr, {s.arena.data() + tensor.offsets[b], n});
      } else if (buffer.role == BufferRole::AxisState) {
        size_t k = s.layout.stateSlot(rule.states[buffer.state].name, caller).index;
        std::fill_n(tensor.axisBuffer(b), spanValues(rule.states[buffer.state].span, tensor.matrixDims),
                    elementwiseInit[k]);
      } else if (buffer.role == BufferRole::State) {
        size_t k = s.layout.stateSlot(rule.states[buffer.state].name, caller).index;
        std::fill(values.begin(), values.end(), elementwiseInit[k]);
        int a = findBuffer(buffers, BufferRole::StateAbsmax, buffer.state);
        float *absmax = a < 0 ? nullptr : s.arena.data() + tensor.offsets[a];
        auto *data = reinterpret_cast<char *>(s.arena.data() + tensor.offsets[b]);
        for (size_t first = 0; first < n; first += kInitPiece) {
          size_t count = std::min(kInitPiece, n - first);
          encodeF32(buffer.dtype, {values.data(), count}, data + elementBytes(buffer.dtype, first),
                    absmax ? absmax + first / kQ8BlockElements : nullptr);
        }
      }
    }
    s.chunks.addTensor(tensor.size, s.rowLength(tensor));
    s.numParams += tensor.size;
    s.tensors.push_back(std::move(tensor));
    s.scalars.insert(s.scalars.end(), scalarInit.begin(), scalarInit.end());
  }
  s.groups.push_back({std::move(hypers), firstTensor, params.size()});
  s.applyShapes(firstTensor);
  return groupIndex;
}

void Optimizer::Impl::validateGrads(
    const std::vector<std::vector<const void *>> &gradsPerGroup) const {
  static const char *caller = "optrt::Optimizer::step";
  if (groups.empty())
    throw std::logic_error(std::string(caller) +
                           ": the optimizer has no parameters; call addGroup before step");
  if (gradsPerGroup.size() != groups.size())
    throw std::invalid_argument(std::string(caller) + ": got gradients for " +
                                std::to_string(gradsPerGroup.size()) +
                                " groups but the optimizer has " + std::to_string(groups.size()));
  for (size_t g = 0; g < groups.size(); ++g) {
    if (gradsPerGroup[g].size() != groups[g].numTensors)
      throw std::invalid_argument(std::string(caller) + ": got " +
                                  std::to_string(gradsPerGroup[g].size()) +
                                  " gradients for group " + std::to_string(g) + ", which has " +
                                  std::to_string(groups[g].numTensors) + " tensors");
    for (size_t i = 0; i < gradsPerGroup[g].size(); ++i)
      if (!gradsPerGroup[g][i])
        throw std::invalid_argument(std::string(caller) + ": the gradient of " +
                                    tensorName(i, static_cast<int>(g)) + " is null");
  }
}

void Optimizer::Impl::prepareStep(const std::vector<std::vector<const void *>> &gradsPerGroup) {
  size_t numTensors = tensors.size();
  size_t perTensor = buffersPerTensor();
  buffers.resize(numTensors * perTensor);
  uniforms.resize(numTensors * uniformStride());
  partials.resize(chunks.chunks().size() * partialStride());
  scalarsOut.resize(scalars.size());
  // Reductions of later phases are unspecified to uniforms; NaN makes a
  // kernel that reads one early fail loudly and the same way every time.
  reductions.assign(numTensors * layout.numReductions(), std::numeric_limits<double>::quiet_NaN());

  for (size_t t = 0; t < numTensors; ++t) {
    const Tensor &tensor = tensors[t];
    const Group &group = groups[tensor.group];
    void **slot = &buffers[t * perTensor];
    slot[0] = tensor.param;
    // Kernels never write the gradient; the buffer table is void* only so
    // one table type serves every buffer.
    slot[1] = const_cast<void *>(gradsInShard() ? shardGrad(t)
                                                : gradsPerGroup[tensor.group][t - group.firstTensor]);
    size_t kept = keptBuffersEnd(tensor.layout->buffers);
    for (size_t b = 2; b < kept; ++b)
      slot[b] = kernelBuffer(tensor, b);
    // Inputs: the caller's (summed over the ranks like the gradients when
    // those are), or null where not given (the kernels then read none).
    for (size_t b = kept; b < tensor.layout->buffers.size(); ++b) {
      const BufferDesc &desc = tensor.layout->buffers[b];
      if (desc.role == BufferRole::Dims || desc.role == BufferRole::AxisState) {
        slot[b] = desc.role == BufferRole::Dims ? static_cast<void *>(const_cast<int64_t *>(tensor.matrixDims.data()))
                                                : static_cast<void *>(tensor.axisBuffer(b));
        continue;
      }
      size_t input = desc.state;
      const std::vector<const void *> *given = inputValues[input][tensor.group];
      slot[b] = !given          ? nullptr
                : gradsInShard() ? const_cast<void *>(shardPointer(shardInputs[input], t))
                                 : const_cast<void *>((*given)[t - group.firstTensor]);
    }
  }
}

void Optimizer::Impl::runPhase(int phase) {
  const RuleKernels &rule = layout.rule();
  size_t numScalar = layout.numScalar();
  size_t numReductions = layout.numReductions();
  UniformsFn uniformsFn = rule.uniforms[phase];
  for (size_t t = 0; t < tensors.size(); ++t)
    uniformsFn(groups[tensors[t].group].hypers.data(), tensorStep(t), scalars.data() + t * numScalar,
               reductions.data() + t * numReductions, uniforms.data() + t * uniformStride());
  if (tensorKeys()) {
    // The optimizer's step, not the group's: a tensor's rounding bits and
    // draws never repeat, whenever its group was added.
    size_t slot = static_cast<size_t>(rule.numUniforms[phase]);
    uint64_t step = static_cast<uint64_t>(stepCount + 1);
    for (size_t t = 0; t < tensors.size(); ++t) {
      uint32_t key = stochasticBits(seed, step, t);
      std::memcpy(&uniforms[t * uniformStride() + slot], &key, sizeof key);
    }
  }

  size_t perTensor = buffersPerTensor();
  size_t uStride = uniformStride();
  size_t pStride = partialStride();
  const std::vector<Chunk> &table = chunks.chunks();
  if (layout.domain(phase) != PhaseDomain::Elements) {
    // Between the passes over the elements: each tensor's rows (or
    // columns), one call per tensor.
    PhaseDomain domain = layout.domain(phase);
    auto runTensor = [&](size_t t) {
      const Tensor &tensor = tensors[t];
      int64_t count = tensor.matrixDims[0] * (domain == PhaseDomain::Rows   ? tensor.matrixDims[1]
                                              : domain == PhaseDomain::Cols ? tensor.matrixDims[2]
                                                                            : 1);
      tensors[t].layout->kernels[phase](&buffers[t * perTensor], &uniforms[t * uStride],
                                        &partials[chunks.firstChunk(t) * pStride], 0, count);
    };
    pool.parallelFor(tensors.size(), runTensor);
    return;
  }
  if (layout.columnSlots(phase) > 0) {
    // Each chunk's kernel finds its column scratch through the slot after
    // the phase's reductions.
    size_t slot = layout.reductionEnd(phase) - layout.reductionBegin(phase);
    for (size_t c = 0; c < table.size(); ++c) {
      float *begin = columnPartials.data() + columnPartialBegin[c];
      std::memcpy(&partials[c * pStride + slot], &begin, sizeof begin);
    }
  }
  const std::vector<size_t> &owned = plan.ownedChunks();
  auto runChunk = [&](size_t i) {
    size_t c = owned[i];
    const Chunk &chunk = table[c];
    KernelFn kernel = tensors[chunk.tensor].layout->kernels[phase];
    kernel(&buffers[chunk.tensor * perTensor], &uniforms[chunk.tensor * uStride],
           &partials[c * pStride], chunk.begin, chunk.end);
  };
  forOwnedChunks(runChunk);
}

void Optimizer::Impl::combineColumns(int phase) {
  const RuleKernels &rule = layout.rule();
  const std::vector<size_t> &sums = layout.columnSums(phase);
  if (sums.empty())
    return;
  const std::vector<Chunk> &table = chunks.chunks();
  size_t shares = pool.numThreads();
  columnScratch.resize(shares);
  // Each thread combines its slice of every tensor's columns (GPT-2 small's
  // embedding alone has 591 chunks of partials): per column the chunks'
  // partials still add in chunk order, whichever thread adds them.
  auto combineSlice = [&](size_t share) {
    std::vector<double> &scratch = columnScratch[share];
    for (size_t t = 0; t < tensors.size(); ++t) {
      Tensor &tensor = tensors[t];
      int64_t rows = tensor.matrixDims[1];
      size_t matrices = static_cast<size_t>(tensor.matrixDims[0]), cols = static_cast<size_t>(tensor.matrixDims[2]);
      size_t from = share * cols / shares, width = (share + 1) * cols / shares - from;
      if (width == 0)
        continue;
      for (size_t k = 0; k < sums.size(); ++k) {
        const AxisReductionInfo &info = rule.axisReductions[sums[k]];
        scratch.assign(matrices * width, 0.0);
        for (size_t c = chunks.firstChunk(t); c < chunks.endChunk(t); ++c) {
          ColumnRegion region = columnRegion(tensor, table[c].begin, table[c].end);
          const float *partial = columnPartials.data() + columnPartialBegin[c] + k * region.floats;
          for (size_t m = 0; m < region.floats / cols; ++m) {
            double *sum = scratch.data() + (static_cast<size_t>(region.firstMatrix) + m) * width;
            const float *row = partial + m * cols + from;
            for (size_t j = 0; j < width; ++j)
              sum[j] += row[j];
          }
        }
        float *target = tensor.axisBuffer(
            static_cast<size_t>(findBuffer(tensor.layout->buffers, BufferRole::AxisState, info.state)));
        double divisor = info.mean ? static_cast<double>(rows) : 1.0;
        for (size_t m = 0; m < matrices; ++m)
          for (size_t j = 0; j < width; ++j)
            target[m * cols + from + j] = static_cast<float>(scratch[m * width + j] / divisor);
      }
    }
  };
  pool.parallelFor(shares, combineSlice);
}

void Optimizer::Impl::combinePhase(int phase) {
  if (comm && (!layout.rowSums(phase).empty() || !layout.columnSums(phase).empty()))
    gatherAxisSums(phase);
  combineColumns(phase);
  const std::vector<ReductionInfo> &infos = layout.rule().reductions;
  size_t begin = layout.reductionBegin(phase);
  size_t end = layout.reductionEnd(phase);
  size_t pStride = partialStride();
  size_t numReductions = layout.numReductions();
  if (begin == end)
    return;
  if (comm)
    gatherChunkValues(partials.data(), pStride, end - begin);
  for (size_t t = 0; t < tensors.size(); ++t) {
    size_t firstChunk = chunks.firstChunk(t);
    // A pass over rows or columns is one call per tensor, which writes the
    // partials of the tensor's first chunk.
    size_t endChunk = layout.domain(phase) == PhaseDomain::Elements ? chunks.endChunk(t) : firstChunk + 1;
    for (size_t r = begin; r < end; ++r) {
      ReductionKind kind = infos[r].kind;
      size_t local = r - begin;
      // Chunk order, whatever thread ran each chunk: this is what makes the
      // result independent of the thread count.
      double acc = partials[firstChunk * pStride + local];
      for (size_t c = firstChunk + 1; c < endChunk; ++c)
        acc = combinePartials(kind, acc, partials[c * pStride + local]);
      // A group-wide reduction keeps the tensor's combined partial for the
      // group's combination below.
      reductions[t * numReductions + r] = infos[r].groupWide ? acc : finishReduction(kind, acc, tensors[t].size);
    }
  }
  // Group-wide: the tensors' partials in tensor order (again independent of
  // threads and chunking), one result for every tensor of the group.
  for (size_t r = begin; r < end; ++r) {
    if (!infos[r].groupWide)
      continue;
    for (const Group &group : groups) {
      if (group.numTensors == 0)
        continue;
      size_t first = group.firstTensor, last = group.firstTensor + group.numTensors;
      double acc = reductions[first * numReductions + r];
      size_t elements = tensors[first].size;
      for (size_t t = first + 1; t < last; ++t) {
        acc = combinePartials(infos[r].kind, acc, reductions[t * numReductions + r]);
        elements += tensors[t].size;
      }
      double value = finishReduction(infos[r].kind, acc, elements);
      for (size_t t = first; t < last; ++t)
        reductions[t * numReductions + r] = value;
    }
  }
}

void Optimizer::Impl::updateScalars() {
  ScalarUpdateFn update = layout.rule().scalarUpdate;
  size_t numScalar = layout.numScalar();
  if (!update || numScalar == 0)
    return;
  size_t numReductions = layout.numReductions();
  // Into a second buffer: scalarUpdate reads start-of-step values.
  for (size_t t = 0; t < tensors.size(); ++t)
    update(groups[tensors[t].group].hypers.data(), tensorStep(t), scalars.data() + t * numScalar,
           reductions.data() + t * numReductions, scalarsOut.data() + t * numScalar);
  scalars.swap(scalarsOut);
}

StepResult Optimizer::step(const std::vector<std::vector<const float *>> &gradsPerGroup,
                           const StepOptions &options) {
  const Layout &layout = impl_->layout.parsedLayout();
  if (layout.grad != Dtype::F32)
    throw std::invalid_argument("optrt::Optimizer::step: layout '" + layout.str() + "' takes gradients as " +
                                dtypeName(layout.grad) +
                                "; pass them in that format with stepStored, not as float");
  std::vector<std::vector<const void *>> grads;
  grads.reserve(gradsPerGroup.size());
  for (const auto &group : gradsPerGroup)
    grads.emplace_back(group.begin(), group.end());
  return impl_->stepImpl(grads, options);
}

StepResult Optimizer::stepStored(const std::vector<std::vector<const void *>> &gradsPerGroup,
                                 const StepOptions &options) {
  return impl_->stepImpl(gradsPerGroup, options);
}

double Optimizer::Impl::gradSumOfSquares() {
  const std::vector<Chunk> &table = chunks.chunks();
  gradPartials.resize(table.size());
  Dtype dtype = layout.parsedLayout().grad;
  size_t perTensor = buffersPerTensor();
  const std::vector<size_t> &owned = plan.ownedChunks();
  auto readChunk = [&](size_t i) {
    const Chunk &chunk = table[owned[i]];
    gradPartials[owned[i]] = sumOfSquares(dtype, buffers[chunk.tensor * perTensor + 1], chunk.begin, chunk.end);
  };
  forOwnedChunks(readChunk);
  if (comm)
    gatherChunkValues(gradPartials.data(), 1, 1);
  double sum = 0.0;
  for (double partial : gradPartials)
    sum += partial;
  return sum;
}

namespace {

/// What `schedule` gives hyper `info` of group g at its next step, or a
/// std::invalid_argument naming all of them when that is outside the
/// hyper's range.
double nextScheduledValue(const Schedule &schedule, const HyperInfo &info, size_t g, int64_t steps,
                          const char *caller) {
  double value = schedule(steps);
  if (!std::isfinite(value) || !info.range.contains(value))
    throw std::invalid_argument(std::string(caller) + ": " + schedule.description() + " gives hyper '" + info.name +
                                "' of group " + std::to_string(g) + " the value " + HyperRange::format(value) +
                                " at its step " + std::to_string(steps + 1) + ", outside its range " +
                                info.range.str());
  return value;
}

} // namespace

std::vector<Optimizer::Impl::ScheduledValue> Optimizer::Impl::scheduledValues(const char *caller) const {
  std::vector<ScheduledValue> values;
  for (size_t g = 0; g < groups.size(); ++g)
    for (const auto &[hyper, schedule] : groups[g].schedules)
      values.push_back(
          {g, hyper, nextScheduledValue(schedule, layout.rule().hypers[hyper], g, groups[g].steps, caller)});
  return values;
}


StepResult Optimizer::Impl::stepImpl(const std::vector<std::vector<const void *>> &gradsPerGroup,
                                     const StepOptions &options) {
  static const char *caller = "optrt::Optimizer::step";
  Impl &s = *this;
  std::vector<ScheduledValue> scheduled;
  std::vector<std::vector<const std::vector<const void *> *>> inputValues;
  auto check = [&] {
    s.validateGrads(gradsPerGroup);
    checkGradientOptions(options.lossScale, options.lossScale != 1.0, options.maxGradNorm, options.clipValue,
                         s.layout, caller);
    inputValues = validatedInputs<const void *>(s.layout.rule(), s.groups, options.inputs, "optrt::Optimizer::step");
    scheduled = s.scheduledValues(caller);
  };
  s.commSeconds = 0;
  StepResult result;
  if (s.comm) {
    // Counts and options that differ would make the ranks' collectives differ.
    CommTimer timer(s.commSeconds);
    checkOnEveryRank(*s.comm, caller, "the step's arguments",
                     describeStep(s.stepCount, s.tensors.size(), options, s.groups, s.layout.rule().hypers), check);
  } else {
    check();
  }
  s.inputValues = std::move(inputValues);
  if (s.gradsInShard()) {
    s.reduceScatterGradients(gradsPerGroup);
    s.reduceScatterInputs();
  }
  s.prepareStep(gradsPerGroup);

  double gradScale = 1.0 / options.lossScale;
  if (options.checkFinite || options.lossScale != 1.0 || options.maxGradNorm) {
    double sumOfSquares = s.gradSumOfSquares();
    result.gradNorm = std::sqrt(sumOfSquares) / options.lossScale;
    if (!std::isfinite(sumOfSquares)) {
      result.skipped = true;
      result.communicationSeconds = s.commSeconds;
      return result;
    }
    if (options.maxGradNorm) {
      // torch.nn.utils.clip_grad_norm_: clamp(max / (norm + 1e-6), max=1).
      result.clipCoefficient = std::min(1.0, *options.maxGradNorm / (result.gradNorm + 1e-6));
      gradScale *= result.clipCoefficient;
    }
  }

  for (const ScheduledValue &value : scheduled)
    s.groups[value.group].hypers[value.hyper] = value.value;
  int scaleHyper = s.layout.stepHyper(kGradScaleHyper), clipHyper = s.layout.stepHyper(kGradClipHyper);
  for (Group &group : s.groups) {
    if (scaleHyper >= 0)
      group.hypers[scaleHyper] = gradScale;
    if (clipHyper >= 0)
      group.hypers[clipHyper] = options.clipValue.value_or(kGradClipDefault);
  }
  const std::vector<InputInfo> &ruleInputs = s.layout.rule().inputs;
  for (size_t slot = 0; slot < ruleInputs.size(); ++slot) {
    int given = s.layout.stepHyper(givenHyper(ruleInputs[slot].name));
    for (size_t g = 0; given >= 0 && g < s.groups.size(); ++g)
      s.groups[g].hypers[given] = s.inputValues[slot][g] ? 1.0 : 0.0;
  }
  for (int phase = 0; phase < s.layout.rule().numPhases; ++phase) {
    s.runPhase(phase);
    s.combinePhase(phase);
  }
  s.updateScalars();
  if (s.comm)
    s.gatherParams();
  for (Group &group : s.groups)
    ++group.steps;
  ++s.stepCount;
  result.communicationSeconds = s.commSeconds;
  return result;
}

void Optimizer::schedule(const std::string &name, Schedule schedule, int group) {
  static const char *caller = "optrt::Optimizer::schedule";
  Impl &s = *impl_;
  refuseStepHyper(name, caller);
  size_t index = s.layout.hyperIndex(name, caller);
  const HyperInfo &info = s.layout.rule().hypers[index];
  if (info.fixed)
    throw std::invalid_argument(std::string(caller) + ": hyper '" + name + "' of rule '" + s.layout.rule().name +
                                "' is fixed (folded into the kernels); it cannot follow a schedule");
  if (group != -1)
    s.checkedGroup(group, caller);
  for (size_t g = 0; g < s.groups.size(); ++g) {
    if (group != -1 && static_cast<size_t>(group) != g)
      continue;
    nextScheduledValue(schedule, info, g, s.groups[g].steps, caller);
  }
  for (size_t g = 0; g < s.groups.size(); ++g)
    if (group == -1 || static_cast<size_t>(group) == g)
      s.groups[g].schedules.insert_or_assign(index, schedule);
}

void Optimizer::unschedule(const std::string &name, int group) {
  static const char *caller = "optrt::Optimizer::unschedule";
  Impl &s = *impl_;
  size_t index = s.layout.hyperIndex(name, caller);
  if (group != -1)
    s.checkedGroup(group, caller);
  for (size_t g = 0; g < s.groups.size(); ++g)
    if (group == -1 || static_cast<size_t>(group) == g)
      s.groups[g].schedules.erase(index);
}

void Optimizer::setHyper(const std::string &name, double value, int group) {
  setGroupHyper(impl_->groups, impl_->layout, name, value, group, "optrt::Optimizer::setHyper");
}

double Optimizer::hyper(const std::string &name, int group) const {
  static const char *caller = "optrt::Optimizer::hyper";
  const Impl &s = *impl_;
  size_t index = s.layout.hyperIndex(name, caller);
  return s.checkedGroup(group, caller).hypers[index];
}

std::span<float> Optimizer::state(const std::string &name, int group, size_t tensor) {
  std::span<const float> view = std::as_const(*this).state(name, group, tensor);
  // The arena is ours and mutable; only this const view added the const.
  return {const_cast<float *>(view.data()), view.size()};
}

std::span<float> Optimizer::Impl::axisState(const Tensor &t, const std::string &name) const {
  int b = findBuffer(t.layout->buffers, BufferRole::AxisState, static_cast<int>(layout.stateIndex(name)));
  if (b < 0)
    return {};
  size_t n = spanValues(layout.rule().states[layout.stateIndex(name)].span, t.matrixDims);
  return {t.axisBuffer(static_cast<size_t>(b)), n};
}

std::span<const float> Optimizer::state(const std::string &name, int group, size_t tensor) const {
  static const char *caller = "optrt::Optimizer::state";
  const Impl &s = *impl_;
  s.elementwiseSlot(name, caller);
  const Tensor &t = s.checkedTensor(group, tensor, caller);
  if (std::span<float> values = s.axisState(t, name); values.data())
    return values;
  size_t b = s.stateBuffer(t, name, caller);
  Dtype dtype = t.layout->buffers[b].dtype;
  if (dtype != Dtype::F32)
    throw std::invalid_argument(std::string(caller) + ": state '" + name + "' of " + tensorName(tensor, group) +
                                " is stored as " + dtypeName(dtype) + " (layout '" + t.layout->name +
                                "'); read a decoded copy with readState");
  return {static_cast<const float *>(s.bufferAt(t, b)), t.owned.size()};
}

std::vector<float> Optimizer::readState(const std::string &name, int group, size_t tensor) const {
  static const char *caller = "optrt::Optimizer::readState";
  const Impl &s = *impl_;
  s.elementwiseSlot(name, caller);
  const Tensor &t = s.checkedTensor(group, tensor, caller);
  if (std::span<float> values = s.axisState(t, name); values.data())
    return {values.begin(), values.end()};
  size_t b = s.stateBuffer(t, name, caller);
  std::vector<float> values(t.owned.size());
  decodeToF32(t.layout->buffers[b].dtype, s.bufferAt(t, b), s.absmaxOf(t, b), values);
  return values;
}

void Optimizer::writeState(const std::string &name, int group, size_t tensor, std::span<const float> values) {
  static const char *caller = "optrt::Optimizer::writeState";
  Impl &s = *impl_;
  s.elementwiseSlot(name, caller);
  const Tensor &t = s.checkedTensor(group, tensor, caller);
  if (std::span<float> target = s.axisState(t, name); target.data()) {
    if (values.size() != target.size())
      throw std::invalid_argument(std::string(caller) + ": " + std::to_string(values.size()) + " values for state '" +
                                  name + "' of " + tensorName(tensor, group) + ", which holds " +
                                  std::to_string(target.size()) + " (one per row or column of its matrices)");
    std::copy(values.begin(), values.end(), target.begin());
    return;
  }
  if (values.size() != t.owned.size())
    throw std::invalid_argument(std::string(caller) + ": " + std::to_string(values.size()) + " values for " +
                                tensorName(tensor, group) + ", which has " + std::to_string(t.owned.size()) +
                                (s.comm ? " elements on this rank" : " elements"));
  size_t b = s.stateBuffer(t, name, caller);
  encodeF32(t.layout->buffers[b].dtype, values, s.bufferAt(t, b), const_cast<float *>(s.absmaxOf(t, b)));
}

std::vector<float> Optimizer::master(int group, size_t tensor) const {
  static const char *caller = "optrt::Optimizer::master";
  const Impl &s = *impl_;
  const Tensor &t = s.checkedTensor(group, tensor, caller);
  for (size_t b = 0; b < t.layout->buffers.size(); ++b) {
    if (t.layout->buffers[b].role != BufferRole::Master)
      continue;
    if (t.layout->buffers[b].dtype != Dtype::Remainder) {
      const float *data = static_cast<const float *>(s.bufferAt(t, b));
      return {data, data + t.owned.size()};
    }
    const auto *param = static_cast<const uint16_t *>(t.param) + t.owned.begin;
    const auto *remainder = static_cast<const int16_t *>(s.bufferAt(t, b));
    std::vector<float> values(t.owned.size());
    for (size_t i = 0; i < values.size(); ++i)
      values[i] = joinMaster(param[i], remainder[i]);
    return values;
  }
  throw std::invalid_argument(std::string(caller) + ": layout '" + t.layout->name + "' has no master copy");
}

std::pair<size_t, size_t> Optimizer::ownedRange(int group, size_t tensor) const {
  const Tensor &t = impl_->checkedTensor(group, tensor, "optrt::Optimizer::ownedRange");
  return {t.owned.begin, t.owned.end};
}

const std::string &Optimizer::tensorLayout(int group, size_t tensor) const {
  return impl_->checkedTensor(group, tensor, "optrt::Optimizer::tensorLayout").layout->name;
}

MemoryReport Optimizer::Impl::memoryOf(bool ownedOnly, const char *caller) const {
  if (tensors.empty())
    throw std::logic_error(std::string(caller) + ": the optimizer has no parameters");
  std::vector<size_t> sizes;
  MemoryOptions options;
  for (const Tensor &t : tensors) {
    sizes.push_back(t.size);
    if (ownedOnly)
      options.ownedElements.push_back(t.owned.size());
    // States per row, column or matrix count by the tensor's matrices.
    if (layout.readsMatrices())
      options.shapes.push_back({static_cast<size_t>(t.matrixDims[0]), static_cast<size_t>(t.matrixDims[1]),
                                static_cast<size_t>(t.matrixDims[2])});
  }
  options.smallTensorElements = smallTensorElements;
  return optrt::memoryReport(layout.rule().states, layout.parsedLayout(), sizes, options);
}

MemoryReport Optimizer::memoryReport() const {
  return impl_->memoryOf(impl_->comm != nullptr, "optrt::Optimizer::memoryReport");
}

MemoryReport Optimizer::memoryReportAllRanks() const {
  // The ranks' parts cover every element once, at q8 block boundaries: their
  // bytes add up to those of whole tensors.
  return impl_->memoryOf(false, "optrt::Optimizer::memoryReportAllRanks");
}

double Optimizer::scalarState(const std::string &name, int group, size_t tensor) const {
  static const char *caller = "optrt::Optimizer::scalarState";
  const Impl &s = *impl_;
  size_t index = s.layout.scalarIndex(name, caller);
  const Group &g = s.checkedGroup(group, caller);
  s.checkedTensor(group, tensor, caller);
  return s.scalars[(g.firstTensor + tensor) * s.layout.numScalar() + index];
}

size_t Optimizer::stateBytes() const {
  size_t axisBytes = 0;
  for (const Tensor &t : impl_->tensors)
    axisBytes += t.axisStates.size() * sizeof(float);
  return impl_->arena.bytes() + impl_->scalars.size() * sizeof(double) + axisBytes;
}

double Optimizer::stateBytesPerParam() const {
  if (impl_->numParams == 0)
    return 0.0;
  return static_cast<double>(stateBytes()) / static_cast<double>(impl_->numParams);
}

} // namespace optrt
