// optrt::Optimizer's saveState/loadState: its tensors, arena buffers and
// scalar states as the state stream (StateStream.h) sees them.
#include "OptimizerImpl.h"
#include "CpuStateAccess.h"
#include "StateStream.h"

#include <cstring>

namespace optrt {

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
  if (impl_->comm)
    return impl_->saveShards(path);
  detail::writeFileAtomically(path, [&](std::ostream &out) { saveState(out); }, caller);
}

void Optimizer::loadState(const std::string &path, bool convert) {
  static const char *caller = "optrt::Optimizer::loadState";
  if (impl_->comm || detail::isShardedCheckpoint(path))
    return impl_->loadParts(path, convert);
  detail::readFile(path, [&](std::istream &in) { loadState(in, convert); }, caller);
}

} // namespace optrt
