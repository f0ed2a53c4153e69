#include "ShardPlan.h"

#include <algorithm>

namespace optrt::detail {

void ShardPlan::addGroup(const std::vector<size_t> &sizes, const std::vector<uint64_t> &weights,
                         const std::vector<size_t> &chunkLengths) {
  size_t elements = 0;
  unsigned __int128 total = 0;
  bool weighted = std::any_of(weights.begin(), weights.end(), [](uint64_t w) { return w != 0; });
  auto weightOf = [&](size_t t) -> uint64_t { return weighted ? weights[t] : 1; };
  for (size_t t = 0; t < sizes.size(); ++t) {
    elements += sizes[t];
    total += static_cast<unsigned __int128>(sizes[t]) * weightOf(t);
  }
  GroupEntry group{std::vector<size_t>(ranks_ + 1, elements), ownedElements_};
  size_t offset = 0;
  unsigned __int128 weightBefore = 0; // of the tensors before this one
  for (size_t t = 0; t < sizes.size(); ++t) {
    size_t size = sizes[t];
    for (size_t begin = 0; begin < size; begin += std::min(size - begin, chunkLengths[t])) {
      size_t start = offset + begin;
      unsigned __int128 weight = weightBefore + static_cast<unsigned __int128>(begin) * weightOf(t);
      // Below ranks whenever weight < total, which a chunk's start is.
      auto owner = static_cast<size_t>(weight * ranks_ / total);
      chunkOwner_.push_back(static_cast<int>(owner));
      // Owners rise along the group, so the first chunk of a rank (or of a
      // later one, when a rank gets none) is where its part starts.
      for (size_t r = owner + 1; r-- > 0 && group.bounds[r] > start;)
        group.bounds[r] = start;
      if (owner == rank_)
        ownedChunks_.push_back(chunkOwner_.size() - 1);
    }
    offset += size;
    weightBefore += static_cast<unsigned __int128>(size) * weightOf(t);
  }
  offset = 0;
  size_t mineBegin = group.bounds[rank_], mineEnd = group.bounds[rank_ + 1];
  for (size_t size : sizes) {
    size_t begin = std::clamp(mineBegin, offset, offset + size), end = std::clamp(mineEnd, offset, offset + size);
    tensors_.push_back({{begin - offset, end - offset}, groups_.size(), offset});
    offset += size;
  }
  ownedElements_ += mineEnd - mineBegin;
  groups_.push_back(std::move(group));

  chunksByRank_.resize(chunkOwner_.size());
  rankStarts_.assign(ranks_ + 1, 0);
  for (int owner : chunkOwner_)
    ++rankStarts_[static_cast<size_t>(owner) + 1];
  for (size_t r = 0; r < ranks_; ++r)
    rankStarts_[r + 1] += rankStarts_[r];
  std::vector<size_t> next(rankStarts_.begin(), rankStarts_.end() - 1);
  for (size_t c = 0; c < chunkOwner_.size(); ++c)
    chunksByRank_[next[static_cast<size_t>(chunkOwner_[c])]++] = c;
}

OwnedRange ShardPlan::ownedBy(size_t r, size_t tensor, size_t tensorSize) const {
  const TensorEntry &entry = tensors_[tensor];
  const std::vector<size_t> &bounds = groups_[entry.group].bounds;
  size_t first = entry.groupOffset, last = entry.groupOffset + tensorSize;
  return {std::clamp(bounds[r], first, last) - first, std::clamp(bounds[r + 1], first, last) - first};
}

std::vector<size_t> ShardPlan::partsOf(size_t group, size_t begin, size_t end) const {
  const std::vector<size_t> &bounds = groups_[group].bounds;
  std::vector<size_t> parts(ranks_);
  for (size_t r = 0; r < ranks_; ++r) {
    size_t from = std::clamp(bounds[r], begin, end), to = std::clamp(bounds[r + 1], begin, end);
    parts[r] = to - from;
  }
  return parts;
}

} // namespace optrt::detail
