// Hyper schedules as pure functions of the step (docs/training-step.md),
// attached to a hyper of a group with Optimizer::schedule and applied before
// every step. A schedule takes `count`, the number of steps the group has
// completed (0 before its first step), as optax's schedules and torch's
// LambdaLR do, and returns the hyper's value for the next step. Names and
// formulas follow optax (constant_schedule, linear_schedule,
// cosine_decay_schedule, warmup_cosine_decay_schedule) and Hugging Face
// transformers' LambdaLR schedules (inverse square root, warmup-stable-decay);
// tests/runtime/ScheduleTest.cpp checks them against the peers' own values.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

namespace optrt {

/// A hyper's value as a function of the step (see the file comment).
class Schedule {
public:
  /// `value(count)` for count completed steps; `description` says what it is.
  Schedule(std::string description, std::function<double(int64_t count)> value)
      : description_(std::move(description)), value_(std::move(value)) {}
  /// The value for the step after `count` completed ones (count >= 0).
  double operator()(int64_t count) const { return value_(count); }
  /// What it is, with its parameters: "warmupCosine(peak=0.001, ...)".
  const std::string &description() const { return description_; }

private:
  std::string description_;
  std::function<double(int64_t)> value_;
};

/// Every factory throws std::invalid_argument for a non-finite value, a
/// negative step count, or a decay shorter than its warm-up.

/// optax.constant_schedule(value).
Schedule constant(double value);
/// optax.linear_schedule(init, end, steps): from init to end over `steps`
/// steps, then end. torch's LinearLR is the same with factors of a base.
Schedule linearDecay(double init, double end, int64_t steps);
/// Linear warm-up from `init` to `peak` over warmupSteps, then `peak`
/// (optax.linear_schedule(init, peak, warmupSteps)).
Schedule linearWarmup(double peak, int64_t warmupSteps, double init = 0.0);
/// optax.cosine_decay_schedule(init, decaySteps, alpha, exponent): from init
/// down to alpha * init (the floor) along a half cosine, then the floor.
Schedule cosineDecay(double init, int64_t decaySteps, double alpha = 0.0, double exponent = 1.0);
/// optax.warmup_cosine_decay_schedule(init, peak, warmupSteps, decaySteps,
/// end): linear from init to peak over warmupSteps, then a half cosine from
/// peak to end until decaySteps (which counts the warm-up), then end.
Schedule warmupCosine(double init, double peak, int64_t warmupSteps, int64_t decaySteps, double end = 0.0);
/// transformers' get_inverse_sqrt_schedule(num_warmup_steps, timescale) times
/// `peak`: linear warm-up from 0, then peak / sqrt((count + timescale -
/// warmupSteps) / timescale). timescale 0 means warmupSteps (or 10000 when
/// that is 0), as transformers.
Schedule inverseSqrt(double peak, int64_t warmupSteps, int64_t timescale = 0);
/// How warmupStableDecay's decay falls.
enum class DecayShape { Linear, Cosine, OneMinusSqrt };
/// Warmup-stable-decay (transformers' get_wsd_schedule with linear warm-up)
/// times `peak`: linear warm-up from minRatio * peak, peak for stableSteps,
/// decay to minRatio * peak over decaySteps, then minRatio * peak.
Schedule warmupStableDecay(double peak, int64_t warmupSteps, int64_t stableSteps, int64_t decaySteps,
                           double minRatio = 0.0, DecayShape decay = DecayShape::Cosine);

} // namespace optrt
