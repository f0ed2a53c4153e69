// The NCCL engine of a sharded optimizer (optrt/Communicator.h): collectives
// of device memory on the GPUs of an NCCL communicator the trainer already
// has. NCCL is loaded at run time (dlopen of $OPTDSL_LIBNCCL, else
// libnccl.so.2, version 2.10 or later) with the CUDA driver, like the CUDA
// optimizer's driver: one build of optrt runs with and without them, and
// needs neither to build. With MPI, optrt::ncclCommunicator(MPI_Comm, device)
// (optrt/MpiCommunicator.h) makes the NCCL communicator too.
//
// What NCCL is asked, and why (docs/sharding.md "Communicators"):
// - reduceScatter with equal parts is one ncclReduceScatter; with uneven
//   parts (the shard plan cuts between chunks) one ncclReduce per rank to
//   its owner, grouped. Average sums (ncclSum) and then divides each of the
//   rank's own elements by the number of ranks on the device, in the dtype,
//   because ncclAvg multiplies every value by 1/N before adding, which is
//   not the Communicator's "sum, rounded, divided by N".
// - allGatherInPlace: one in-place ncclAllGather for equal parts, else one
//   in-place ncclBroadcast per rank, grouped.
// - allGather of host records: through a small device buffer on the legacy
//   default stream, synchronously.
#pragma once

#include "optrt/Communicator.h"

#include <memory>

/// nccl.h's communicator handle (the same declaration as nccl.h's).
typedef struct ncclComm *ncclComm_t;

namespace optrt {

/// A Communicator over `comm`, which stays the caller's: it must outlive the
/// communicator, which never destroys it. Its bulk collectives take device
/// memory of the communicator's GPU and are enqueued on the stream each call
/// is given. Throws std::invalid_argument for a null `comm`,
/// std::runtime_error when NCCL or the CUDA driver cannot be loaded (naming
/// which and where it was looked for) or an NCCL call fails (naming it).
std::shared_ptr<Communicator> ncclCommunicator(ncclComm_t comm);

} // namespace optrt
