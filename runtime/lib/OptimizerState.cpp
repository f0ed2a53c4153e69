// optrt::Optimizer's saveState/loadState: its tensors, arena buffers and
// scalar states as the state stream (StateStream.h) sees them.
#include "OptimizerImpl.h"
#include "CpuStateAccess.h"
#include "StateStream.h"
#include "shard/ShardedCheckpoint.h"

#include <cstring>

namespace optrt {

void Optimizer::Impl::refuseSharded(const char *caller) const {
  if (comm)
    throw std::logic_error(std::string(caller) + ": the optimizer is sharded over " + std::to_string(comm->size()) +
                           " ranks; its state goes to a folder, one file per rank: saveState(path) and "
                           "loadState(path) (streams and safetensors hold one process's state)");
}

namespace {

// The optimizer as sharded checkpoints see it (shard/ShardedCheckpoint.h).
template <typename Impl> detail::ShardedView shardedView(Impl &s, detail::StateAccess &access) {
  detail::ShardedView view{access, {}, {}, s.comm ? &s.plan : nullptr, s.comm.get(), s.layout.rule().name,
                           s.layout.layout().name, s.stepCount};
  for (const detail::Tensor &t : s.tensors) {
    view.sizes.push_back(t.size);
    view.owned.push_back(t.owned);
  }
  return view;
}

} // namespace

void Optimizer::Impl::saveShards(const std::string &folder) const {
  Impl &s = const_cast<Impl &>(*this); // the stream only reads it
  CpuStateAccess<Impl> access(s);
  detail::saveShards(folder, shardedView(s, access), "optrt::Optimizer::saveState");
}

void Optimizer::Impl::loadParts(const std::string &path, bool convert) {
  CpuStateAccess<Impl> access(*this);
  detail::ShardedView view = shardedView(*this, access);
  detail::loadParts(path, view, convert, "optrt::Optimizer::loadState");
}

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
