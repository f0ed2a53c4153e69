#include "optrt/Spelling.h"

#include <algorithm>

namespace optrt {

size_t editDistance(const std::string &a, const std::string &b) {
  // Optimal string alignment: Levenshtein plus the swap of two neighbours,
  // the commonest typo ('alpah'), as one edit.
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i)
    d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j)
    d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i)
    for (size_t j = 1; j <= b.size(); ++j) {
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1])});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  return d[a.size()][b.size()];
}

std::string didYouMean(const std::string &name, const std::vector<std::string> &candidates) {
  const std::string *best = nullptr;
  size_t bestDistance = std::min(std::max<size_t>(1, name.size() / 3) + 1, name.size());
  for (const std::string &candidate : candidates) {
    size_t distance = editDistance(name, candidate);
    if (distance < bestDistance) {
      bestDistance = distance;
      best = &candidate;
    }
  }
  return best ? "; did you mean '" + *best + "'?" : "";
}

} // namespace optrt
