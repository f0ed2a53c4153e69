#include "Agreement.h"

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <vector>

namespace optrt::detail {

namespace {

std::string messageOf(std::exception_ptr error) {
  try {
    std::rethrow_exception(error);
  } catch (const std::exception &e) {
    return e.what();
  } catch (...) {
    return "an exception that is not a std::exception";
  }
}

// Descriptions can list many tensor sizes: a message quotes them from a
// little before the first character where they differ.
std::string quoted(const std::string &text, size_t firstDifference) {
  constexpr size_t kBefore = 40, kShown = 160;
  size_t from = firstDifference > kBefore ? firstDifference - kBefore : 0;
  std::string shown = text.substr(from, kShown);
  return "'" + std::string(from > 0 ? "..." : "") + shown + (from + kShown < text.size() ? "..." : "") + "'";
}

} // namespace

void agreeAcrossRanks(Communicator &comm, const char *caller, const char *what, std::exception_ptr error,
                      const std::string &description) {
  std::string problem = error ? messageOf(error) : std::string();
  // A failed rank's problem is never empty, whatever its exception says.
  if (error && problem.empty())
    problem = "an exception without a message";
  size_t ranks = static_cast<size_t>(comm.size());
  uint64_t lengths[2] = {problem.size(), description.size()};
  std::vector<uint64_t> allLengths(2 * ranks);
  comm.allGather(lengths, allLengths.data(), sizeof lengths);

  // Host records only (every engine moves those): each rank's texts padded
  // to the longest.
  size_t longest = 0;
  for (size_t r = 0; r < ranks; ++r)
    longest = std::max<size_t>(longest, allLengths[2 * r] + allLengths[2 * r + 1]);
  std::string mine = problem + description;
  mine.resize(longest);
  std::vector<char> texts(longest * ranks);
  comm.allGather(mine.data(), texts.data(), longest);

  std::vector<std::string> problems(ranks), descriptions(ranks);
  for (size_t r = 0; r < ranks; ++r) {
    const char *at = texts.data() + r * longest;
    problems[r].assign(at, allLengths[2 * r]);
    descriptions[r].assign(at + allLengths[2 * r], allLengths[2 * r + 1]);
  }
  if (error)
    std::rethrow_exception(error);
  std::string failures;
  for (size_t r = 0; r < ranks; ++r)
    if (!problems[r].empty())
      failures += (failures.empty() ? "" : "; ") + std::string("rank ") + std::to_string(r) + " failed: " +
                  problems[r];
  if (!failures.empty())
    throw std::invalid_argument(std::string(caller) + ": " + failures);
  for (size_t r = 1; r < ranks; ++r) {
    if (descriptions[r] == descriptions[0])
      continue;
    const std::string &a = descriptions[0], &b = descriptions[r];
    size_t at = static_cast<size_t>(std::mismatch(a.begin(), a.begin() + std::min(a.size(), b.size()), b.begin()).first -
                                    a.begin());
    throw std::invalid_argument(std::string(caller) + ": the ranks disagree on " + what + ": rank 0 has " +
                                quoted(a, at) + ", rank " + std::to_string(r) + " has " + quoted(b, at));
  }
}

} // namespace optrt::detail
