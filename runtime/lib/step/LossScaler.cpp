// torch's _amp_update_scale_ (aten/src/ATen/native/cuda/AmpKernels.cu and
// its CPU twin), on a float32 scale as torch keeps it.
#include "optrt/LossScaler.h"

#include "optrt/HyperRange.h"

#include <cmath>
#include <stdexcept>
#include <string>

namespace optrt {

DynamicLossScaler::DynamicLossScaler(LossScalerOptions options) : options_(options) {
  auto fail = [](const std::string &problem) {
    throw std::invalid_argument("optrt::DynamicLossScaler: " + problem);
  };
  float scale = static_cast<float>(options.initScale);
  if (!std::isfinite(options.initScale) || options.initScale <= 0 || !std::isfinite(scale) || scale <= 0)
    fail("initScale is " + HyperRange::format(options.initScale) + "; it must be a positive finite float32");
  if (!std::isfinite(options.growthFactor) || options.growthFactor <= 1)
    fail("growthFactor is " + HyperRange::format(options.growthFactor) + "; it must be finite and above 1");
  if (!(options.backoffFactor > 0 && options.backoffFactor < 1))
    fail("backoffFactor is " + HyperRange::format(options.backoffFactor) + "; it must lie in (0, 1)");
  if (options.growthInterval < 1)
    fail("growthInterval is " + std::to_string(options.growthInterval) + "; it must be at least 1");
  scale_ = scale;
}

StepOptions DynamicLossScaler::stepOptions(StepOptions base) const {
  base.lossScale = scale_;
  base.checkFinite = true;
  return base;
}

void DynamicLossScaler::update(bool foundNonFinite) {
  // torch multiplies the float scale by the factors as doubles converted to
  // float (its kernel takes them as float arguments).
  if (foundNonFinite) {
    scale_ *= static_cast<float>(options_.backoffFactor);
    growthTracker_ = 0;
    return;
  }
  int64_t successful = growthTracker_ + 1;
  if (successful == options_.growthInterval) {
    float grown = scale_ * static_cast<float>(options_.growthFactor);
    if (std::isfinite(grown))
      scale_ = grown;
    growthTracker_ = 0;
  } else {
    growthTracker_ = successful;
  }
}

} // namespace optrt
