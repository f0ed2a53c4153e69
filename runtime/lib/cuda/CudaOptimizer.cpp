// optrt::CudaOptimizer: construction, groups and the step (the state's
// reads and writes are in CudaOptimizerState.cpp, a sharded step's
// collectives in ShardedStep.cpp).
#include "CudaOptimizerImpl.h"

#include "../shard/Agreement.h"
#include "../shard/Describe.h"
#include "../shard/JoinedRuns.h"
#include "../step/StepOptionsCheck.h"
#include "optrt/Storage.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <utility>

namespace optrt {

using namespace cuda;
using namespace detail;

namespace {

/// Throws std::invalid_argument when the device code does not match the
/// rule description (wrong rule, per-phase tables, strides): checked before
/// the driver is touched.
void checkConsistent(const RuleLayout &layout, const LayoutKernels &host, const CudaKernels *k) {
  auto fail = [](const std::string &problem) {
    throw std::invalid_argument("optrt::CudaOptimizer: " + problem);
  };
  if (!k)
    fail("the CUDA kernels are null");
  const RuleKernels &rule = layout.rule();
  if (k->rule != rule.name)
    fail("the CUDA kernels are for rule '" + k->rule + "', the host kernels for '" + rule.name + "'");
  // The same rule built with other fixed hypers has other uniform slots,
  // and setHyper would silently miss a hyper folded on one side only.
  std::vector<std::pair<std::string, double>> hostFixed;
  for (const HyperInfo &hyper : rule.hypers)
    if (hyper.fixed)
      hostFixed.emplace_back(hyper.name, hyper.defaultValue);
  if (hostFixed != k->fixedHypers)
    fail("the CUDA kernels and the host kernels of rule '" + rule.name +
         "' were built with different fixed hypers");
  size_t phases = static_cast<size_t>(rule.numPhases);
  if (k->uniformsEntries.size() != phases || k->elementEntries.size() != phases ||
      k->finishEntries.size() != phases)
    fail("the CUDA kernels have entries for a different number of phases than the rule's " +
         std::to_string(phases));
  bool columns = false;
  for (size_t p = 0; p < phases; ++p) {
    // finish[p] combines the phase's reductions over tensors and its column sums.
    bool sumsColumns = !layout.columnSums(static_cast<int>(p)).empty();
    bool reduces = layout.reductionEnd(static_cast<int>(p)) > layout.reductionBegin(static_cast<int>(p));
    columns |= sumsColumns;
    if (k->uniformsEntries[p].empty() || k->elementEntries[p].empty() ||
        (reduces || sumsColumns) == k->finishEntries[p].empty())
      fail("the CUDA kernels' entries of phase " + std::to_string(p) + " do not match the rule");
  }
  if ((layout.numScalar() > 0) == k->scalarsEntry.empty() || k->advanceEntry.empty())
    fail("the CUDA kernels' scalar-state or advance entry does not match the rule");
  bool stepHypers = layout.stepHyper(kGradScaleHyper) >= 0 && layout.stepHyper(kGradClipHyper) >= 0;
  if (k->gradStatsEntry.empty() != k->stepOptionsEntry.empty() || stepHypers == k->gradStatsEntry.empty())
    fail("the CUDA kernels' step-option entries do not match the rule's step hypers");
  size_t keySlot = layout.parsedLayout().stochastic || rule.usesRandom ? 1 : 0;
  if (k->layout != host.name)
    fail("the CUDA kernels are for layout '" + k->layout + "', not '" + host.name + "'");
  if (k->blockSize <= 0 || k->blockSize > 1024 ||
      k->buffersPerTensor != static_cast<int>(host.buffers.size()) ||
      static_cast<size_t>(k->uniformStride) < std::max<size_t>(1, layout.maxUniforms() + keySlot) ||
      static_cast<size_t>(k->partialStride) < std::max<size_t>(1, layout.maxReductionsPerPhase() + (columns ? 1 : 0)))
    fail("the CUDA kernels' launch facts do not match the rule");
  if (k->images.empty())
    fail("the CUDA kernels hold no device code");
  for (const CudaImage &image : k->images)
    if (image.ptx.empty())
      fail("the CUDA image for " + image.arch + " has no PTX");
}

} // namespace


std::vector<int64_t> CudaOptimizer::Impl::deviceCounters() const {
  if (!tables.get())
    return {stepCount};
  std::vector<double> counters(1 + groups.size());
  ContextScope scope(*d, context);
  d->check(d->cuCtxSynchronize(), "cuCtxSynchronize");
  d->check(d->cuMemcpyDtoH_v2(counters.data(), tables.get() + tableLayout.counter, sizeof(double)),
           "cuMemcpyDtoH_v2");
  d->check(d->cuMemcpyDtoH_v2(counters.data() + 1, tables.get() + tableLayout.counter + sizeof(CounterRecord),
                              groups.size() * sizeof(double)),
           "cuMemcpyDtoH_v2");
  return std::vector<int64_t>(counters.begin(), counters.end());
}

CudaStepRecord CudaOptimizer::Impl::deviceStepRecord() const {
  if (!tables.get())
    return stepRecord; // the first addGroup uploads it
  CudaStepRecord record;
  ContextScope scope(*d, context);
  d->check(d->cuCtxSynchronize(), "cuCtxSynchronize");
  d->check(d->cuMemcpyDtoH_v2(&record, tables.get() + tableLayout.step, sizeof record), "cuMemcpyDtoH_v2");
  return record;
}

void CudaOptimizer::Impl::uploadStepFields(size_t first, size_t end, CUstream stream) const {
  d->check(d->cuMemcpyHtoDAsync_v2(tables.get() + tableLayout.step + first,
                                   reinterpret_cast<const uint8_t *>(&stepRecord) + first, end - first, stream),
           "cuMemcpyHtoDAsync_v2");
}

void CudaOptimizer::Impl::selectKernels(const std::vector<std::shared_ptr<const CudaKernels>> &device) {
  std::vector<const LayoutKernels *> wanted{&layout.layout()};
  // A tensor of 0 elements is under any positive threshold: the fallback,
  // where the layout has one.
  if (const LayoutKernels *fallback = &layout.layoutFor(0, 1); fallback != wanted[0])
    wanted.push_back(fallback);
  for (const LayoutKernels *host : wanted) {
    std::shared_ptr<const CudaKernels> found;
    std::string given;
    for (const auto &k : device) {
      if (!k)
        throw std::invalid_argument("optrt::CudaOptimizer: the CUDA kernels are null");
      if (k->layout == host->name)
        found = k;
      given += (given.empty() ? "" : ", ") + ("'" + k->layout + "'");
    }
    if (!found)
      throw std::invalid_argument("optrt::CudaOptimizer: no CUDA kernels for layout '" + host->name + "' of rule '" +
                                  layout.rule().name + "' (given: " + (given.empty() ? "none" : given) +
                                  "); build them with optc --emit=so --cuda --layout=" + layout.layout().name);
    checkConsistent(layout, *host, found.get());
    runs.push_back({host, std::move(found), nullptr, {}, 0, 0});
  }
  if (runs.size() > 1 && chunkElements % kQ8BlockElements != 0)
    throw std::invalid_argument("optrt::CudaOptimizer: layout '" + layout.layout().name +
                                "' has q8 states: chunkElements (" + std::to_string(chunkElements) +
                                ") must be a multiple of 256, the q8 block");
  if (runs.size() > 1 && (runs[1].kernels->uniformStride != runs[0].kernels->uniformStride ||
                          runs[1].kernels->partialStride != runs[0].kernels->partialStride))
    throw std::invalid_argument("optrt::CudaOptimizer: the CUDA kernels of layouts '" + runs[0].host->name +
                                "' and '" + runs[1].host->name + "' have different table strides");
}

const Group &CudaOptimizer::Impl::checkedGroup(int group, const char *caller) const {
  return detail::checkedGroup(groups, group, caller);
}

const Tensor &CudaOptimizer::Impl::checkedTensor(int group, size_t tensor, const char *caller) const {
  return detail::checkedTensor(groups, tensors, group, tensor, caller);
}

void CudaOptimizer::Impl::checkDevicePointer(DevicePtr pointer, size_t bytes, size_t alignment,
                                             const std::string &what) const {
  if (pointer % alignment != 0)
    throw CudaError(CudaErrc::BadPointer, what + " (0x" + std::to_string(pointer) + ") is not " +
                                              std::to_string(alignment) + "-byte aligned");
  CUcontext owner = nullptr;
  CUresult result = d->cuPointerGetAttribute(&owner, CU_POINTER_ATTRIBUTE_CONTEXT, pointer);
  if (result == CUDA_ERROR_INVALID_VALUE)
    throw CudaError(CudaErrc::BadPointer,
                    what + " is not a device pointer the CUDA driver knows (cuPointerGetAttribute: " +
                        d->errorName(result) + ")",
                    "cuPointerGetAttribute", result);
  d->check(result, "cuPointerGetAttribute");
  if (!owner) {
    // Memory mapped with the virtual memory API (cuMemCreate/cuMemMap, as
    // PyTorch's expandable segments) belongs to a device, not a context.
    int ordinal = -1;
    d->check(d->cuPointerGetAttribute(&ordinal, CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL, pointer),
             "cuPointerGetAttribute");
    if (ordinal != device)
      throw CudaError(CudaErrc::WrongContext, what + " is memory of CUDA device " + std::to_string(ordinal) +
                                                   ", the optimizer runs on device " + std::to_string(device));
  } else if (owner != context) {
    throw CudaError(CudaErrc::WrongContext,
                    what + " belongs to another CUDA context than the optimizer's");
  }
  CUdeviceptr start = 0;
  size_t size = 0;
  d->check(d->cuPointerGetAttribute(&start, CU_POINTER_ATTRIBUTE_RANGE_START_ADDR, pointer),
           "cuPointerGetAttribute");
  d->check(d->cuPointerGetAttribute(&size, CU_POINTER_ATTRIBUTE_RANGE_SIZE, pointer),
           "cuPointerGetAttribute");
  if (pointer + bytes > start + size)
    throw CudaError(CudaErrc::BadPointer,
                    what + " needs " + std::to_string(bytes) + " bytes but its allocation has only " +
                        std::to_string(start + size - pointer) + " from there (wrong size?)");
}

std::vector<double> CudaOptimizer::Impl::hyperTable() const {
  std::vector<double> table;
  for (const Group &group : groups)
    table.insert(table.end(), group.hypers.begin(), group.hypers.end());
  return table;
}

void CudaOptimizer::Impl::acquireContext(int ordinal) {
  d = &driver();
  int count = 0;
  d->check(d->cuDeviceGetCount(&count), "cuDeviceGetCount");
  if (count == 0)
    throw CudaError(CudaErrc::NoDevice, "no CUDA GPU: the driver sees no device");
  if (ordinal < 0) {
    d->check(d->cuCtxGetCurrent(&context), "cuCtxGetCurrent");
    if (context)
      d->check(d->cuCtxGetDevice(&device), "cuCtxGetDevice");
    else
      ordinal = 0;
  } else if (ordinal >= count) {
    throw CudaError(CudaErrc::NoDevice, "CUDA device " + std::to_string(ordinal) +
                                            " requested; the driver sees " + std::to_string(count));
  }
  if (!context) {
    d->check(d->cuDeviceGet(&device, ordinal), "cuDeviceGet");
    d->check(d->cuDevicePrimaryCtxRetain(&context, device), "cuDevicePrimaryCtxRetain");
    primaryRetained = true;
  }
  d->check(d->cuDeviceGetAttribute(&multiprocessors, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, device),
           "cuDeviceGetAttribute");
}

void CudaOptimizer::Impl::launch(CUfunction function, const std::string &name, size_t threads,
                                 unsigned maxBlocks, CUstream stream, std::vector<void *> args) const {
  size_t block = static_cast<size_t>(kernels().blockSize);
  size_t blocks = std::clamp<size_t>((threads + block - 1) / block, 1, maxBlocks);
  CUresult result = d->cuLaunchKernel(function, static_cast<unsigned>(blocks), 1, 1,
                                      static_cast<unsigned>(block), 1, 1, 0, stream, args.data(), nullptr);
  if (result != CUDA_SUCCESS)
    d->check(result, ("cuLaunchKernel(" + name + ")").c_str());
}

CudaOptimizer::CudaOptimizer(std::shared_ptr<const RuleKernels> host,
                             std::vector<std::shared_ptr<const CudaKernels>> device, CudaOptimizerOptions options) {
  if (options.chunkElements == 0)
    throw std::invalid_argument("optrt::CudaOptimizer: chunkElements must be at least 1");
  auto make = [&] {
    auto impl = std::make_unique<Impl>(host, options);
    impl->selectKernels(device);
    impl->acquireContext(options.device);
    for (Run &run : impl->runs)
      run.module = loadModule(*impl->d, impl->context, impl->device, run.kernels);
    impl_ = std::move(impl);
  };
  if (!options.communicator) {
    make();
    return;
  }
  // Sharded: one rank's bad rule, layout or GPU must not leave the others
  // waiting in the next collective.
  OptimizerOptions described;
  described.layout = options.layout;
  described.chunkElements = options.chunkElements;
  described.smallTensorElements = options.smallTensorElements;
  described.seed = options.seed;
  described.gradients = options.gradients;
  checkOnEveryRank(*options.communicator, "optrt::CudaOptimizer", "the rule and the optimizer's options",
                   describeOptions(host.get(), described), [&] {
                     make();
                     impl_->shard = std::make_unique<CudaShard>(options.communicator, options.gradients);
                   });
}

CudaOptimizer::CudaOptimizer(std::shared_ptr<const RuleKernels> host, std::shared_ptr<const CudaKernels> device,
                             CudaOptimizerOptions options)
    : CudaOptimizer(std::move(host), std::vector<std::shared_ptr<const CudaKernels>>{std::move(device)}, options) {}

namespace {

std::vector<std::shared_ptr<const CudaKernels>> embeddedCudaKernels(const std::shared_ptr<const RuleKernels> &artifact) {
  if (!artifact)
    throw std::invalid_argument("optrt::CudaOptimizer: RuleKernels is null");
  std::vector<std::shared_ptr<const CudaKernels>> kernels;
  for (const LayoutKernels &layout : artifact->layouts)
    if (layout.cuda)
      kernels.push_back(layout.cuda);
  if (kernels.empty())
    throw std::invalid_argument("optrt::CudaOptimizer: rule '" + artifact->name +
                                "' carries no CUDA kernels; build it with the CUDA target (optc "
                                "--emit=so --cuda, or optdsl_add_rule(... TARGETS cpu cuda))");
  return kernels;
}

} // namespace

CudaOptimizer::CudaOptimizer(std::shared_ptr<const RuleKernels> artifact, CudaOptimizerOptions options)
    : CudaOptimizer(artifact, embeddedCudaKernels(artifact), options) {}

CudaOptimizer::~CudaOptimizer() = default;
CudaOptimizer::CudaOptimizer(CudaOptimizer &&) noexcept = default;
CudaOptimizer &CudaOptimizer::operator=(CudaOptimizer &&) noexcept = default;

const RuleKernels &CudaOptimizer::rule() const { return impl_->layout.rule(); }
const std::string &CudaOptimizer::imageInUse() const { return impl_->runs[0].module->image; }
int CudaOptimizer::numGroups() const { return static_cast<int>(impl_->groups.size()); }
size_t CudaOptimizer::numTensors(int group) const {
  return impl_->checkedGroup(group, "optrt::CudaOptimizer::numTensors").numTensors;
}
int64_t CudaOptimizer::stepCount() const { return impl_->deviceCounters()[0]; }
int64_t CudaOptimizer::stepCount(int group) const {
  impl_->checkedGroup(group, "optrt::CudaOptimizer::stepCount");
  return impl_->deviceCounters()[static_cast<size_t>(group) + 1];
}
size_t CudaOptimizer::numParams() const { return impl_->numParams; }

int CudaOptimizer::addGroup(std::vector<DevicePtr> params, std::vector<size_t> sizes,
                            std::map<std::string, double> hyperOverrides, std::vector<std::vector<size_t>> shapes) {
  static const char *caller = "optrt::CudaOptimizer::addGroup";
  Impl &s = *impl_;
  const RuleKernels &rule = s.layout.rule();
  size_t groupIndex = s.groups.size();
  auto fail = [&](const std::string &problem) {
    throw std::invalid_argument(std::string(caller) + ": group " + std::to_string(groupIndex) + ": " +
                                problem);
  };

  const Driver &d = *s.d;
  Dtype paramDtype = s.paramDtype();
  std::vector<double> hypers;
  // Everything is checked before anything changes; sharded, on every rank.
  auto check = [&] {
    // Plain argument checks first: no driver call for a malformed request.
    if (std::string problem = newGroupProblem(params, sizes); !problem.empty())
      fail(problem);
    if (std::string problem = shapeProblem(shapes, sizes); !problem.empty())
      fail(problem);
    std::vector<ParamRange> ranges;
    for (size_t g = 0; g < s.groups.size(); ++g)
      for (size_t i = 0; i < s.groups[g].numTensors; ++i) {
        const Tensor &t = s.tensors[s.groups[g].firstTensor + i];
        ranges.push_back({t.param, t.param + elementBytes(paramDtype, t.size), g, i});
      }
    for (size_t i = 0; i < params.size(); ++i)
      ranges.push_back({params[i], params[i] + elementBytes(paramDtype, sizes[i]), groupIndex, i});
    if (std::string clash = firstOverlap(std::move(ranges)); !clash.empty())
      fail(clash);
    hypers = groupHypers(s.layout, hyperOverrides, caller);
    ContextScope scope(d, s.context);
    for (size_t i = 0; i < params.size(); ++i)
      s.checkDevicePointer(params[i], elementBytes(paramDtype, sizes[i]), paramDtype == Dtype::F32 ? 4 : 2,
                           "the param of " + tensorName(i, groupIndex));
  };
  if (s.shard)
    checkOnEveryRank(*s.shard->comm, caller, "the new group",
                     describeGroup(static_cast<int>(groupIndex), sizes, hyperOverrides, shapes), check);
  else
    check();

  // Sharded: each rank keeps an even share of the group's state bytes (an
  // element weighs what its layout keeps for it, as on the CPU), cut
  // between the chunks the table below makes.
  size_t numBefore = s.tensors.size();
  std::optional<detail::ShardPlan> plan;
  std::vector<uint8_t> paramJoins;
  if (s.shard) {
    std::vector<uint64_t> weights;
    std::vector<size_t> chunkLengths;
    for (size_t i = 0; i < sizes.size(); ++i) {
      size_t n = sizes[i];
      int run = s.runs.size() > 1 && n < s.smallTensorElements ? 1 : 0;
      uint64_t weight = 0;
      for (const BufferDesc &buffer : s.runs[run].host->buffers)
        if (keptByOptimizer(buffer))
          weight += bufferBytes(buffer, size_t{1} << 14);
      weights.push_back(weight);
      // A rule that reads matrices runs whole rows per chunk.
      size_t rowLength = s.layout.readsMatrices()
                             ? matrixView(shapes.empty() ? std::vector<size_t>{} : shapes[i], n).cols
                             : 1;
      chunkLengths.push_back(ChunkTable(s.chunkElements).chunkLength(rowLength));
    }
    plan = s.shard->plan;
    plan->addGroup(sizes, weights, chunkLengths);
    std::vector<const void *> pointers;
    for (DevicePtr param : params)
      pointers.push_back(reinterpret_cast<const void *>(param));
    paramJoins = joinsOnEveryRank(*s.shard->comm, pointers, sizes, elementBytes(paramDtype, 1));
  }

  // Owned buffers of the new tensors, each on its own 256-byte boundary.
  size_t numScalar = s.layout.numScalar();
  size_t newArenaBytes = s.arenaBytes;
  std::vector<Tensor> newTensors = s.tensors;
  for (size_t i = 0; i < params.size(); ++i) {
    int run = s.runs.size() > 1 && sizes[i] < s.smallTensorElements ? 1 : 0;
    const std::vector<size_t> &shape = shapes.empty() ? std::vector<size_t>{} : shapes[i];
    Tensor tensor{params[i], sizes[i], groupIndex, run, {}, shapeDimensions(shape, sizes[i])};
    tensor.ownedEnd = sizes[i];
    if (plan) {
      detail::OwnedRange owned = plan->owned(numBefore + i);
      tensor.ownedBegin = owned.begin;
      tensor.ownedEnd = owned.end;
    }
    if (s.layout.readsMatrices())
      tensor.matrixDims = matrixDimensions(shape, sizes[i]);
    // The CUDA kernels quantise a row's q8 blocks as the row is computed,
    // thread j holding element j of each: rows must be whole q8 blocks.
    if (s.layout.readsMatrices() && run == 0 && s.runs.size() > 1 &&
        tensor.matrixDims[2] % static_cast<int64_t>(kQ8BlockElements) != 0)
      fail(tensorName(i, groupIndex) + " has rows of " + std::to_string(tensor.matrixDims[2]) +
           " columns; the CUDA kernels of rule '" + rule.name + "' keep q8 states only for rows of whole q8 blocks "
           "(a multiple of " + std::to_string(kQ8BlockElements) + " columns). Keep its states in f32 with "
           "smallTensorElements above " + std::to_string(sizes[i]) + ", use a 16-bit state layout, or the CPU "
           "optimizer");
    for (const BufferDesc &buffer : s.runs[run].host->buffers) {
      size_t at = alignUp(newArenaBytes, kSegmentAlign);
      tensor.offsets.push_back(at);
      if (buffer.role == BufferRole::Param || buffer.role == BufferRole::Grad)
        continue;
      if (__builtin_add_overflow(at, tensorBufferBytes(buffer, tensor.owned(), tensor.matrixDims, rule.states),
                                 &newArenaBytes))
        fail("its state would exceed the address space");
    }
    newTensors.push_back(std::move(tensor));
  }
  std::vector<float> elementwiseInit(s.layout.numElementwise());
  std::vector<double> scalarInit(numScalar);
  rule.init(hypers.data(), elementwiseInit.data(), scalarInit.data());

  // The chunk table: the layout's tensors' chunks, then the fallback's (a
  // ChunkTable per run, over its tensors in order), each tensor's chunks
  // contiguous and in element order.
  size_t numTensors = newTensors.size();
  std::vector<int64_t> chunkRecords;
  std::vector<int64_t> tensorRecords(numTensors * 4);
  std::vector<std::pair<size_t, size_t>> runChunks;
  for (int run = 0; run < static_cast<int>(s.runs.size()); ++run) {
    ChunkTable table(s.chunkElements);
    std::vector<size_t> global; // the run's k-th tensor is tensor global[k]
    for (size_t t = 0; t < numTensors; ++t)
      if (newTensors[t].run == run) {
        global.push_back(t);
        // A rule that reads matrices runs whole rows per chunk.
        table.addTensor(newTensors[t].size,
                        s.layout.readsMatrices() ? static_cast<size_t>(newTensors[t].matrixDims[2]) : 1);
      }
    size_t first = chunkRecords.size() / 3;
    for (const Chunk &chunk : table.chunks())
      chunkRecords.insert(chunkRecords.end(), {static_cast<int64_t>(global[chunk.tensor]), chunk.begin, chunk.end});
    for (size_t k = 0; k < global.size(); ++k) {
      int64_t *record = &tensorRecords[global[k] * 4];
      record[0] = static_cast<int64_t>(newTensors[global[k]].group);
      record[1] = static_cast<int64_t>(first + table.firstChunk(k));
      record[2] = static_cast<int64_t>(first + table.endChunk(k));
      record[3] = static_cast<int64_t>(newTensors[global[k]].size);
    }
    runChunks.emplace_back(first, table.chunks().size());
  }
  size_t numChunks = chunkRecords.size() / 3;
  std::vector<ChunkSegment> segments;
  if (plan) {
    std::vector<size_t> tensorGroups, tensorSizes;
    for (const Tensor &tensor : newTensors) {
      tensorGroups.push_back(tensor.group);
      tensorSizes.push_back(tensor.size);
    }
    segments = chunkSegments(*plan, chunkRecords, runChunks, tensorGroups, tensorSizes);
  }
  // A rule that sums columns: each chunk's column partials, one region of
  // (the matrices it touches) x cols floats per column sum (CudaKernels.h).
  size_t columnSums = 0;
  for (int p = 0; p < rule.numPhases; ++p)
    columnSums = std::max(columnSums, s.layout.columnSums(p).size());
  std::vector<size_t> columnBegins;
  size_t columnFloats = 0;
  for (size_t c = 0; c < numChunks && columnSums > 0; ++c) {
    const std::array<int64_t, 3> &dims = newTensors[static_cast<size_t>(chunkRecords[c * 3])].matrixDims;
    columnBegins.push_back(columnFloats);
    columnFloats += columnRegion(dims[1], dims[2], chunkRecords[c * 3 + 1], chunkRecords[c * 3 + 2]).floats * columnSums;
  }

  // Allocations; the optimizer changes only after all of them succeeded.
  ContextScope scope(d, s.context);
  // Steps still running use the current arena and tables.
  d.check(d.cuCtxSynchronize(), "cuCtxSynchronize");

  size_t fallbackPerTensor = s.runs.size() > 1 ? s.runs[1].perTensor() : 0;
  TableLayout tl = TableLayout::make(numTensors, numChunks, s.groups.size() + 1, s.layout, s.kernels(),
                                     fallbackPerTensor, columnFloats);
  // Rounded up to whole segments: the last buffer's padding too (fill).
  DeviceMemory newArena(d, s.context, std::max<size_t>(alignUp(newArenaBytes, kSegmentAlign), kSegmentAlign),
                        "optimizer state arena");
  DeviceMemory newTables(d, s.context, tl.bytes, "optimizer tables");
  // Sharded with averaged gradients: the reduce-scatter's destination.
  DeviceMemory newGradShard;
  std::vector<DeviceMemory> newInputShards;
  if (plan && s.shard->gradients == ShardedGradients::Average && plan->ranks() > 1) {
    size_t bytes = elementBytes(s.gradDtype(), plan->ownedElements());
    newGradShard = DeviceMemory(d, s.context, bytes, "gradient shard");
    for (size_t input = 0; input < rule.inputs.size(); ++input)
      newInputShards.emplace_back(d, s.context, bytes, "input shard");
  }

  // Host images of the new tables; the counter and scalar states come back
  // from the device (graph replays may have advanced them).
  CounterRecord counter{static_cast<double>(s.stepCount), s.seed, 0};
  // The step segment: the host's record at first, then the device's (its
  // scale, tracker and results are the device's own).
  CudaStepRecord stepRecord = s.stepRecord;
  // A new group has taken no step: its kernels pass step 1 first.
  std::vector<double> groupSteps(s.groups.size() + 1, 0.0);
  std::vector<double> scalars(numTensors * numScalar);
  if (s.tables.get()) {
    d.check(d.cuMemcpyDtoH_v2(&counter.counter, s.tables.get() + s.tableLayout.counter, sizeof(double)),
            "cuMemcpyDtoH_v2");
    d.check(d.cuMemcpyDtoH_v2(&stepRecord, s.tables.get() + s.tableLayout.step, sizeof stepRecord),
            "cuMemcpyDtoH_v2");
    d.check(d.cuMemcpyDtoH_v2(groupSteps.data(), s.tables.get() + s.tableLayout.counter + sizeof(CounterRecord),
                              s.groups.size() * sizeof(double)),
            "cuMemcpyDtoH_v2");
    if (numScalar > 0)
      d.check(d.cuMemcpyDtoH_v2(scalars.data(), s.tables.get() + s.tableLayout.scalars,
                                s.tensors.size() * numScalar * sizeof(double)),
              "cuMemcpyDtoH_v2");
  }
  for (size_t i = 0; i < params.size(); ++i) {
    double *row = scalars.data() + (s.tensors.size() + i) * numScalar;
    std::copy(scalarInit.begin(), scalarInit.end(), row);
    setShapeScalars(s.layout, newTensors[s.tensors.size() + i].dims, row);
  }
  std::vector<std::vector<CUdeviceptr>> bufferTables;
  for (const Run &run : s.runs) {
    size_t per = run.perTensor();
    std::vector<CUdeviceptr> table = run.bufferTable;
    table.resize(numTensors * per, 0); // new gradients: set by the next step
    bufferTables.push_back(std::move(table));
  }
  for (size_t t = 0; t < numTensors; ++t) {
    const Tensor &tensor = newTensors[t];
    size_t per = s.runs[tensor.run].perTensor();
    CUdeviceptr *row = &bufferTables[tensor.run][t * per];
    row[0] = tensor.param;
    // Where element 0 would be: the arena holds the owned elements only.
    const std::vector<BufferDesc> &buffers = s.runs[tensor.run].host->buffers;
    for (size_t b = 2; b < per; ++b)
      row[b] = newArena.get() + tensor.offsets[b] -
               (keptByOptimizer(buffers[b]) ? bufferBytes(buffers[b], tensor.ownedBegin) : 0);
  }
  std::vector<Group> newGroups = s.groups;
  newGroups.push_back({hypers, s.tensors.size(), params.size()});
  std::vector<double> hyperTable;
  for (const Group &group : newGroups)
    hyperTable.insert(hyperTable.end(), group.hypers.begin(), group.hypers.end());

  // Host data of uploads in flight: kept until the synchronize below.
  std::vector<std::vector<uint8_t>> staged;
  auto uploadTo = [&](CUdeviceptr to, const void *data, size_t bytes) {
    if (bytes > 0)
      d.check(d.cuMemcpyHtoDAsync_v2(to, data, bytes, nullptr), "cuMemcpyHtoDAsync_v2");
  };
  auto upload = [&](size_t offset, const void *data, size_t bytes) { uploadTo(newTables.get() + offset, data, bytes); };
  if (s.arena.get())
    d.check(d.cuMemcpyDtoD_v2(newArena.get(), s.arena.get(), s.arenaBytes), "cuMemcpyDtoD_v2");
  // `bytes` bytes at `to` set to the repeated 32-bit `pattern`; the last
  // word may run up to 3 bytes past them, into the buffer's 256-byte padding.
  auto fill = [&](CUdeviceptr to, uint32_t pattern, size_t bytes) {
    d.check(d.cuMemsetD32_v2(to, pattern, (bytes + 3) / 4), "cuMemsetD32_v2");
  };
  for (size_t t = s.tensors.size(); t < numTensors; ++t) {
    const Tensor &tensor = newTensors[t];
    size_t n = tensor.owned();
    const std::vector<BufferDesc> &buffers = s.runs[tensor.run].host->buffers;
    for (size_t b = 0; b < buffers.size(); ++b) {
      const BufferDesc &buffer = buffers[b];
      CUdeviceptr at = newArena.get() + tensor.offsets[b];
      if (buffer.role == BufferRole::Master) {
        // The master starts as the exact value of the stored param: an f32
        // copy, or remainders of 0 (the param is the master's high half).
        if (buffer.dtype == Dtype::Remainder) {
          fill(at, 0, elementBytes(buffer.dtype, n));
          continue;
        }
        std::vector<uint8_t> param(elementBytes(paramDtype, n));
        std::vector<uint8_t> bytes(elementBytes(buffer.dtype, n));
        if (n > 0) // sharded, a tensor may have no elements on this rank
          d.check(d.cuMemcpyDtoH_v2(param.data(), tensor.param + elementBytes(paramDtype, tensor.ownedBegin),
                                    param.size()),
                  "cuMemcpyDtoH_v2");
        decodeToF32(paramDtype, param.data(), nullptr, {reinterpret_cast<float *>(bytes.data()), n});
        uploadTo(at, bytes.data(), bytes.size());
        // Moving a vector keeps its storage, which the upload reads.
        staged.push_back(std::move(bytes));
      } else if (buffer.role == BufferRole::Dims) {
        uploadTo(at, tensor.matrixDims.data(), sizeof tensor.matrixDims);
      } else if (buffer.role == BufferRole::AxisState) {
        fill(at, 0, tensorBufferBytes(buffer, n, tensor.matrixDims, rule.states));
      } else if (buffer.role == BufferRole::State) {
        // Every element starts at the same value, so every element is
        // stored alike (and every q8 block has the same absmax): the
        // encoding of one block, repeated by memset, whatever the size.
        size_t k = s.layout.stateSlot(rule.states[buffer.state].name, caller).index;
        std::vector<float> block(kQ8BlockElements, elementwiseInit[k]);
        std::vector<uint8_t> data(elementBytes(buffer.dtype, block.size()));
        float absmax = 0;
        encodeF32(buffer.dtype, block, data.data(), &absmax);
        uint32_t pattern = 0;
        std::memcpy(&pattern, data.data(), sizeof pattern);
        fill(at, pattern, elementBytes(buffer.dtype, n));
        int a = findBuffer(buffers, BufferRole::StateAbsmax, buffer.state);
        if (a >= 0) {
          std::memcpy(&pattern, &absmax, sizeof pattern);
          fill(newArena.get() + tensor.offsets[a], pattern, bufferBytes(buffers[a], n));
        }
      }
    }
  }
  upload(tl.tensors, tensorRecords.data(), tensorRecords.size() * sizeof(int64_t));
  upload(tl.chunks, chunkRecords.data(), chunkRecords.size() * sizeof(int64_t));
  for (size_t r = 0; r < s.runs.size(); ++r)
    upload(tl.buffers[r], bufferTables[r].data(), bufferTables[r].size() * sizeof(CUdeviceptr));
  upload(tl.hypers, hyperTable.data(), hyperTable.size() * sizeof(double));
  upload(tl.counter, &counter, sizeof(counter));
  upload(tl.counter + sizeof(CounterRecord), groupSteps.data(), groupSteps.size() * sizeof(double));
  upload(tl.scalars, scalars.data(), scalars.size() * sizeof(double));
  upload(tl.step, &stepRecord, sizeof stepRecord);
  // Each chunk's pointer to its column partials, in the last slot of its row
  // of partials, where the kernels find it.
  std::vector<double> partialRows(columnSums > 0 ? numChunks * s.kernels().partialStride : 0);
  for (size_t c = 0; c < columnBegins.size(); ++c) {
    CUdeviceptr region = newTables.get() + tl.columns + columnBegins[c] * sizeof(float);
    std::memcpy(&partialRows[(c + 1) * s.kernels().partialStride - 1], &region, sizeof region);
  }
  upload(tl.partials, partialRows.data(), partialRows.size() * sizeof(double));
  // Sharded, a gather of the partials brings other ranks' pointers in these
  // slots: the step writes this rank's back from here.
  std::vector<CUdeviceptr> columnPointers;
  for (size_t c = 0; c < columnBegins.size(); ++c)
    columnPointers.push_back(newTables.get() + tl.columns + columnBegins[c] * sizeof(float));
  columnBegins.push_back(columnFloats);
  d.check(d.cuCtxSynchronize(), "cuCtxSynchronize");

  // Commit: nothing below can fail.
  s.arena.swap(newArena);
  s.tables.swap(newTables);
  s.arenaBytes = newArenaBytes;
  s.tableLayout = tl;
  s.tensors = std::move(newTensors);
  s.groups = std::move(newGroups);
  for (size_t r = 0; r < s.runs.size(); ++r) {
    s.runs[r].bufferTable = std::move(bufferTables[r]);
    s.runs[r].firstChunk = runChunks[r].first;
    s.runs[r].numChunks = runChunks[r].second;
  }
  s.hypersDirty = false;
  s.columnBegins = std::move(columnBegins);
  s.columnPointers = std::move(columnPointers);
  if (plan) {
    s.shard->plan = std::move(*plan);
    s.shard->segments = std::move(segments);
    s.shard->paramJoins.insert(s.shard->paramJoins.end(), paramJoins.begin(), paramJoins.end());
    s.shard->checkedGrads.resize(numTensors, 0);
    s.shard->checkedInputs.resize(rule.inputs.size());
    for (std::vector<CUdeviceptr> &checked : s.shard->checkedInputs)
      checked.resize(numTensors, 0);
    s.shard->gradShard.swap(newGradShard);
    s.shard->inputShards = std::move(newInputShards);
  }
  for (size_t size : sizes)
    s.numParams += size;
  return static_cast<int>(groupIndex);
}

void CudaOptimizer::step(const std::vector<std::vector<DevicePtr>> &gradsPerGroup, CudaStream stream) {
  impl_->stepImpl(gradsPerGroup, static_cast<CUstream>(stream), CudaStepOptions{});
}

void CudaOptimizer::step(const std::vector<std::vector<DevicePtr>> &gradsPerGroup, CudaStream stream,
                         const std::vector<CudaStepInput> &inputs) {
  CudaStepOptions options;
  options.inputs = inputs;
  impl_->stepImpl(gradsPerGroup, static_cast<CUstream>(stream), options);
}

void CudaOptimizer::step(const std::vector<std::vector<DevicePtr>> &gradsPerGroup, CudaStream stream,
                         const CudaStepOptions &options) {
  impl_->stepImpl(gradsPerGroup, static_cast<CUstream>(stream), options);
}

void CudaOptimizer::Impl::stepImpl(const std::vector<std::vector<DevicePtr>> &gradsPerGroup, CUstream cuStream,
                                   const CudaStepOptions &options) {
  static const char *caller = "optrt::CudaOptimizer::step";
  Impl &s = *this;
  const Driver &d = *s.d;
  ContextScope scope(d, s.context);
  Dtype gradDtype = s.gradDtype();
  const std::vector<InputInfo> &ruleInputs = s.layout.rule().inputs;
  double lossScale = options.dynamicLossScale ? 1.0 : options.lossScale;
  bool reads = options.dynamicLossScale || options.checkFinite || lossScale != 1.0 || options.maxGradNorm;
  std::vector<std::vector<CUdeviceptr>> bufferTables;
  std::vector<bool> changed(s.runs.size(), false);
  std::vector<Group> groups;
  // Everything that can be wrong with the arguments is found here, before
  // anything changes; sharded, on every rank (a mistake on one rank is an
  // error on all, and no rank waits in a collective the others skip).
  auto check = [&] {
  if (s.groups.empty())
    throw std::logic_error(std::string(caller) + ": the optimizer has no parameters; call addGroup before step");
  if (gradsPerGroup.size() != s.groups.size())
    throw std::invalid_argument(std::string(caller) + ": got gradients for " +
                                std::to_string(gradsPerGroup.size()) + " groups but the optimizer has " +
                                std::to_string(s.groups.size()));
  for (size_t g = 0; g < s.groups.size(); ++g) {
    if (gradsPerGroup[g].size() != s.groups[g].numTensors)
      throw std::invalid_argument(std::string(caller) + ": got " + std::to_string(gradsPerGroup[g].size()) +
                                  " gradients for group " + std::to_string(g) + ", which has " +
                                  std::to_string(s.groups[g].numTensors) + " tensors");
    for (size_t i = 0; i < gradsPerGroup[g].size(); ++i)
      if (!gradsPerGroup[g][i])
        throw std::invalid_argument(std::string(caller) + ": the gradient of " + tensorName(i, g) + " is null");
  }
  std::vector<std::vector<const std::vector<DevicePtr> *>> inputValues =
      validatedInputs<DevicePtr>(s.layout.rule(), s.groups, options.inputs, caller);
  checkGradientOptions(lossScale, options.dynamicLossScale || lossScale != 1.0, options.maxGradNorm,
                       options.clipValue, s.layout, caller);
  // The step reads the gradients first (gradstats, stepoptions) when it
  // needs their norm or a finiteness check, as Optimizer::step does.
  if (reads && !s.runs[0].module->stepOptions)
    throw std::invalid_argument(std::string(caller) + ": rule '" + s.layout.rule().name +
                                "' has no CUDA step-option kernels (gradstats, stepoptions), so it cannot check or "
                                "clip gradients on the device; rebuild it with this version of optc");

  // New gradient pointers are checked (all of them, before anything is
  // enqueued) and uploaded; unchanged ones cost nothing, which is what keeps
  // a captured step free of uploads. Sharded with averaged gradients, the
  // kernels read the gradient shard instead, whose slots never change.
  for (const Run &run : s.runs)
    bufferTables.push_back(run.bufferTable);
  bool inShard = s.shard && s.shard->gradsInShard();
  for (size_t g = 0; g < s.groups.size(); ++g)
    for (size_t i = 0; i < s.groups[g].numTensors; ++i) {
      size_t t = s.groups[g].firstTensor + i;
      const Tensor &tensor = s.tensors[t];
      CUdeviceptr &slot = bufferTables[tensor.run][t * s.runs[tensor.run].perTensor() + 1];
      DevicePtr grad = gradsPerGroup[g][i];
      // Sharded, the last pointer checked is kept apart from the slot.
      CUdeviceptr &checked = inShard ? s.shard->checkedGrads[t] : slot;
      if (checked != grad)
        s.checkDevicePointer(grad, elementBytes(gradDtype, tensor.size), gradDtype == Dtype::F32 ? 4 : 2,
                             "the gradient of " + tensorName(i, g));
      DevicePtr read = inShard ? s.shardSlot(s.shard->gradShard.get(), t) : grad;
      if (inShard)
        checked = grad; // valid, whatever the other ranks say
      if (slot != read) {
        slot = read;
        changed[tensor.run] = true;
      }
    }
  // Inputs: each tensor's pointer (0 where not given: the kernels do not
  // read it then) and each group's given() flag, a hidden hyper.
  groups = s.groups;
  for (size_t input = 0; input < ruleInputs.size(); ++input) {
    int given = s.layout.stepHyper(givenHyper(ruleInputs[input].name));
    for (size_t g = 0; g < s.groups.size(); ++g) {
      const std::vector<DevicePtr> *values = inputValues[input][g];
      if (given >= 0)
        groups[g].hypers[static_cast<size_t>(given)] = values ? 1.0 : 0.0;
      for (size_t i = 0; i < s.groups[g].numTensors; ++i) {
        size_t t = s.groups[g].firstTensor + i;
        const Tensor &tensor = s.tensors[t];
        int b = findBuffer(s.runs[tensor.run].host->buffers, BufferRole::Input, static_cast<int>(input));
        CUdeviceptr &slot = bufferTables[tensor.run][t * s.runs[tensor.run].perTensor() + static_cast<size_t>(b)];
        DevicePtr value = values ? (*values)[i] : 0;
        // Sharded with averaged inputs, the kernels read the input's shard.
        CUdeviceptr &checked = inShard ? s.shard->checkedInputs[input][t] : slot;
        if (value && checked != value)
          s.checkDevicePointer(value, elementBytes(gradDtype, tensor.size), gradDtype == Dtype::F32 ? 4 : 2,
                               "input '" + ruleInputs[input].name + "' of " + tensorName(i, g));
        DevicePtr read = inShard && value ? s.shardSlot(s.shard->inputShards[input].get(), t) : value;
        if (inShard)
          checked = value;
        if (slot != read) {
          slot = read;
          changed[tensor.run] = true;
        }
      }
    }
  }
  // Without the read, the step hypers are the host's: the CPU optimizer's
  // values (grad_scale 1, grad_clip the clip value). After a step that read,
  // the device holds that step's, written by stepoptions: upload again.
  int scaleHyper = s.layout.stepHyper(kGradScaleHyper), clipHyper = s.layout.stepHyper(kGradClipHyper);
  for (size_t g = 0; g < groups.size() && !reads && scaleHyper >= 0 && clipHyper >= 0; ++g) {
    groups[g].hypers[static_cast<size_t>(scaleHyper)] = kGradScaleDefault;
    groups[g].hypers[static_cast<size_t>(clipHyper)] = options.clipValue.value_or(kGradClipDefault);
  }
  };
  if (s.shard) {
    StepOptions described;
    described.lossScale = lossScale;
    described.checkFinite = options.checkFinite;
    described.maxGradNorm = options.maxGradNorm;
    described.clipValue = options.clipValue;
    // Which groups get each input: the ranks must move the same ones.
    for (const CudaStepInput &input : options.inputs) {
      StepInput shown{input.name, {}};
      for (const std::vector<DevicePtr> &values : input.perGroup)
        shown.perGroup.emplace_back(values.size(), nullptr);
      described.inputs.push_back(std::move(shown));
    }
    size_t numTensors = s.tensors.size(); // checked by every rank, so equal when the counts are
    checkOnEveryRank(*s.shard->comm, caller, "the step's arguments",
                     describeStep(0, numTensors, described, s.groups, s.layout.rule().hypers) +
                         (options.dynamicLossScale ? ", dynamic loss scale" : ""),
                     check);
  } else {
    check();
  }
  if (!reads && s.lastStepRead)
    s.hypersDirty = true;
  // Checked: nothing below throws for the arguments.
  for (size_t g = 0; g < groups.size(); ++g)
    if (groups[g].hypers != s.groups[g].hypers) {
      s.groups[g].hypers = groups[g].hypers;
      s.hypersDirty = true;
    }
  CUdeviceptr base = s.tables.get();
  const TableLayout &tl = s.tableLayout;
  for (size_t r = 0; r < s.runs.size(); ++r) {
    if (changed[r])
      d.check(d.cuMemcpyHtoDAsync_v2(base + tl.buffers[r], bufferTables[r].data(),
                                     bufferTables[r].size() * sizeof(CUdeviceptr), cuStream),
              "cuMemcpyHtoDAsync_v2");
    s.runs[r].bufferTable = std::move(bufferTables[r]);
  }
  if (s.hypersDirty) {
    std::vector<double> hypers = s.hyperTable();
    if (!hypers.empty())
      d.check(d.cuMemcpyHtoDAsync_v2(base + tl.hypers, hypers.data(), hypers.size() * sizeof(double), cuStream),
              "cuMemcpyHtoDAsync_v2");
    s.hypersDirty = false;
  }

  if (s.shard)
    s.shard->commSeconds = 0; // this step's
  if (s.shard && s.shard->gradsInShard()) {
    s.reduceScatterInto(gradsPerGroup, s.shard->gradShard.get(), cuStream);
    for (size_t input = 0; input < ruleInputs.size(); ++input) {
      std::vector<std::vector<DevicePtr>> perGroup(s.groups.size());
      for (const CudaStepInput &given : options.inputs)
        if (given.name == ruleInputs[input].name)
          perGroup = given.perGroup;
      perGroup.resize(s.groups.size());
      s.reduceScatterInto(perGroup, s.shard->inputShards[input].get(), cuStream);
    }
  }
  const CudaKernels &k = s.kernels();
  const LoadedModule &m = *s.runs[0].module;
  int64_t numTensors = static_cast<int64_t>(s.tensors.size());
  CUdeviceptr tensors = base + tl.tensors, hypers = base + tl.hypers, counter = base + tl.counter,
              scalars = base + tl.scalars, reductions = base + tl.reductions, uniforms = base + tl.uniforms;
  auto numGroups = static_cast<int64_t>(s.groups.size());
  unsigned perTensorBlocks = std::numeric_limits<unsigned>::max() / 2;
  if (reads) {
    CudaStepRecord wanted = s.stepRecord;
    wanted.lossScale = lossScale;
    wanted.maxGradNorm = options.maxGradNorm.value_or(0.0);
    wanted.clipValue = options.clipValue.value_or(kGradClipDefault);
    wanted.dynamic = options.dynamicLossScale ? 1.0 : 0.0;
    if (std::memcmp(&wanted, &s.stepRecord, offsetof(CudaStepRecord, growthFactor)) != 0) {
      s.stepRecord = wanted;
      s.uploadStepFields(0, offsetof(CudaStepRecord, growthFactor), cuStream);
    }
    // Each run's chunks (its own buffers table), then the decision.
    CUdeviceptr stats = base + tl.stats;
    s.forEachRun([&](const Run &run, size_t firstChunk, CUdeviceptr chunks, CUdeviceptr buffers, int64_t numChunks) {
      CUdeviceptr runStats = stats + firstChunk * sizeof(double);
      auto blocks = static_cast<unsigned>(std::max(1, s.multiprocessors * run.module->gradStatsBlocksPerSM));
      s.launch(run.module->gradStats, run.kernels->gradStatsEntry, static_cast<size_t>(numChunks) * k.blockSize,
               blocks, cuStream, {&chunks, &numChunks, &buffers, &runStats});
    });
    if (s.shard) // every chunk's sum, from the rank that read it
      s.shard->gatherChunkRows(d, stats, sizeof(double), cuStream);
    auto allChunks = static_cast<int64_t>(tl.statsChunks);
    CUdeviceptr step = base + tl.step;
    s.launch(m.stepOptions, k.stepOptionsEntry, 1, 1, cuStream,
             {&allChunks, &stats, &step, &hypers, &numGroups, &counter});
  }
  const RuleKernels &rule = s.layout.rule();
  for (int p = 0; p < rule.numPhases; ++p) {
    // A pass over the elements runs each chunk on the rank that owns it; a
    // pass over rows, columns or matrices reads only the states per row and
    // column, which every rank keeps whole, and runs on every rank alike.
    bool overElements = rule.phaseDomains.empty() || rule.phaseDomains[p] == PhaseDomain::Elements;
    s.launch(m.uniforms[p], k.uniformsEntries[p], s.tensors.size(), perTensorBlocks, cuStream,
             {&numTensors, &tensors, &hypers, &counter, &scalars, &reductions, &uniforms});
    // Each run's element kernel over its own range of the chunk table (and
    // of the partials), with its own buffers table.
    s.forEachRun([&](const Run &run, size_t firstChunk, CUdeviceptr chunks, CUdeviceptr buffers, int64_t numChunks) {
      CUdeviceptr partials = base + tl.partials + firstChunk * k.partialStride * sizeof(double);
      // Exactly the blocks that fit on the GPU at once: each loops over its
      // share of the chunks. More would wait for a whole block to finish all
      // its chunks, and run alone at the end.
      auto elementBlocks = static_cast<unsigned>(std::max(1, s.multiprocessors * run.module->elementBlocksPerSM[p]));
      s.launch(run.module->element[p], run.kernels->elementEntries[p], static_cast<size_t>(numChunks) * k.blockSize,
               elementBlocks, cuStream, {&chunks, &numChunks, &buffers, &uniforms, &partials, &counter});
    }, /*everyChunk=*/!overElements);
    if (s.shard && overElements)
      s.gatherAxisSums(p, cuStream);
    if (m.finish[p]) {
      if (s.shard && overElements) // every chunk's partials, from the rank that computed them
        s.gatherPartials(cuStream);
      CUdeviceptr partials = base + tl.partials, chunks = base + tl.chunks, buffers = base + tl.buffers[0];
      s.launch(m.finish[p], k.finishEntries[p], s.tensors.size() * k.blockSize, perTensorBlocks, cuStream,
               {&numTensors, &tensors, &partials, &reductions, &chunks, &buffers, &counter});
    }
  }
  if (m.scalars)
    s.launch(m.scalars, k.scalarsEntry, s.tensors.size(), perTensorBlocks, cuStream,
             {&numTensors, &tensors, &hypers, &counter, &scalars, &reductions});
  s.launch(m.advance, k.advanceEntry, 1, 1, cuStream, {&counter, &numGroups});
  if (s.shard)
    s.gatherParams(cuStream);
  s.anyStep = true;
  s.lastStepRead = reads;
}

StepResult CudaOptimizer::lastStepResult() const {
  const Impl &s = *impl_;
  if (!s.anyStep)
    throw std::logic_error("optrt::CudaOptimizer::lastStepResult: no step has been enqueued yet");
  StepResult result;
  // Sharded: the host's time in the step's collectives (with NCCL, enqueuing
  // them; with a host engine, the staged transfers too).
  result.communicationSeconds = s.shard ? s.shard->commSeconds : 0.0;
  if (!s.lastStepRead)
    return result;
  CudaStepRecord record = s.deviceStepRecord();
  result.skipped = record.skipped != 0.0;
  result.gradNorm = record.gradNorm;
  result.clipCoefficient = record.clipCoefficient;
  return result;
}

DevicePtr CudaOptimizer::stepRecordAddress() const {
  if (!impl_->tables.get())
    throw std::logic_error("optrt::CudaOptimizer::stepRecordAddress: the optimizer has no parameters yet");
  return impl_->tables.get() + impl_->tableLayout.step;
}

DevicePtr CudaOptimizer::lossScaleAddress() const {
  return stepRecordAddress() + offsetof(CudaStepRecord, scale);
}

void CudaOptimizer::setLossScaler(LossScalerOptions options, int64_t growthTracker) {
  static const char *caller = "optrt::CudaOptimizer::setLossScaler";
  Impl &s = *impl_;
  DynamicLossScaler validated(options); // the CPU scaler's checks and words
  constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();
  if (options.growthInterval > kInt32Max)
    throw std::invalid_argument(std::string(caller) + ": growthInterval is " + std::to_string(options.growthInterval) +
                                "; the device keeps it in 32 bits (at most " + std::to_string(kInt32Max) + ")");
  if (growthTracker < 0 || growthTracker >= options.growthInterval)
    throw std::invalid_argument(std::string(caller) + ": growthTracker is " + std::to_string(growthTracker) +
                                "; it must lie in [0, growthInterval = " + std::to_string(options.growthInterval) +
                                ")");
  s.stepRecord.growthFactor = options.growthFactor;
  s.stepRecord.backoffFactor = options.backoffFactor;
  s.stepRecord.growthInterval = static_cast<double>(options.growthInterval);
  s.stepRecord.scale = validated.scale();
  s.stepRecord.growthTracker = static_cast<int32_t>(growthTracker);
  if (!s.tables.get())
    return; // the first addGroup uploads it
  ContextScope scope(*s.d, s.context);
  // Steps in flight use and update the scale being replaced.
  s.d->check(s.d->cuCtxSynchronize(), "cuCtxSynchronize");
  s.uploadStepFields(offsetof(CudaStepRecord, growthFactor), offsetof(CudaStepRecord, gradNorm), nullptr);
  s.d->check(s.d->cuCtxSynchronize(), "cuCtxSynchronize");
}

float CudaOptimizer::lossScale() const { return impl_->deviceStepRecord().scale; }

int64_t CudaOptimizer::lossScaleGrowthTracker() const { return impl_->deviceStepRecord().growthTracker; }

void CudaOptimizer::setHyper(const std::string &name, double value, int group) {
  setGroupHyper(impl_->groups, impl_->layout, name, value, group, "optrt::CudaOptimizer::setHyper");
  // The device copy is refreshed by the next step.
  impl_->hypersDirty = true;
}

double CudaOptimizer::hyper(const std::string &name, int group) const {
  static const char *caller = "optrt::CudaOptimizer::hyper";
  size_t index = impl_->layout.hyperIndex(name, caller);
  return impl_->checkedGroup(group, caller).hypers[index];
}

DevicePtr CudaOptimizer::hyperAddress(const std::string &name, int group) const {
  static const char *caller = "optrt::CudaOptimizer::hyperAddress";
  const Impl &s = *impl_;
  size_t index = s.layout.hyperIndex(name, caller);
  s.checkedGroup(group, caller);
  return s.tables.get() + s.tableLayout.hypers +
         (static_cast<size_t>(group) * s.layout.numHypers() + index) * sizeof(double);
}

} // namespace optrt
