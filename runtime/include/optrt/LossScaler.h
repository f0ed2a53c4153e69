// Dynamic loss scaling with torch.amp.GradScaler's semantics and defaults
// (init 2^16, growth 2.0 after 2000 consecutive clean steps, backoff 0.5 on a
// step with a non-finite gradient). The scale is kept in float32, as torch
// keeps it, so the sequence of scales is torch's bit for bit.
//
//   optrt::DynamicLossScaler scaler;
//   loss * scaler.scale() -> backward -> grads
//   optrt::StepResult r = optimizer.step(grads, scaler.stepOptions());
//   scaler.update(r);
#pragma once

#include "optrt/StepOptions.h"

#include <cstdint>

namespace optrt {

/// DynamicLossScaler's settings, torch.amp.GradScaler's defaults.
struct LossScalerOptions {
  double initScale = 65536.0; ///< the first scale
  double growthFactor = 2.0; ///< the scale is multiplied by it after growthInterval clean steps
  double backoffFactor = 0.5; ///< the scale is multiplied by it after a skipped step
  int64_t growthInterval = 2000; ///< clean steps between growths
};

/// Loss scaling with a skip on overflow, as torch.amp.GradScaler (see the file comment).
class DynamicLossScaler {
public:
  /// Throws std::invalid_argument for a scale that is not finite and
  /// positive, growthFactor <= 1, backoffFactor outside (0, 1), or an
  /// interval < 1.
  explicit DynamicLossScaler(LossScalerOptions options = {});

  /// The factor to multiply the loss by before the backward pass.
  float scale() const { return scale_; }
  /// Consecutive clean steps since the last change of the scale.
  int64_t growthTracker() const { return growthTracker_; }
  /// `base` with this scale and the non-finite check (a skipped step must
  /// never reach the params).
  StepOptions stepOptions(StepOptions base = {}) const;
  /// After a step: back off when it skipped, else count it and grow the
  /// scale after growthInterval clean steps (unless growing overflows).
  void update(const StepResult &result) { update(result.skipped); }
  /// After a step: `foundNonFinite` when it was skipped.
  void update(bool foundNonFinite);

private:
  LossScalerOptions options_;
  float scale_;
  int64_t growthTracker_ = 0;
};

} // namespace optrt
