// The MPI engine of a sharded optimizer (optrt/Communicator.h): collectives
// over a duplicate of a communicator the trainer already has, so the
// optimizer's messages never match the trainer's own; and the NCCL engine
// made over MPI ranks (ncclCommunicator(MPI_Comm, device)). Built into the
// library optrt_mpi (target OptDSL::optrt_mpi) only where CMake finds MPI;
// the rest of the project builds and runs without it.
#pragma once

#include "optrt/Communicator.h"

#include <mpi.h>

#include <climits>
#include <cstddef>
#include <memory>

namespace optrt {

/// How the MPI engine calls MPI.
struct MpiOptions {
  /// The largest count (bytes, or elements of a reduction) passed to one MPI
  /// call. MPI counts are int: a larger all-gather is split into pieces of
  /// at most this many, each an MPI_Bcast from the rank that owns it, and the
  /// reduce-scatter (a ring of MPI_Sendrecv, see MpiCommunicator.cpp) moves
  /// windows of at most this many elements. Tests lower it to exercise the
  /// split with small tensors.
  size_t maxCountPerCall = INT_MAX;
};

/// A Communicator over MPI_Comm_dup(comm), whose error handler returns
/// errors instead of aborting: a failing MPI call throws std::runtime_error
/// naming the call and MPI's message. Throws std::runtime_error when MPI is
/// not initialised or already finalised, std::invalid_argument for
/// MPI_COMM_NULL or maxCountPerCall 0 or above INT_MAX.
std::shared_ptr<Communicator> mpiCommunicator(MPI_Comm comm, MpiOptions options = {});

/// The NCCL engine (optrt/NcclCommunicator.h) over the ranks of `comm`,
/// each on its CUDA device `device` (the trainer's choice, usually the rank
/// on its node): a collective call. Rank 0 makes NCCL's unique id, MPI gives
/// it to every rank, every rank joins with ncclCommInitRank; the NCCL
/// communicator is the engine's and goes with it. NCCL, the driver or the
/// device missing on one rank is an error on every rank (the rank named);
/// MPI problems as mpiCommunicator's.
std::shared_ptr<Communicator> ncclCommunicator(MPI_Comm comm, int device);

} // namespace optrt
