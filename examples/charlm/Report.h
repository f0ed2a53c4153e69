// What charlm prints after training: the table of results (losses, memory
// per parameter by part, speed) and the "tokens to match" comparison.
#pragma once

#include "Trainer.h"

#include <optional>
#include <ostream>
#include <vector>

namespace charlm {

/// One row per run: validation loss, bytes per parameter of param, grad,
/// master and state (the runtime's memory report), optimizer time per step
/// and its share of a step, training time.
void printResultTable(const std::vector<RunResult> &results, std::ostream &out);

/// The AdEMAMix paper's measure: how many training characters `reacher`
/// needs to reach `target`'s validation loss at the end of its run. Both
/// curves are measured on the same validation characters; between two
/// points the curve is taken as linear in the step.
struct Match {
  const RunResult *reacher, *target;
  double targetLoss;                    ///< target's last curve point
  std::optional<double> reachedAtStep;  ///< empty: reacher never got there
};

/// Every ordered pair of runs of different rules in the same layout.
std::vector<Match> tokensToMatch(const std::vector<RunResult> &results);

/// One line per match, in characters (the model's tokens) and as a share of
/// the target's.
void printTokensToMatch(const std::vector<Match> &matches, int batch, std::ostream &out);

} // namespace charlm
