// The schedules of optrt/Schedule.h. Each formula is written as its peer
// computes it (the same operations in the same order), so values agree to
// the last bits, not just to a tolerance.
#include "optrt/Schedule.h"

#include "optrt/HyperRange.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <stdexcept>

namespace optrt {

namespace {

void requireFinite(const char *schedule, const char *what, double value) {
  if (!std::isfinite(value))
    throw std::invalid_argument(std::string("optrt::") + schedule + ": " + what + " is " +
                                HyperRange::format(value) + "; it must be finite");
}

void requireSteps(const char *schedule, const char *what, int64_t steps, int64_t least = 0) {
  if (steps < least)
    throw std::invalid_argument(std::string("optrt::") + schedule + ": " + what + " is " + std::to_string(steps) +
                                "; it must be at least " + std::to_string(least));
}

std::string number(double value) { return HyperRange::format(value); }

/// optax.polynomial_schedule with power 1 (linear_schedule).
double linear(double init, double end, int64_t steps, int64_t count) {
  if (steps <= 0)
    return init;
  double done = static_cast<double>(std::clamp<int64_t>(count, 0, steps));
  double fraction = 1.0 - done / static_cast<double>(steps);
  return (init - end) * fraction + end;
}

/// optax.cosine_decay_schedule.
double cosine(double init, int64_t decaySteps, double alpha, double exponent, int64_t count) {
  double done = static_cast<double>(std::min(count, decaySteps));
  double decay = 0.5 * (1.0 + std::cos(std::numbers::pi * done / static_cast<double>(decaySteps)));
  return init * ((1.0 - alpha) * std::pow(decay, exponent) + alpha);
}

} // namespace

Schedule constant(double value) {
  requireFinite("constant", "value", value);
  return {"constant(" + number(value) + ")", [value](int64_t) { return value; }};
}

Schedule linearDecay(double init, double end, int64_t steps) {
  requireFinite("linearDecay", "init", init);
  requireFinite("linearDecay", "end", end);
  requireSteps("linearDecay", "steps", steps, 1);
  return {"linearDecay(init=" + number(init) + ", end=" + number(end) + ", steps=" + std::to_string(steps) + ")",
          [=](int64_t count) { return linear(init, end, steps, count); }};
}

Schedule linearWarmup(double peak, int64_t warmupSteps, double init) {
  requireFinite("linearWarmup", "peak", peak);
  requireFinite("linearWarmup", "init", init);
  requireSteps("linearWarmup", "warmupSteps", warmupSteps);
  return {"linearWarmup(peak=" + number(peak) + ", warmupSteps=" + std::to_string(warmupSteps) +
              ", init=" + number(init) + ")",
          [=](int64_t count) { return linear(init, peak, warmupSteps, count); }};
}

Schedule cosineDecay(double init, int64_t decaySteps, double alpha, double exponent) {
  requireFinite("cosineDecay", "init", init);
  requireFinite("cosineDecay", "alpha", alpha);
  requireFinite("cosineDecay", "exponent", exponent);
  requireSteps("cosineDecay", "decaySteps", decaySteps, 1);
  return {"cosineDecay(init=" + number(init) + ", decaySteps=" + std::to_string(decaySteps) +
              ", alpha=" + number(alpha) + ")",
          [=](int64_t count) { return cosine(init, decaySteps, alpha, exponent, count); }};
}

Schedule warmupCosine(double init, double peak, int64_t warmupSteps, int64_t decaySteps, double end) {
  requireFinite("warmupCosine", "init", init);
  requireFinite("warmupCosine", "peak", peak);
  requireFinite("warmupCosine", "end", end);
  requireSteps("warmupCosine", "warmupSteps", warmupSteps);
  requireSteps("warmupCosine", "decaySteps - warmupSteps", decaySteps - warmupSteps, 1);
  // optax joins linear_schedule(init, peak, warmup) and, from the boundary,
  // cosine_decay_schedule(peak, decay - warmup, alpha = end / peak).
  double alpha = peak == 0.0 ? 0.0 : end / peak;
  return {"warmupCosine(init=" + number(init) + ", peak=" + number(peak) + ", warmupSteps=" +
              std::to_string(warmupSteps) + ", decaySteps=" + std::to_string(decaySteps) + ", end=" + number(end) +
              ")",
          [=](int64_t count) {
            if (count < warmupSteps)
              return linear(init, peak, warmupSteps, count);
            return cosine(peak, decaySteps - warmupSteps, alpha, 1.0, count - warmupSteps);
          }};
}

Schedule inverseSqrt(double peak, int64_t warmupSteps, int64_t timescale) {
  requireFinite("inverseSqrt", "peak", peak);
  requireSteps("inverseSqrt", "warmupSteps", warmupSteps);
  requireSteps("inverseSqrt", "timescale", timescale);
  if (timescale == 0)
    timescale = warmupSteps > 0 ? warmupSteps : 10000;
  return {"inverseSqrt(peak=" + number(peak) + ", warmupSteps=" + std::to_string(warmupSteps) +
              ", timescale=" + std::to_string(timescale) + ")",
          [=](int64_t count) {
            double factor;
            if (count < warmupSteps) {
              factor = static_cast<double>(count) / static_cast<double>(std::max<int64_t>(1, warmupSteps));
            } else {
              double shift = static_cast<double>(timescale - warmupSteps);
              factor = 1.0 / std::sqrt((static_cast<double>(count) + shift) / static_cast<double>(timescale));
            }
            return peak * factor;
          }};
}

Schedule warmupStableDecay(double peak, int64_t warmupSteps, int64_t stableSteps, int64_t decaySteps,
                           double minRatio, DecayShape decay) {
  requireFinite("warmupStableDecay", "peak", peak);
  requireFinite("warmupStableDecay", "minRatio", minRatio);
  requireSteps("warmupStableDecay", "warmupSteps", warmupSteps);
  requireSteps("warmupStableDecay", "stableSteps", stableSteps);
  requireSteps("warmupStableDecay", "decaySteps", decaySteps);
  const char *shape = decay == DecayShape::Linear ? "linear" : decay == DecayShape::Cosine ? "cosine" : "1-sqrt";
  return {"warmupStableDecay(peak=" + number(peak) + ", warmupSteps=" + std::to_string(warmupSteps) +
              ", stableSteps=" + std::to_string(stableSteps) + ", decaySteps=" + std::to_string(decaySteps) +
              ", minRatio=" + number(minRatio) + ", decay=" + shape + ")",
          [=](int64_t count) {
            double factor;
            auto fromMin = [&](double f) { return std::max(0.0, f * (1.0 - minRatio) + minRatio); };
            if (count < warmupSteps) {
              factor = fromMin(static_cast<double>(count) / static_cast<double>(std::max<int64_t>(1, warmupSteps)));
            } else if (count < warmupSteps + stableSteps) {
              factor = 1.0;
            } else if (count < warmupSteps + stableSteps + decaySteps) {
              double progress = static_cast<double>(count - warmupSteps - stableSteps) /
                                static_cast<double>(std::max<int64_t>(1, decaySteps));
              double f = decay == DecayShape::Linear   ? 1.0 - progress
                         : decay == DecayShape::Cosine ? 0.5 * (1.0 + std::cos(std::numbers::pi * progress))
                                                       : 1.0 - std::sqrt(progress);
              factor = fromMin(f);
            } else {
              factor = minRatio;
            }
            return peak * factor;
          }};
}

} // namespace optrt
