// The state stream of saveState/loadState, for both optimizers
// (optrt::Optimizer on the CPU, optrt::CudaOptimizer on a GPU): one format,
// so state saved by either loads into the other. Binary, little-endian as
// the host writes it (a checkpoint is read back on the same kind of machine):
//   "OPTDSLST" u32 version=2, string rule, string layout, i64 stepCount,
//   u64 groups; per group: u64 tensors, i64 steps (version 2: per-group step
//   counts; a version-1 stream gives every group stepCount), u64 tensors; per tensor: u64 size, string its layout, u32 scalars +
//   f64 each, u32 buffers; per buffer: u32 role, u32 dtype, string state
//   name ("" for master), u64 bytes + the buffer's bytes.
// Strings are u32 length + bytes. Buffers are stored raw, so loading under
// the same layout restores every bit (q8 codes and absmax included).
#pragma once

#include "RuleLayout.h"

#include <cstdint>
#include <functional>
#include <istream>
#include <ostream>
#include <utility>
#include <vector>

namespace optrt::detail {

/// What the stream reads and writes of an optimizer: its tensors with the
/// layout each runs, their owned buffers (indices 2... of the layout's
/// buffers: master, states, absmax), scalar states and step count.
class StateAccess {
public:
  virtual ~StateAccess() = default;
  virtual const RuleLayout &rule() const = 0;
  virtual size_t numTensors() const = 0;
  virtual size_t tensorSize(size_t t) const = 0;
  virtual const LayoutKernels &tensorLayout(size_t t) const = 0;
  virtual int64_t stepCount() const = 0;
  /// Per group: its number of tensors and the steps it has taken.
  virtual std::vector<std::pair<size_t, int64_t>> groupSteps() const = 0;
  /// False when every group must have taken the optimizer's steps (the CUDA
  /// optimizer's single device counter): the reader refuses other streams.
  virtual bool perGroupSteps() const { return true; }
  virtual std::vector<double> scalars(size_t t) const = 0;
  /// Calls `use` with the bytes of buffer b of tensor t.
  virtual void withBuffer(size_t t, size_t b, const std::function<void(const void *, size_t)> &use) const = 0;
  /// Replaces the bytes of buffer b of tensor t (its size in bytes).
  virtual void writeBuffer(size_t t, size_t b, const void *data) = 0;
  /// Sets the step counts and every tensor's scalar states (after the
  /// buffers). groupSteps has one entry per group (checked by the reader).
  virtual void finishLoad(int64_t stepCount, const std::vector<int64_t> &groupSteps,
                          const std::vector<std::vector<double>> &scalars) = 0;
};

/// Throws std::runtime_error naming `caller` when writing fails.
void writeStateStream(std::ostream &out, const StateAccess &state, const char *caller);
/// Reads and checks the whole stream, then writes it into `state` (see
/// Optimizer::loadState for `convert`); throws std::invalid_argument naming
/// `caller` before anything changes.
void readStateStream(std::istream &in, StateAccess &state, bool convert, const char *caller);

} // namespace optrt::detail
