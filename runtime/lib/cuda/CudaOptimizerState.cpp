// CudaOptimizer's state seen from the host: reads and writes of one
// tensor's states and master, the memory report, and checkpoints (the state
// stream shared with the CPU optimizer, and sharded folders).
#include "CudaOptimizerImpl.h"

#include "../StateStream.h"
#include "../shard/ShardedCheckpoint.h"
#include "optrt/Storage.h"

#include <cstring>

namespace optrt {

using namespace cuda;
using namespace detail;

std::vector<uint8_t> CudaOptimizer::Impl::download(const Tensor &t, int b) const {
  const BufferDesc &buffer = hostLayout(t).buffers[b];
  std::vector<uint8_t> bytes(tensorBufferBytes(buffer, t.owned(), t.matrixDims, layout.rule().states));
  CUdeviceptr from =
      buffer.role == BufferRole::Param ? t.param + bufferBytes(buffer, t.ownedBegin) : arena.get() + t.offsets[b];
  if (!bytes.empty()) // sharded, a tensor may have no elements on this rank
    d->check(d->cuMemcpyDtoH_v2(bytes.data(), from, bytes.size()), "cuMemcpyDtoH_v2");
  return bytes;
}

int CudaOptimizer::Impl::stateBufferOf(const Tensor &t, const std::string &name, const char *caller) const {
  layout.elementwiseIndex(name, caller);
  int state = static_cast<int>(layout.stateIndex(name));
  int b = findBuffer(hostLayout(t).buffers, BufferRole::State, state);
  if (b < 0)
    b = findBuffer(hostLayout(t).buffers, BufferRole::AxisState, state);
  if (b < 0)
    throw std::logic_error(std::string(caller) + ": layout '" + hostLayout(t).name + "' has no buffer for state '" +
                           name + "'");
  return b;
}

std::vector<float> CudaOptimizer::readState(const std::string &name, int group, size_t tensor) const {
  static const char *caller = "optrt::CudaOptimizer::readState";
  const Impl &s = *impl_;
  const Tensor &t = s.checkedTensor(group, tensor, caller);
  int b = s.stateBufferOf(t, name, caller);
  const std::vector<BufferDesc> &buffers = s.hostLayout(t).buffers;
  ContextScope scope(*s.d, s.context);
  s.d->check(s.d->cuCtxSynchronize(), "cuCtxSynchronize");
  std::vector<uint8_t> data = s.download(t, b);
  if (buffers[b].role == BufferRole::AxisState) {
    std::vector<float> values(data.size() / sizeof(float));
    std::memcpy(values.data(), data.data(), data.size());
    return values;
  }
  int a = findBuffer(buffers, BufferRole::StateAbsmax, buffers[b].state);
  std::vector<uint8_t> absmax = a < 0 ? std::vector<uint8_t>() : s.download(t, a);
  std::vector<float> values(t.owned());
  decodeToF32(buffers[b].dtype, data.data(), a < 0 ? nullptr : reinterpret_cast<const float *>(absmax.data()), values);
  return values;
}

std::vector<float> CudaOptimizer::state(const std::string &name, int group, size_t tensor) const {
  return readState(name, group, tensor);
}

void CudaOptimizer::writeState(const std::string &name, int group, size_t tensor, const std::vector<float> &values) {
  static const char *caller = "optrt::CudaOptimizer::writeState";
  Impl &s = *impl_;
  const Tensor &t = s.checkedTensor(group, tensor, caller);
  int b = s.stateBufferOf(t, name, caller);
  const std::vector<BufferDesc> &buffers = s.hostLayout(t).buffers;
  size_t bytes = tensorBufferBytes(buffers[b], t.owned(), t.matrixDims, s.layout.rule().states);
  if (buffers[b].role == BufferRole::AxisState && values.size() * sizeof(float) != bytes)
    throw std::invalid_argument(std::string(caller) + ": " + std::to_string(values.size()) + " values for state '" +
                                name + "' of " + tensorName(tensor, static_cast<size_t>(group)) + ", which holds " +
                                std::to_string(bytes / sizeof(float)) + " (one per row or column of its matrices)");
  if (buffers[b].role != BufferRole::AxisState && values.size() != t.owned())
    throw std::invalid_argument(std::string(caller) + ": got " + std::to_string(values.size()) + " values for " +
                                tensorName(tensor, static_cast<size_t>(group)) + ", which has " +
                                std::to_string(t.owned()) + (s.shard ? " elements on this rank" : " elements"));
  int a = findBuffer(buffers, BufferRole::StateAbsmax, buffers[b].state);
  std::vector<uint8_t> data(bytes);
  std::vector<uint8_t> absmax(a < 0 ? 0 : bufferBytes(buffers[a], t.owned()));
  if (buffers[b].role == BufferRole::AxisState)
    std::memcpy(data.data(), values.data(), bytes);
  else
    encodeF32(buffers[b].dtype, values, data.data(), a < 0 ? nullptr : reinterpret_cast<float *>(absmax.data()));
  const Driver &d = *s.d;
  ContextScope scope(d, s.context);
  // Steps in flight read the state being replaced.
  d.check(d.cuCtxSynchronize(), "cuCtxSynchronize");
  if (!data.empty()) // sharded, a tensor may have no elements on this rank
    d.check(d.cuMemcpyHtoDAsync_v2(s.arena.get() + t.offsets[b], data.data(), data.size(), nullptr),
            "cuMemcpyHtoDAsync_v2");
  if (a >= 0 && !absmax.empty())
    d.check(d.cuMemcpyHtoDAsync_v2(s.arena.get() + t.offsets[a], absmax.data(), absmax.size(), nullptr),
            "cuMemcpyHtoDAsync_v2");
  d.check(d.cuCtxSynchronize(), "cuCtxSynchronize");
}

std::vector<float> CudaOptimizer::master(int group, size_t tensor) const {
  static const char *caller = "optrt::CudaOptimizer::master";
  const Impl &s = *impl_;
  const Tensor &t = s.checkedTensor(group, tensor, caller);
  const std::vector<BufferDesc> &buffers = s.hostLayout(t).buffers;
  int b = findBuffer(buffers, BufferRole::Master);
  if (b < 0)
    throw std::invalid_argument(std::string(caller) + ": layout '" + s.hostLayout(t).name + "' has no master copy");
  ContextScope scope(*s.d, s.context);
  s.d->check(s.d->cuCtxSynchronize(), "cuCtxSynchronize");
  std::vector<uint8_t> data = s.download(t, b);
  std::vector<float> values(t.owned());
  if (buffers[b].dtype != Dtype::Remainder) {
    if (!values.empty()) // sharded, a tensor may have no elements on this rank
      std::memcpy(values.data(), data.data(), t.owned() * sizeof(float));
    return values;
  }
  std::vector<uint8_t> param = s.download(t, findBuffer(buffers, BufferRole::Param));
  const auto *high = reinterpret_cast<const uint16_t *>(param.data());
  const auto *low = reinterpret_cast<const int16_t *>(data.data());
  for (size_t i = 0; i < t.owned(); ++i)
    values[i] = joinMaster(high[i], low[i]);
  return values;
}

std::pair<size_t, size_t> CudaOptimizer::ownedRange(int group, size_t tensor) const {
  const Tensor &t = impl_->checkedTensor(group, tensor, "optrt::CudaOptimizer::ownedRange");
  return {t.ownedBegin, t.ownedEnd};
}

const std::string &CudaOptimizer::tensorLayout(int group, size_t tensor) const {
  const Impl &s = *impl_;
  return s.hostLayout(s.checkedTensor(group, tensor, "optrt::CudaOptimizer::tensorLayout")).name;
}

MemoryReport CudaOptimizer::memoryReport() const {
  const Impl &s = *impl_;
  if (s.tensors.empty())
    throw std::logic_error("optrt::CudaOptimizer::memoryReport: the optimizer has no parameters");
  std::vector<size_t> sizes;
  MemoryOptions options;
  for (const Tensor &t : s.tensors) {
    sizes.push_back(t.size);
    if (s.shard) // this rank's master and state bytes
      options.ownedElements.push_back(t.owned());
    // States per row, column or matrix count by the tensor's matrices.
    if (s.layout.readsMatrices())
      options.shapes.push_back({static_cast<size_t>(t.matrixDims[0]), static_cast<size_t>(t.matrixDims[1]),
                                static_cast<size_t>(t.matrixDims[2])});
  }
  options.smallTensorElements = s.smallTensorElements;
  return optrt::memoryReport(s.layout.rule().states, s.layout.parsedLayout(), sizes, options);
}

namespace {

/// The device's state as the state stream (StateStream.h) sees it. A
/// template so that the member functions below, which may name the private
/// CudaOptimizer::Impl, are what instantiate it.
template <typename Impl> class CudaStateAccess : public StateAccess {
public:
  explicit CudaStateAccess(Impl &s) : s_(s) {}
  const RuleLayout &rule() const override { return s_.layout; }
  size_t numTensors() const override { return s_.tensors.size(); }
  // A sharded optimizer's stream holds its own part of each tensor.
  size_t tensorSize(size_t t) const override { return s_.tensors[t].owned(); }
  const LayoutKernels &tensorLayout(size_t t) const override { return s_.hostLayout(s_.tensors[t]); }
  // The device's counters: replays count, skipped steps do not.
  int64_t stepCount() const override { return s_.deviceCounters()[0]; }
  // Each group's steps (a group added later has taken fewer).
  std::vector<GroupRecord> groups() const override {
    std::vector<int64_t> counters = s_.deviceCounters();
    std::vector<GroupRecord> records;
    for (size_t g = 0; g < s_.groups.size(); ++g)
      records.push_back({s_.groups[g].numTensors, counters[g + 1], s_.groups[g].hypers});
    return records;
  }
  std::vector<double> scalars(size_t t) const override {
    size_t n = s_.layout.numScalar();
    std::vector<double> values(n);
    if (n > 0)
      s_.d->check(s_.d->cuMemcpyDtoH_v2(values.data(), s_.tables.get() + s_.tableLayout.scalars + t * n * sizeof(double),
                                        n * sizeof(double)),
                  "cuMemcpyDtoH_v2");
    return values;
  }
  void withBuffer(size_t t, size_t b, const std::function<void(const void *, size_t)> &use) const override {
    std::vector<uint8_t> bytes = s_.download(s_.tensors[t], static_cast<int>(b));
    use(bytes.data(), bytes.size());
  }
  void writeBuffer(size_t t, size_t b, const void *data) override {
    const Tensor &tensor = s_.tensors[t];
    size_t bytes = tensorBufferBytes(s_.hostLayout(tensor).buffers[b], tensor.owned(), tensor.matrixDims,
                                     s_.layout.rule().states);
    if (bytes == 0) // sharded, a tensor may have no elements on this rank
      return;
    s_.d->check(s_.d->cuMemcpyHtoDAsync_v2(s_.arena.get() + tensor.offsets[b], data, bytes, nullptr),
                "cuMemcpyHtoDAsync_v2");
    // `data` may go as soon as this returns.
    s_.d->check(s_.d->cuCtxSynchronize(), "cuCtxSynchronize");
  }
  void finishLoad(int64_t stepCount, const std::vector<GroupRecord> &groups,
                  const std::vector<std::vector<double>> &scalars) override {
    std::vector<double> groupSteps;
    for (size_t g = 0; g < groups.size(); ++g) {
      s_.groups[g].hypers = groups[g].hypers;
      s_.groups[g].steps = groups[g].steps;
      groupSteps.push_back(static_cast<double>(groups[g].steps));
    }
    s_.hypersDirty = true; // the device copy is refreshed by the next step
    std::vector<double> table;
    for (const std::vector<double> &tensor : scalars)
      table.insert(table.end(), tensor.begin(), tensor.end());
    // rank, rows and cols are the optimizer's tensors', not the file's.
    size_t numScalar = s_.layout.numScalar();
    for (size_t t = 0; t < s_.tensors.size() && numScalar > 0; ++t)
      setShapeScalars(s_.layout, s_.tensors[t].dims, table.data() + t * numScalar);
    double counter = static_cast<double>(stepCount);
    const Driver &d = *s_.d;
    CUdeviceptr base = s_.tables.get();
    d.check(d.cuMemcpyHtoDAsync_v2(base + s_.tableLayout.counter, &counter, sizeof counter, nullptr),
            "cuMemcpyHtoDAsync_v2");
    if (!groupSteps.empty())
      d.check(d.cuMemcpyHtoDAsync_v2(base + s_.tableLayout.counter + sizeof(CounterRecord), groupSteps.data(),
                                     groupSteps.size() * sizeof(double), nullptr),
              "cuMemcpyHtoDAsync_v2");
    if (!table.empty())
      d.check(d.cuMemcpyHtoDAsync_v2(base + s_.tableLayout.scalars, table.data(), table.size() * sizeof(double),
                                     nullptr),
              "cuMemcpyHtoDAsync_v2");
    d.check(d.cuCtxSynchronize(), "cuCtxSynchronize");
    s_.stepCount = stepCount;
  }

private:
  Impl &s_;
};

} // namespace

namespace {

void refuseSharded(const CudaShard *shard, const char *caller) {
  if (shard)
    throw std::logic_error(std::string(caller) + ": the optimizer is sharded over " +
                           std::to_string(shard->plan.ranks()) +
                           " ranks; its state goes to a folder, one file per rank: saveState(path) and "
                           "loadState(path) (a stream holds one process's state)");
}

// The optimizer as sharded checkpoints see it (shard/ShardedCheckpoint.h).
template <typename Impl> ShardedView shardedView(Impl &s, StateAccess &access) {
  ShardedView view{access, {}, {}, s.shard ? &s.shard->plan : nullptr, s.shard ? s.shard->comm.get() : nullptr,
                   s.layout.rule().name, s.layout.layout().name, s.deviceCounters()[0]};
  for (const Tensor &t : s.tensors) {
    view.sizes.push_back(t.size);
    view.owned.push_back({t.ownedBegin, t.ownedEnd});
  }
  return view;
}

} // namespace

void CudaOptimizer::saveState(std::ostream &out) const {
  Impl &s = *impl_; // the stream only reads it
  refuseSharded(s.shard.get(), "optrt::CudaOptimizer::saveState");
  ContextScope scope(*s.d, s.context);
  s.d->check(s.d->cuCtxSynchronize(), "cuCtxSynchronize");
  writeStateStream(out, CudaStateAccess<Impl>(s), "optrt::CudaOptimizer::saveState");
}

void CudaOptimizer::loadState(std::istream &in, bool convert) {
  Impl &s = *impl_;
  refuseSharded(s.shard.get(), "optrt::CudaOptimizer::loadState");
  ContextScope scope(*s.d, s.context);
  // Steps in flight use the state being replaced.
  s.d->check(s.d->cuCtxSynchronize(), "cuCtxSynchronize");
  CudaStateAccess<Impl> access(s);
  readStateStream(in, access, convert, "optrt::CudaOptimizer::loadState");
}

void CudaOptimizer::saveState(const std::string &path) const {
  static const char *caller = "optrt::CudaOptimizer::saveState";
  if (impl_->shard) {
    Impl &s = *impl_; // the stream only reads it
    ContextScope scope(*s.d, s.context);
    s.d->check(s.d->cuCtxSynchronize(), "cuCtxSynchronize");
    CudaStateAccess<Impl> access(s);
    return saveShards(path, shardedView(s, access), caller);
  }
  writeFileAtomically(path, [&](std::ostream &out) { saveState(out); }, caller);
}

void CudaOptimizer::loadState(const std::string &path, bool convert) {
  static const char *caller = "optrt::CudaOptimizer::loadState";
  if (impl_->shard || isShardedCheckpoint(path)) {
    Impl &s = *impl_;
    ContextScope scope(*s.d, s.context);
    // Steps in flight use the state being replaced.
    s.d->check(s.d->cuCtxSynchronize(), "cuCtxSynchronize");
    CudaStateAccess<Impl> access(s);
    ShardedView view = shardedView(s, access);
    return loadParts(path, view, convert, caller);
  }
  readFile(path, [&](std::istream &in) { loadState(in, convert); }, caller);
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
  return impl_->arenaBytes + impl_->tensors.size() * impl_->layout.numScalar() * sizeof(double);
}

} // namespace optrt
