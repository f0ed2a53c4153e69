// The learning-rate schedule: linear warm-up from 0 to the peak, then a
// cosine decay to minFraction * peak at the last step (as in GPT-style
// training). Applied by the trainer through Optimizer::setHyper("lr", ...)
// before every step.
#pragma once

#include <algorithm>
#include <cmath>

namespace charlm {

struct Schedule {
  double peak = 1e-3;
  int warmupSteps = 0;
  int totalSteps = 1;
  double minFraction = 0.1;

  /// The rate for step 1..totalSteps.
  double at(int step) const {
    if (step <= warmupSteps)
      return peak * step / warmupSteps;
    int decaySteps = std::max(1, totalSteps - warmupSteps);
    double progress = std::min(1.0, double(step - warmupSteps) / decaySteps);
    double cosine = 0.5 * (1 + std::cos(3.14159265358979323846 * progress));
    return peak * (minFraction + (1 - minFraction) * cosine);
  }
};

} // namespace charlm
