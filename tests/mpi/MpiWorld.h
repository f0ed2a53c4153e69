// The world of a multi-rank test: this rank, the number of ranks, and an MPI
// communicator over them (optrt/MpiCommunicator.h).
#pragma once

#include "optrt/MpiCommunicator.h"

#include <mpi.h>

#include <memory>
#include <vector>

namespace optdsl::test {

inline int worldRank() {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

inline int worldSize() {
  int size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  return size;
}

inline std::shared_ptr<optrt::Communicator> worldCommunicator(optrt::MpiOptions options = {}) {
  return optrt::mpiCommunicator(MPI_COMM_WORLD, options);
}

/// Every rank's `value`, rank 0's first.
template <typename T> std::vector<T> gatherFromRanks(T value) {
  std::vector<T> all(static_cast<size_t>(worldSize()));
  MPI_Allgather(&value, sizeof(T), MPI_BYTE, all.data(), sizeof(T), MPI_BYTE, MPI_COMM_WORLD);
  return all;
}

} // namespace optdsl::test
