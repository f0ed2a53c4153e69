#include "optrt/CudaOptimizer.h"

#include "../ChunkTable.h"
#include "../GroupTable.h"
#include "../RuleLayout.h"
#include "../StateArena.h"
#include "DeviceMemory.h"
#include "Driver.h"
#include "ModuleCache.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <utility>

namespace optrt {

using namespace cuda;
using namespace detail;

namespace {

struct Tensor {
  DevicePtr param;
  size_t size;
  size_t group;
  size_t arenaOffset; // floats; state k at arenaOffset + k * paddedFloats(size)
};

// Device tables start on 256-byte boundaries (the driver's own allocation
// granularity), so every one is aligned for any access width.
constexpr size_t kSegmentAlign = 256;

size_t alignUp(size_t n, size_t alignment) { return (n + alignment - 1) / alignment * alignment; }

/// Byte offsets of the tables of CudaKernels.h in one device allocation.
struct TableLayout {
  size_t tensors = 0, chunks = 0, buffers = 0, hypers = 0, counter = 0, scalars = 0,
         reductions = 0, partials = 0, uniforms = 0, bytes = 0;

  static TableLayout make(size_t numTensors, size_t numChunks, size_t numGroups,
                          const RuleLayout &rule, const CudaKernels &k) {
    TableLayout t;
    size_t at = 0;
    auto take = [&](size_t bytes) {
      size_t here = at;
      at = alignUp(at + std::max<size_t>(bytes, 8), kSegmentAlign);
      return here;
    };
    t.tensors = take(numTensors * 4 * sizeof(int64_t));
    t.chunks = take(numChunks * 3 * sizeof(int64_t));
    t.buffers = take(numTensors * k.buffersPerTensor * sizeof(CUdeviceptr));
    t.hypers = take(numGroups * rule.numHypers() * sizeof(double));
    t.counter = take(sizeof(double));
    t.scalars = take(numTensors * rule.numScalar() * sizeof(double));
    t.reductions = take(numTensors * std::max<size_t>(1, rule.numReductions()) * sizeof(double));
    t.partials = take(numChunks * k.partialStride * sizeof(double));
    t.uniforms = take(numTensors * k.uniformStride * sizeof(float));
    t.bytes = at;
    return t;
  }
};

/// Throws std::invalid_argument when the device code does not match the
/// rule description (wrong rule, per-phase tables, strides): checked before
/// the driver is touched.
void checkConsistent(const RuleLayout &layout, const CudaKernels *k) {
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
  for (size_t p = 0; p < phases; ++p) {
    bool reduces = layout.reductionEnd(static_cast<int>(p)) > layout.reductionBegin(static_cast<int>(p));
    if (k->uniformsEntries[p].empty() || k->elementEntries[p].empty() ||
        reduces == k->finishEntries[p].empty())
      fail("the CUDA kernels' entries of phase " + std::to_string(p) + " do not match the rule");
  }
  if ((layout.numScalar() > 0) == k->scalarsEntry.empty() || k->advanceEntry.empty())
    fail("the CUDA kernels' scalar-state or advance entry does not match the rule");
  if (k->blockSize <= 0 || k->blockSize > 1024 ||
      k->buffersPerTensor != static_cast<int>(2 + layout.numElementwise()) ||
      static_cast<size_t>(k->uniformStride) < std::max<size_t>(1, layout.maxUniforms()) ||
      static_cast<size_t>(k->partialStride) < std::max<size_t>(1, layout.maxReductionsPerPhase()))
    fail("the CUDA kernels' launch facts do not match the rule");
  if (k->images.empty())
    fail("the CUDA kernels hold no device code");
  for (const CudaImage &image : k->images)
    if (image.ptx.empty())
      fail("the CUDA image for " + image.arch + " has no PTX");
}

} // namespace

struct CudaOptimizer::Impl {
  Impl(std::shared_ptr<const RuleKernels> host, std::shared_ptr<const CudaKernels> device,
       size_t chunkElements)
      // The CUDA kernels exist for the f32 layout only, so far.
      : layout(std::move(host), "f32"), kernels(std::move(device)), chunks(chunkElements) {}
  ~Impl() {
    // Device memory and the module go while the context is still retained.
    tables = DeviceMemory();
    arena = DeviceMemory();
    module.reset();
    if (primaryRetained)
      d->cuDevicePrimaryCtxRelease_v2(device);
  }

  RuleLayout layout;
  std::shared_ptr<const CudaKernels> kernels;
  ChunkTable chunks;
  const Driver *d = nullptr;
  CUcontext context = nullptr;
  CUdevice device = 0;
  bool primaryRetained = false;
  int multiprocessors = 1;
  std::shared_ptr<const LoadedModule> module;

