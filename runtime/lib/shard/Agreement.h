// Before a sharded optimizer changes anything or enters a collective, its
// ranks agree: each passes what went wrong with its own arguments (if
// anything) and a description of what must be the same everywhere (rule,
// layout, tensor sizes, hypers, the step's options). A mistake on one rank
// then becomes an exception on every rank, naming the rank, instead of a
// rank waiting forever in a collective the others never enter.
#pragma once

#include "optrt/Communicator.h"

#include <exception>
#include <string>

namespace optrt::detail {

/// Exchanges every rank's error and description (two small collectives).
/// Returns when no rank has an error and every description equals rank 0's.
/// Otherwise throws on every rank: a rank with an error rethrows its own;
/// the others throw std::invalid_argument "CALLER: rank R failed: ..." for
/// every failing rank, or, when all arguments were fine but descriptions
/// differ, "CALLER: the ranks disagree on WHAT: rank 0 has '...', rank R
/// has '...'".
void agreeAcrossRanks(Communicator &comm, const char *caller, const char *what, std::exception_ptr error,
                      const std::string &description);

/// Runs `check` (which throws when the local arguments are wrong), then
/// agreeAcrossRanks with what it threw.
template <typename Check>
void checkOnEveryRank(Communicator &comm, const char *caller, const char *what, const std::string &description,
                      Check &&check) {
  std::exception_ptr error;
  try {
    check();
  } catch (...) {
    error = std::current_exception();
  }
  agreeAcrossRanks(comm, caller, what, error, description);
}

} // namespace optrt::detail
