#include "JoinedRuns.h"

namespace optrt::detail {

std::vector<uint8_t> joinsOnEveryRank(Communicator &comm, const std::vector<const void *> &pointers,
                                      const std::vector<size_t> &sizes, size_t unit) {
  size_t n = pointers.size();
  std::vector<uint8_t> mine(n, 0);
  for (size_t i = 0; i + 1 < n; ++i)
    mine[i] = reinterpret_cast<uintptr_t>(pointers[i]) + sizes[i] * unit == reinterpret_cast<uintptr_t>(pointers[i + 1]);
  std::vector<uint8_t> all(n * static_cast<size_t>(comm.size()));
  comm.allGather(mine.data(), all.data(), n);
  for (size_t r = 0; r < static_cast<size_t>(comm.size()); ++r)
    for (size_t i = 0; i < n; ++i)
      mine[i] &= all[r * n + i];
  return mine;
}

} // namespace optrt::detail
