// The state stream of saveState/loadState, for both optimizers
// (optrt::Optimizer on the CPU, optrt::CudaOptimizer on a GPU): one format,
// so state saved by either loads into the other. Binary, little-endian as
// the host writes it (a checkpoint is read back on the same kind of machine).
//
// Version 3 (docs/checkpoints.md) is a sequence of checksummed sections:
//   "OPTDSLST" u32 version=3
//   header:  u64 bytes, the bytes, u64 XXH3-64 of them. The bytes:
//            string rule, string layout, i64 stepCount, u64 groups; per group:
//            u64 tensors, i64 steps, u32 hypers + (string name, f64 value)
//            each; u64 tensors; per tensor: u64 size, string its layout,
//            u32 scalars + f64 each, u32 buffers; per buffer: u32 role,
//            u32 dtype, string state name ("" for master), u64 bytes
//   then per tensor, per buffer, in that order: u64 bytes, the buffer's
//            bytes, u64 XXH3-64 of them
//   "OPTDSLEN": the end, after which nothing may follow.
// Strings are u32 length + bytes. Buffers are stored raw, so loading under
// the same layout restores every bit (q8 codes and absmax included).
// Versions 1 and 2 (no checksums; version 1 without per-group step counts,
// neither with hypers) are still read.
#pragma once

#include "RuleLayout.h"

#include <cstdint>
#include <functional>
#include <istream>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

namespace optrt::detail {

/// What a stream records of one parameter group.
struct GroupRecord {
  size_t tensors;
  int64_t steps;
  std::vector<double> hypers; // by HyperInfo index
};

/// What the stream reads and writes of an optimizer: its groups, its
/// tensors with the layout each runs, their owned buffers (indices 2... of
/// the layout's buffers: master, states, absmax), scalar states and step
/// count.
class StateAccess {
public:
  virtual ~StateAccess() = default;
  virtual const RuleLayout &rule() const = 0;
  virtual size_t numTensors() const = 0;
  virtual size_t tensorSize(size_t t) const = 0;
  virtual const LayoutKernels &tensorLayout(size_t t) const = 0;
  virtual int64_t stepCount() const = 0;
  virtual std::vector<GroupRecord> groups() const = 0;
  /// False when every group must have taken the optimizer's steps (the CUDA
  /// optimizer's single device counter): the reader refuses other streams.
  virtual bool perGroupSteps() const { return true; }
  virtual std::vector<double> scalars(size_t t) const = 0;
  /// Calls `use` with the bytes of buffer b of tensor t.
  virtual void withBuffer(size_t t, size_t b, const std::function<void(const void *, size_t)> &use) const = 0;
  /// Replaces the bytes of buffer b of tensor t (its size in bytes).
  virtual void writeBuffer(size_t t, size_t b, const void *data) = 0;
  /// Sets the step counts, the groups' hypers (when the stream had them:
  /// hypers empty otherwise) and every tensor's scalar states, after the
  /// buffers. groups has one entry per group (checked by the reader).
  virtual void finishLoad(int64_t stepCount, const std::vector<GroupRecord> &groups,
                          const std::vector<std::vector<double>> &scalars) = 0;
};

/// Throws std::runtime_error naming `caller` when writing fails.
void writeStateStream(std::ostream &out, const StateAccess &state, const char *caller);
/// Reads and checks the whole stream (every checksum, every size, the rule,
/// the groups and hypers), then writes it into `state` (see
/// Optimizer::loadState for `convert`); throws std::invalid_argument naming
/// `caller` and the damaged section before anything changes.
void readStateStream(std::istream &in, StateAccess &state, bool convert, const char *caller);

/// Writes `path` atomically: `write` fills a temporary file in the same
/// folder, which is flushed to disk (fsync) and renamed over `path`, and the
/// folder is synced; a crash at any point leaves either the old file or the
/// new one. Throws std::runtime_error naming `caller`, the path and the
/// system's reason; the temporary file is removed.
void writeFileAtomically(const std::string &path, const std::function<void(std::ostream &)> &write,
                         const char *caller);
/// Opens `path` for reading, or throws std::invalid_argument naming `caller`
/// and the system's reason.
void readFile(const std::string &path, const std::function<void(std::istream &)> &read, const char *caller);

} // namespace optrt::detail
