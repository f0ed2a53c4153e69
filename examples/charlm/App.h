// The charlm program as a function, so that tests can run it in-process:
// returns the exit status (0 done, 1 bad input such as an unreadable corpus
// or a rule with errors, 2 a bad command line).
#pragma once

#include <ostream>
#include <string>
#include <vector>

namespace charlm {

int runTrainer(const std::vector<std::string> &args, std::ostream &out, std::ostream &err);

} // namespace charlm
