// optrt::Optimizer's tensors, arena buffers and scalar states as the state
// stream (StateStream.h) sees them: what saveState writes and loadState
// reads. A sharded optimizer's stream holds its own part of each tensor.
#pragma once

#include "OptimizerImpl.h"
#include "StateStream.h"

#include <cstring>

namespace optrt::detail {

/// A template so that the member functions below, which may name the
/// private Optimizer::Impl, are what instantiate it.
template <typename Impl> class CpuStateAccess : public detail::StateAccess {
public:
  explicit CpuStateAccess(Impl &s) : s_(s) {}
  const RuleLayout &rule() const override { return s_.layout; }
  size_t numTensors() const override { return s_.tensors.size(); }
  // A sharded optimizer's stream holds its own part of each tensor.
  size_t tensorSize(size_t t) const override { return s_.tensors[t].owned.size(); }
  const LayoutKernels &tensorLayout(size_t t) const override { return *s_.tensors[t].layout; }
  int64_t stepCount() const override { return s_.stepCount; }
  std::vector<detail::GroupRecord> groups() const override {
    std::vector<detail::GroupRecord> records;
    for (const detail::Group &group : s_.groups)
      records.push_back({group.numTensors, group.steps, group.hypers});
    return records;
  }
  std::vector<double> scalars(size_t t) const override {
    size_t n = s_.layout.numScalar();
    return {s_.scalars.begin() + static_cast<std::ptrdiff_t>(t * n),
            s_.scalars.begin() + static_cast<std::ptrdiff_t>((t + 1) * n)};
  }
  void withBuffer(size_t t, size_t b, const std::function<void(const void *, size_t)> &use) const override {
    const Tensor &tensor = s_.tensors[t];
    use(address(tensor, b), bytes(tensor, b));
  }
  void writeBuffer(size_t t, size_t b, const void *data) override {
    Tensor &tensor = s_.tensors[t];
    std::memcpy(address(tensor, b), data, bytes(tensor, b));
  }
  void finishLoad(int64_t stepCount, const std::vector<detail::GroupRecord> &groups,
                  const std::vector<std::vector<double>> &scalars) override {
    for (size_t g = 0; g < groups.size(); ++g) {
      s_.groups[g].steps = groups[g].steps;
      s_.groups[g].hypers = groups[g].hypers;
    }
    for (size_t t = 0; t < scalars.size(); ++t)
      std::copy(scalars[t].begin(), scalars[t].end(),
                s_.scalars.begin() + static_cast<std::ptrdiff_t>(t * s_.layout.numScalar()));
    s_.applyShapes();
    s_.stepCount = stepCount;
  }

private:
  // A state per row, column or matrix lives with its tensor, not in the arena.
  void *address(const Tensor &tensor, size_t b) const {
    if (tensor.layout->buffers[b].role == BufferRole::AxisState)
      return tensor.axisBuffer(b);
    return s_.bufferAt(tensor, b);
  }
  size_t bytes(const Tensor &tensor, size_t b) const {
    return tensorBufferBytes(tensor.layout->buffers[b], tensor.owned.size(), tensor.matrixDims,
                             s_.layout.rule().states);
  }

  Impl &s_;
};


} // namespace optrt::detail
