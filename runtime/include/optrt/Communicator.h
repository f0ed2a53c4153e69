// The collectives a sharded optimizer (ZeRO stage 1, docs/sharding.md) needs
// from the engine a trainer already runs: MPI (optrt/MpiCommunicator.h) or
// NCCL (optrt/NcclCommunicator.h). The optimizer only ever moves data that is laid out in rank order
// (rank r's shard of a parameter group comes before rank r+1's), so every
// collective takes counts per rank and no displacements: rank r's part
// starts where rank r-1's ends.
//
// Every rank must make the same calls in the same order with the same
// counts; the optimizer guarantees that by agreeing on its arguments first
// (a fingerprint of the rule, layout and tensor sizes; a check of each
// step's arguments), so a mistake on one rank is a named error on every
// rank, not a hang.
//
// Two kinds of data move. Small records in host memory (allGather: the
// agreement, fingerprints, a loss to average) move with every engine and the
// call returns when they have arrived. The bulk (allGatherInPlace,
// reduceScatter: gradients, params, reduction partials) stays where the
// engine works, memory(): host memory for MPI, device memory for NCCL, whose
// calls are enqueued on a CUDA stream and return before the data has moved,
// as every CUDA call does.
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

  /// Where the bulk collectives' buffers are.
  enum class Memory {
    Host,   ///< host memory; the call returns when the data has moved
    Device, ///< device memory of the engine's GPU; the call is enqueued on the stream it is given
  };
  /// Where this engine's allGatherInPlace and reduceScatter read and write.
  virtual Memory memory() const = 0;

  /// Every rank contributes `bytes` bytes of host memory from `mine`; `all`
  /// (host memory) receives size() * bytes bytes, rank 0's first. Returns
  /// when they have arrived, with every engine.
  virtual void allGather(const void *mine, void *all, size_t bytes) = 0;
  /// In place, in memory(): `buffer` holds bytesPerRank[0] + ... bytes, rank
  /// r's part after those of ranks 0 .. r-1; each rank has written its own
  /// part, and afterwards every rank holds every part. Parts may be empty.
  /// A device engine enqueues it on `stream` (a CUstream; null is the legacy
  /// default stream); a host engine ignores `stream`.
  virtual void allGatherInPlace(void *buffer, std::span<const size_t> bytesPerRank, void *stream) = 0;
  /// What reduceScatter computes of the ranks' values.
  enum class Reduction {
    Sum,     ///< their sum
    Average, ///< their sum, rounded, divided by size() (not multiplied by its inverse)
  };
  /// Reduces the ranks' `send` buffers (countsPerRank[0] + ... elements of
  /// `dtype`: F32, BF16 or F16; 16-bit values are added in f32 and each sum
  /// rounded to nearest even) and gives rank r the elements of its part:
  /// rank r's `recv` receives countsPerRank[r] elements. Both buffers are in
  /// memory(); `stream` as for allGatherInPlace. The order of the sum is the
  /// engine's (fixed for a given number of ranks in the MPI engine).
  virtual void reduceScatter(const void *send, void *recv, std::span<const size_t> countsPerRank, Dtype dtype,
                             Reduction reduction, void *stream) = 0;
};

/// What the gradients a sharded optimizer's step takes are on each rank.
enum class ShardedGradients {
  /// Each rank's own (e.g. of its slice of the batch): the step sums them
  /// across ranks with a reduce-scatter, so each rank receives only its part,
  /// and divides the sum by the number of ranks, as data-parallel training
  /// averages gradients.
  Average,
  /// Already reduced by the trainer (an all-reduce, as DDP does): the same on
  /// every rank. The step reads its own part and moves no gradient.
  Reduced,
};

} // namespace optrt
