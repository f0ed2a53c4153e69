// optrt::Optimizer's saveState/loadState: its tensors, arena buffers and
// scalar states as the state stream (StateStream.h) sees them.
#include "OptimizerImpl.h"
#include "StateStream.h"

#include <cstring>

namespace optrt {

namespace {

/// A template so that the member functions below, which may name the
/// private Optimizer::Impl, are what instantiate it.
template <typename Impl> class CpuStateAccess : public detail::StateAccess {
public:
  explicit CpuStateAccess(Impl &s) : s_(s) {}
  const RuleLayout &rule() const override { return s_.layout; }
  size_t numTensors() const override { return s_.tensors.size(); }
  size_t tensorSize(size_t t) const override { return s_.tensors[t].size; }
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
    use(s_.bufferAt(tensor, b), bufferBytes(tensor.layout->buffers[b], tensor.size));
  }
  void writeBuffer(size_t t, size_t b, const void *data) override {
    const Tensor &tensor = s_.tensors[t];
    std::memcpy(s_.bufferAt(tensor, b), data, bufferBytes(tensor.layout->buffers[b], tensor.size));
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
    s_.stepCount = stepCount;
  }

private:
  Impl &s_;
};

} // namespace

void Optimizer::saveState(std::ostream &out) const {
  impl_->refuseSharded("optrt::Optimizer::saveState");
  detail::writeStateStream(out, CpuStateAccess<Impl>(*impl_), "optrt::Optimizer::saveState");
}

void Optimizer::loadState(std::istream &in, bool convert) {
  impl_->refuseSharded("optrt::Optimizer::loadState");
  CpuStateAccess<Impl> access(*impl_);
  detail::readStateStream(in, access, convert, "optrt::Optimizer::loadState");
}

void Optimizer::saveState(const std::string &path) const {
  static const char *caller = "optrt::Optimizer::saveState";
  detail::writeFileAtomically(path, [&](std::ostream &out) { saveState(out); }, caller);
}

void Optimizer::loadState(const std::string &path, bool convert) {
  static const char *caller = "optrt::Optimizer::loadState";
  detail::readFile(path, [&](std::istream &in) { loadState(in, convert); }, caller);
}

} // namespace optrt
