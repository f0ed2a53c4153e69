#include "Report.h"

#include "Format.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>

namespace charlm {
namespace {

/// 1234567 -> "1.23M"
std::string characters(double count) {
  return count >= 1e6 ? format("%.2fM", count / 1e6) : format("%.0fk", count / 1e3);
}

} // namespace

void printResultTable(const std::vector<RunResult> &results, std::ostream &out) {
  // The rule column is as wide as the longest name (a user's rule may be long).
  int width = 12;
  for (const RunResult &result : results)
    width = std::max(width, static_cast<int>(result.label.size()));
  out << format("%-*s %9s %9s   %-35s %10s %9s %8s\n", width, "run", "val loss", "bits/", "bytes per parameter",
                "optimizer", "optimizer", "train")
      << format("%-*s %9s %9s   %6s %6s %6s %6s %7s %10s %9s %8s\n", width, "", "(nats)", "char", "param", "grad",
                "master", "state", "total", "ms/step", "share", "time s");
  for (const RunResult &result : results) {
    double stepSeconds = result.modelSeconds + result.optimizerSeconds;
    const optrt::MemoryReport &m = result.memory;
    out << format("%-*s %9.4f %9.4f   %6.2f %6.2f %6.2f %6.2f %7.2f %10.3f %8.1f%% %8.1f\n", width,
                  result.label.c_str(), result.finalValLoss, result.finalValLoss / std::log(2.0), m.param, m.grad,
                  m.master, m.state, m.total(), 1e3 * result.optimizerSeconds / result.steps,
                  100 * result.optimizerSeconds / stepSeconds, stepSeconds);
  }
}

std::vector<Match> tokensToMatch(const std::vector<RunResult> &results) {
  std::vector<Match> matches;
  for (const RunResult &reacher : results)
    for (const RunResult &target : results) {
      if (reacher.rule == target.rule || reacher.layout != target.layout || target.curve.empty())
        continue;
      Match match{&reacher, &target, target.curve.back().valLoss, std::nullopt};
      const auto &curve = reacher.curve;
      for (size_t i = 1; i < curve.size() && !match.reachedAtStep; ++i) {
        if (curve[i].valLoss > match.targetLoss)
          continue;
        const CurvePoint &before = curve[i - 1], &at = curve[i];
        double fraction = before.valLoss > at.valLoss ? (before.valLoss - match.targetLoss) /
                                                            (before.valLoss - at.valLoss)
                                                      : 1.0;
        match.reachedAtStep = before.step + std::clamp(fraction, 0.0, 1.0) * (at.step - before.step);
      }
      matches.push_back(match);
    }
  return matches;
}

void printTokensToMatch(const std::vector<Match> &matches, int batch, std::ostream &out) {
  for (const Match &match : matches) {
    double targetCharacters = static_cast<double>(match.target->steps) * batch;
    out << format("  %-*s ", 22, match.reacher->label.c_str());
    if (match.reachedAtStep)
      out << format("reaches %s's final %.4f after %s characters (step %.0f): %.0f%% of the %s it needed\n",
                    match.target->label.c_str(), match.targetLoss, characters(*match.reachedAtStep * batch).c_str(),
                    *match.reachedAtStep, 100 * *match.reachedAtStep * batch / targetCharacters,
                    characters(targetCharacters).c_str());
    else
      out << format("never reaches %s's final %.4f in its %s characters (its last: %.4f)\n",
                    match.target->label.c_str(), match.targetLoss,
                    characters(static_cast<double>(match.reacher->steps) * batch).c_str(),
                    match.reacher->curve.back().valLoss);
  }
}

} // namespace charlm
