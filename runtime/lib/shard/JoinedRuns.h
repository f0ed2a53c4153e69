// Runs of tensors that lie back to back in memory on every rank, so that a
// sharded step moves them with one collective (ShardedStep.cpp).
#pragma once

#include "optrt/Communicator.h"

#include <cstddef>
#include <cstdint>
#include <vector>

namespace optrt::detail {

/// joins[i] is 1 when pointers[i + 1] starts where pointers[i]'s
/// sizes[i] elements of `unit` bytes end, on every rank (one small
/// collective); the last entry is 0.
std::vector<uint8_t> joinsOnEveryRank(Communicator &comm, const std::vector<const void *> &pointers,
                                      const std::vector<size_t> &sizes, size_t unit);

/// Calls visit(first, end) for each maximal run [first, end) of tensors
/// first .. first + count - 1 that joins[] links.
template <typename Visit>
void forEachJoinedRun(size_t first, size_t count, const std::vector<uint8_t> &joins, Visit &&visit) {
  size_t end = first + count;
  for (size_t begin = first; begin < end;) {
    size_t last = begin;
    while (last + 1 < end && joins[last])
      ++last;
    visit(begin, last + 1);
    begin = last + 1;
  }
}

} // namespace optrt::detail
