// The world of a multi-rank test: this rank, the number of ranks, and an MPI
// communicator over them (optrt/MpiCommunicator.h), and the helpers of tests
// that expect an error on every rank.
#pragma once

#include "optrt/MpiCommunicator.h"

#include <gtest/gtest.h>
#include <mpi.h>

#include <exception>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <unistd.h>

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

/// Runs `call`, which must throw (on every rank, where the tests use it), and
/// returns its message; a call that does not throw is a test failure.
template <typename Call> std::string messageOf(Call &&call) {
  try {
    call();
  } catch (const std::exception &e) {
    return e.what();
  }
  ADD_FAILURE() << "no exception on rank " << worldRank();
  return "";
}

inline bool contains(const std::string &text, const std::string &part) { return text.find(part) != std::string::npos; }

/// A folder every rank agrees on, new for this test: /tmp/PREFIX-PID-NAME
/// with rank 0's pid.
inline std::string sharedFolder(const std::string &prefix, const std::string &name) {
  int pid = gatherFromRanks(static_cast<int>(getpid()))[0];
  std::string folder = "/tmp/" + prefix + "-" + std::to_string(pid) + "-" + name;
  if (worldRank() == 0)
    std::filesystem::remove_all(folder);
  MPI_Barrier(MPI_COMM_WORLD);
  return folder;
}

} // namespace optdsl::test