  std::vector<Group> groups;
  std::vector<Tensor> tensors;
  size_t numParams = 0;
  int64_t stepCount = 0;
  DeviceMemory arena;
  size_t arenaFloats = 0;
  DeviceMemory tables;
  TableLayout tableLayout;
  std::vector<CUdeviceptr> bufferTable; // host mirror of the buffers table
  bool hypersDirty = false;

  size_t perTensor() const { return static_cast<size_t>(kernels->buffersPerTensor); }
  const Group &checkedGroup(int group, const char *caller) const;
  const Tensor &checkedTensor(int group, size_t tensor, const char *caller) const;
  void checkDevicePointer(DevicePtr pointer, size_t bytes, const std::string &what) const;
  std::vector<double> hyperTable() const;
  void acquireContext(int ordinal);
  void launch(CUfunction function, const std::string &name, size_t threads, unsigned maxBlocks,
              CUstream stream, std::vector<void *> args) const;
};

const Group &CudaOptimizer::Impl::checkedGroup(int group, const char *caller) const {
  return detail::checkedGroup(groups, group, caller);
}

const Tensor &CudaOptimizer::Impl::checkedTensor(int group, size_t tensor, const char *caller) const {
  return detail::checkedTensor(groups, tensors, group, tensor, caller);
}

void CudaOptimizer::Impl::checkDevicePointer(DevicePtr pointer, size_t bytes,
                                             const std::string &what) const {
  if (pointer % alignof(float) != 0)
    throw CudaError(CudaErrc::BadPointer, what + " (0x" + std::to_string(pointer) +
                                              ") is not 4-byte aligned");
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
  size_t block = static_cast<size_t>(kernels->blockSize);
  size_t blocks = std::clamp<size_t>((threads + block - 1) / block, 1, maxBlocks);
  CUresult result = d->cuLaunchKernel(function, static_cast<unsigned>(blocks), 1, 1,
                                      static_cast<unsigned>(block), 1, 1, 0, stream, args.data(), nullptr);
  if (result != CUDA_SUCCESS)
    d->check(result, ("cuLaunchKernel(" + name + ")").c_str());
}

CudaOptimizer::CudaOptimizer(std::shared_ptr<const RuleKernels> host,
                             std::shared_ptr<const CudaKernels> device, CudaOptimizerOptions options) {
  if (options.chunkElements == 0)
    throw std::invalid_argument("optrt::CudaOptimizer: chunkElements must be at least 1");
  auto impl = std::make_unique<Impl>(std::move(host), std::move(device), options.chunkElements);
  checkConsistent(impl->layout, impl->kernels.get());
  impl->acquireContext(options.device);
  impl->module = loadModule(*impl->d, impl->context, impl->device, impl->kernels);
  impl_ = std::move(impl);
}

namespace {

std::shared_ptr<const CudaKernels> embeddedCudaKernels(const std::shared_ptr<const RuleKernels> &artifact) {
  if (!artifact)
    throw std::invalid_argument("optrt::CudaOptimizer: RuleKernels is null");
  for (const LayoutKernels &layout : artifact->layouts)
    if (layout.name == "f32" && layout.cuda)
      return layout.cuda;
  throw std::invalid_argument("optrt::CudaOptimizer: rule '" + artifact->name +
                              "' carries no CUDA kernels; build it with the CUDA target (optc "
                              "--emit=so --cuda, or optdsl_add_rule(... TARGETS cpu cuda))");
}

} // namespace

CudaOptimizer::CudaOptimizer(std::shared_ptr<const RuleKernels> artifact, CudaOptimizerOptions options)
    : CudaOptimizer(artifact, embeddedCudaKernels(artifact), options) {}

CudaOptimizer::~CudaOptimizer() = default;
CudaOptimizer::CudaOptimizer(CudaOptimizer &&) noexcept = default;
CudaOptimizer &CudaOptimizer::operator=(CudaOptimizer &&) noexcept = default;

const RuleKernels &CudaOptimizer::rule() const { return impl_->layout.rule(); }
const std::string &CudaOptimizer::imageInUse() const { return impl_->module->image; }
int CudaOptimizer::numGroups() const { return static_cast<int>(impl_->groups.size()); }
size_t CudaOptimizer::numTensors(int group) const {
  return impl_->checkedGroup(group, "optrt::CudaOptimizer::numTensors").numTensors;
}
int64_t CudaOptimizer::stepCount() const { return impl_->stepCount; }
size_t CudaOptimizer::numParams() const { return impl_->numParams; }

int CudaOptimizer::addGroup(std::vector<DevicePtr> params, std::vector<size_t> sizes,
                            std::map<std::string, double> hyperOverrides) {
  static const char *caller = "optrt::CudaOptimizer::addGroup";
  Impl &s = *impl_;
  const RuleKernels &rule = s.layout.rule();
  size_t groupIndex = s.groups.size();
  auto fail = [&](const std::string &problem) {
    throw std::invalid_argument(std::string(caller) + ": group " + std::to_string(groupIndex) + ": " +
                                problem);
  };

  // Plain argument checks first: no driver call for a malformed request.
  if (std::string problem = newGroupProblem(params, sizes); !problem.empty())
    fail(problem);
  std::vector<ParamRange> ranges;
  for (size_t g = 0; g < s.groups.size(); ++g)
    for (size_t i = 0; i < s.groups[g].numTensors; ++i) {
      const Tensor &t = s.tensors[s.groups[g].firstTensor + i];
      ranges.push_back({t.param, t.param + t.size * sizeof(float), g, i});
    }
  for (size_t i = 0; i < params.size(); ++i)
    ranges.push_back({params[i], params[i] + sizes[i] * sizeof(float), groupIndex, i});
  if (std::string clash = firstOverlap(std::move(ranges)); !clash.empty())
    fail(clash);
  std::vector<double> hypers = groupHypers(s.layout, hyperOverrides, caller);

  size_t numElementwise = s.layout.numElementwise(), numScalar = s.layout.numScalar();
  size_t newArenaFloats = s.arenaFloats;
  std::vector<size_t> offsets;
  ChunkTable newChunks = s.chunks;
  for (size_t size : sizes) {
    offsets.push_back(newArenaFloats);
    size_t slice = StateArena::paddedFloats(size);
    if (__builtin_mul_overflow(slice, numElementwise, &slice) ||
        __builtin_add_overflow(newArenaFloats, slice, &newArenaFloats) ||
        newArenaFloats > std::numeric_limits<size_t>::max() / sizeof(float))
      fail("its state would exceed the address space");
    newChunks.addTensor(size);
  }
  std::vector<float> elementwiseInit(numElementwise);
  std::vector<double> scalarInit(numScalar);
  rule.init(hypers.data(), elementwiseInit.data(), scalarInit.data());

  // Device checks and allocations; the optimizer changes only after all of
  // them succeeded.
  const Driver &d = *s.d;
  ContextScope scope(d, s.context);
  for (size_t i = 0; i < params.size(); ++i)
    s.checkDevicePointer(params[i], sizes[i] * sizeof(float),
                         "the param of " + tensorName(i, groupIndex));
  // Steps still running use the current arena and tables.
  d.check(d.cuCtxSynchronize(), "cuCtxSynchronize");

  size_t numTensors = s.tensors.size() + params.size();
  TableLayout tl = TableLayout::make(numTensors, newChunks.chunks().size(), s.groups.size() + 1,
                                     s.layout, *s.kernels);
  DeviceMemory newArena(d, s.context, newArenaFloats * sizeof(float), "optimizer state arena");
  DeviceMemory newTables(d, s.context, tl.bytes, "optimizer tables");

  // Host images of the new tables; the counter and scalar states come back
  // from the device (graph replays may have advanced them).
  double counter = static_cast<double>(s.stepCount);
  std::vector<double> scalars(numTensors * numScalar);
  if (s.tables.get()) {
    d.check(d.cuMemcpyDtoH_v2(&counter, s.tables.get() + s.tableLayout.counter, sizeof(double)),
            "cuMemcpyDtoH_v2");
    if (numScalar > 0)
      d.check(d.cuMemcpyDtoH_v2(scalars.data(), s.tables.get() + s.tableLayout.scalars,
                                s.tensors.size() * numScalar * sizeof(double)),
              "cuMemcpyDtoH_v2");
  }
  std::vector<Tensor> newTensors = s.tensors;
  std::vector<int64_t> tensorRecords;
  for (size_t i = 0; i < params.size(); ++i) {
    newTensors.push_back({params[i], sizes[i], groupIndex, offsets[i]});
    std::copy(scalarInit.begin(), scalarInit.end(),
              scalars.begin() + static_cast<std::ptrdiff_t>((s.tensors.size() + i) * numScalar));
  }
  std::vector<CUdeviceptr> bufferTable = s.bufferTable;
  bufferTable.resize(numTensors * s.perTensor(), 0); // new gradients: set by the next step
  for (size_t t = 0; t < numTensors; ++t) {
    const Tensor &tensor = newTensors[t];
    tensorRecords.insert(tensorRecords.end(),
                         {static_cast<int64_t>(tensor.group), static_cast<int64_t>(newChunks.firstChunk(t)),
                          static_cast<int64_t>(newChunks.endChunk(t)), static_cast<int64_t>(tensor.size)});
    size_t padded = StateArena::paddedFloats(tensor.size);
    bufferTable[t * s.perTensor()] = tensor.param;
    for (size_t k = 0; k < numElementwise; ++k)
      bufferTable[t * s.perTensor() + 2 + k] =
          newArena.get() + (tensor.arenaOffset + k * padded) * sizeof(float);
  }
  std::vector<int64_t> chunkRecords;
  for (const Chunk &chunk : newChunks.chunks())
    chunkRecords.insert(chunkRecords.end(), {static_cast<int64_t>(chunk.tensor), chunk.begin, chunk.end});
  std::vector<Group> newGroups = s.groups;
  newGroups.push_back({hypers, s.tensors.size(), params.size()});
  std::vector<double> hyperTable;
  for (const Group &group : newGroups)
    hyperTable.insert(hyperTable.end(), group.hypers.begin(), group.hypers.end());

  auto upload = [&](size_t offset, const void *data, size_t bytes) {
    if (bytes > 0)
      d.check(d.cuMemcpyHtoDAsync_v2(newTables.get() + offset, data, bytes, nullptr), "cuMemcpyHtoDAsync_v2");
  };
  if (s.arena.get())
    d.check(d.cuMemcpyDtoD_v2(newArena.get(), s.arena.get(), s.arenaFloats * sizeof(float)), "cuMemcpyDtoD_v2");
  for (size_t i = 0; i < params.size(); ++i) {
    size_t padded = StateArena::paddedFloats(sizes[i]);
    for (size_t k = 0; k < numElementwise; ++k) {
      unsigned bits = 0;
      std::memcpy(&bits, &elementwiseInit[k], sizeof(bits));
      d.check(d.cuMemsetD32_v2(newArena.get() + (offsets[i] + k * padded) * sizeof(float), bits, padded),
              "cuMemsetD32_v2");
    }
  }
  upload(tl.tensors, tensorRecords.data(), tensorRecords.size() * sizeof(int64_t));
  upload(tl.chunks, chunkRecords.data(), chunkRecords.size() * sizeof(int64_t));
  upload(tl.buffers, bufferTable.data(), bufferTable.size() * sizeof(CUdeviceptr));
  upload(tl.hypers, hyperTable.data(), hyperTable.size() * sizeof(double));
  upload(tl.counter, &counter, sizeof(double));
  upload(tl.scalars, scalars.data(), scalars.size() * sizeof(double));
  d.check(d.cuCtxSynchronize(), "cuCtxSynchronize");

  // Commit: nothing below can fail.
  s.arena.swap(newArena);
  s.tables.swap(newTables);
  s.arenaFloats = newArenaFloats;
  s.tableLayout = tl;
  s.tensors = std::move(newTensors);
  s.groups = std::move(newGroups);
  s.chunks = std::move(newChunks);
  s.bufferTable = std::move(bufferTable);
  s.hypersDirty = false;
  for (size_t size : sizes)
    s.numParams += size;
  return static_cast<int>(groupIndex);
}

void CudaOptimizer::step(const std::vector<std::vector<DevicePtr>> &gradsPerGroup, CudaStream stream) {
  static const char *caller = "optrt::CudaOptimizer::step";
  Impl &s = *impl_;
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

  const Driver &d = *s.d;
  ContextScope scope(d, s.context);
  auto cuStream = static_cast<CUstream>(stream);
  // New gradient pointers are checked (all of them, before anything is
  // enqueued) and uploaded; unchanged ones cost nothing, which is what keeps
  // a captured step free of uploads.
  std::vector<CUdeviceptr> bufferTable = s.bufferTable;
  bool changed = false;
  for (size_t g = 0; g < s.groups.size(); ++g)
    for (size_t i = 0; i < s.groups[g].numTensors; ++i) {
      size_t t = s.groups[g].firstTensor + i;
      DevicePtr grad = gradsPerGroup[g][i];
      if (bufferTable[t * s.perTensor() + 1] == grad)
        continue;
      s.checkDevicePointer(grad, s.tensors[t].size * sizeof(float), "the gradient of " + tensorName(i, g));
      bufferTable[t * s.perTensor() + 1] = grad;
      changed = true;
    }
  CUdeviceptr base = s.tables.get();
  const TableLayout &tl = s.tableLayout;
  if (changed)
    d.check(d.cuMemcpyHtoDAsync_v2(base + tl.buffers, bufferTable.data(),
                                   bufferTable.size() * sizeof(CUdeviceptr), cuStream),
            "cuMemcpyHtoDAsync_v2");
  s.bufferTable = std::move(bufferTable);
  if (s.hypersDirty) {
    std::vector<double> hypers = s.hyperTable();
    if (!hypers.empty())
      d.check(d.cuMemcpyHtoDAsync_v2(base + tl.hypers, hypers.data(), hypers.size() * sizeof(double), cuStream),
              "cuMemcpyHtoDAsync_v2");
    s.hypersDirty = false;
  }

  const CudaKernels &k = *s.kernels;
  const LoadedModule &m = *s.module;
  int64_t numTensors = static_cast<int64_t>(s.tensors.size());
  int64_t numChunks = static_cast<int64_t>(s.chunks.chunks().size());
  CUdeviceptr tensors = base + tl.tensors, chunks = base + tl.chunks, buffers = base + tl.buffers,
              hypers = base + tl.hypers, counter = base + tl.counter, scalars = base + tl.scalars,
              reductions = base + tl.reductions, partials = base + tl.partials,
              uniforms = base + tl.uniforms;
  unsigned perTensorBlocks = std::numeric_limits<unsigned>::max() / 2;
  for (int p = 0; p < s.layout.rule().numPhases; ++p) {
    // Exactly the blocks that fit on the GPU at once: each loops over its
    // share of the chunks. More would wait for a whole block to finish all
    // its chunks, and run alone at the end.
    auto elementBlocks = static_cast<unsigned>(std::max(1, s.multiprocessors * m.elementBlocksPerSM[p]));
    s.launch(m.uniforms[p], k.uniformsEntries[p], s.tensors.size(), perTensorBlocks, cuStream,
             {&numTensors, &tensors, &hypers, &counter, &scalars, &reductions, &uniforms});
    s.launch(m.element[p], k.elementEntries[p], static_cast<size_t>(numChunks) * k.blockSize, elementBlocks,
             cuStream, {&chunks, &numChunks, &buffers, &uniforms, &partials});
    if (m.finish[p])
      s.launch(m.finish[p], k.finishEntries[p], s.tensors.size() * k.blockSize, perTensorBlocks, cuStream,
               {&numTensors, &tensors, &partials, &reductions});
  }
  if (m.scalars)
    s.launch(m.scalars, k.scalarsEntry, s.tensors.size(), perTensorBlocks, cuStream,
             {&numTensors, &tensors, &hypers, &counter, &scalars, &reductions});
  s.launch(m.advance, k.advanceEntry, 1, 1, cuStream, {&counter});
  ++s.stepCount;
}

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

std::vector<float> CudaOptimizer::state(const std::string &name, int group, size_t tensor) const {
  static const char *caller = "optrt::CudaOptimizer::state";
  const Impl &s = *impl_;
  size_t stateIndex = s.layout.elementwiseIndex(name, caller);
  const Tensor &t = s.checkedTensor(group, tensor, caller);
  const Driver &d = *s.d;
  ContextScope scope(d, s.context);
  d.check(d.cuCtxSynchronize(), "cuCtxSynchronize");
  std::vector<float> values(t.size);
  CUdeviceptr from = s.arena.get() + (t.arenaOffset + stateIndex * StateArena::paddedFloats(t.size)) * sizeof(float);
  d.check(d.cuMemcpyDtoH_v2(values.data(), from, t.size * sizeof(float)), "cuMemcpyDtoH_v2");
  return values;
}

double CudaOptimizer::scalarState(const std::string &name, int group, size_t tensor) const {
  static const char *caller = "optrt::CudaOptimizer::scalarState";
  const Impl &s = *impl_;
  size_t stateIndex = s.layout.scalarIndex(name, caller);
  const Group &g = s.checkedGroup(group, caller);
  s.checkedTensor(group, tensor, caller);
  const Driver &d = *s.d;
  ContextScope scope(d, s.context);
  d.check(d.cuCtxSynchronize(), "cuCtxSynchronize");
  double value = 0;
  size_t index = (g.firstTensor + tensor) * s.layout.numScalar() + stateIndex;
  d.check(d.cuMemcpyDtoH_v2(&value, s.tables.get() + s.tableLayout.scalars + index * sizeof(double), sizeof(double)),
          "cuMemcpyDtoH_v2");
  return value;
}

size_t CudaOptimizer::stateBytes() const {
  return impl_->arenaFloats * sizeof(float) + impl_->tensors.size() * impl_->layout.numScalar() * sizeof(double);
}

} // namespace optrt
