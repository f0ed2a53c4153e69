// The charlm program as a function, so that tests can run it in-process:
// returns the exit status (0 done, 1 bad input such as an unreadable corpus
// or a rule with errors, 2 a bad command line).
#pragma once

#include "optrt/Communicator.h"

#include <memory>
#include <ostream>
#include <string>
#include <vector>

namespace charlm {

/// `communicator`: the ranks of a data-parallel run (--zero 1; main makes it
/// from MPI_COMM_WORLD when charlm was built with MPI), or null. Every rank
/// runs this; only rank 0 writes `out`, the plots and the CSV.
int runTrainer(const std::vector<std::string> &args, std::ostream &out, std::ostream &err,
               std::shared_ptr<optrt::Communicator> communicator = nullptr);

} // namespace charlm
