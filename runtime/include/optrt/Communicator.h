// The collectives a sharded optimizer (ZeRO stage 1, docs/sharding.md) needs
// from the engine a trainer already runs: MPI (optrt/MpiCommunicator.h) or
// NCCL. The optimizer only ever moves data that is laid out in rank order
// (rank r's shard of a parameter group comes before rank r+1's), so every
// collective takes counts per rank and no displacements: rank r's part
// starts where rank r-1's ends.
//
// Every rank must make the same calls in the same order with the same
// counts; the optimizer guarantees that by agreeing on its arguments first
// (a fingerprint of the rule, layout and tensor sizes; a check of each
// step's arguments), so a mistake on one rank is a named error on every
// rank, not a hang.
#pragma once

#include "optrt/Layout.h"

#include <cstddef>
#include <span>
#include <string>

namespace optrt {

/// Collectives over a fixed set of ranks (see the file comment).
class Communicator {
public:
  virtual ~Communicator() = default;

  /// This process's rank, 0 .. size() - 1.
  virtual int rank() const = 0;
  /// The number of ranks.
  virtual int size() const = 0;
  /// The engine, for messages: "MPI", "NCCL", ...
  virtual std::string engine() const = 0;

  /// Every rank contributes `bytes` bytes from `mine`; `all` receives
  /// size() * bytes bytes, rank 0's first.
  virtual void allGather(const void *mine, void *all, size_t bytes) = 0;
  /// In place: `buffer` holds bytesPerRank[0] + ... bytes, rank r's part
  /// after those of ranks 0 .. r-1; each rank has written its own part, and
  /// afterwards every rank holds every part. Parts may be empty.
  virtual void allGatherInPlace(void *buffer, std::span<const size_t> bytesPerRank) = 0;
  /// What reduceScatter computes of the ranks' values.
  enum class Reduction {
    Sum,     ///< their sum
    Average, ///< their sum, rounded, divided by size() (not multiplied by its inverse)
  };
  /// Reduces the ranks' `send` buffers (countsPerRank[0] + ... elements of
  /// `dtype`: F32, BF16 or F16; 16-bit values are added in f32 and each sum
  /// rounded to nearest even) and gives rank r the elements of its part:
  /// rank r's `recv` receives countsPerRank[r] elements. The order of the sum
  /// is the engine's (fixed for a given number of ranks in the MPI engine).
  virtual void reduceScatter(const void *send, void *recv, std::span<const size_t> countsPerRank, Dtype dtype,
                             Reduction reduction) = 0;
};

} // namespace optrt
