// "Did you mean": the closest known name to a misspelt one, shared by the
// compiler's diagnostics, the runtime's errors and the trainers' command
// lines so that every tool suggests the same way.
#pragma once

#include <string>
#include <vector>

namespace optrt {

/// Edits between a and b: insertions, deletions, substitutions and swaps of
/// two neighbouring characters (optimal string alignment distance).
size_t editDistance(const std::string &a, const std::string &b);

/// "; did you mean 'x'?" for the candidate closest to `name` within a third
/// of its length (at least 1) that keeps some of it ('a' is no typo of 'm'),
/// or "" when none is that close. Ties go to the earlier candidate.
std::string didYouMean(const std::string &name, const std::vector<std::string> &candidates);

} // namespace optrt
