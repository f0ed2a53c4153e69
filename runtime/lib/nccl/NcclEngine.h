// The NCCL engine's constructor, for the two ways of making one: over a
// communicator the trainer owns (optrt::ncclCommunicator(ncclComm_t)) and
// over one made from MPI ranks (mpi/NcclOverMpi.cpp), which the engine owns.
#pragma once

#include "NcclLibrary.h"

#include <memory>

namespace optrt::nccl {

/// The engine over `comm`; with `owned` it destroys `comm` when it goes
/// (also when this throws).
std::shared_ptr<Communicator> makeEngine(const Library &nccl, ncclComm_t comm, bool owned);

} // namespace optrt::nccl
