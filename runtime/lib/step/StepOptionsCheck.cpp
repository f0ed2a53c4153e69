#include "StepOptionsCheck.h"

#include "../RuleLayout.h"
#include "optrt/HyperRange.h"

#include <cmath>
#include <stdexcept>
#include <string>

namespace optrt::detail {

void checkGradientOptions(double lossScale, bool scales, const std::optional<double> &maxGradNorm,
                          const std::optional<double> &clipValue, const optrt::RuleLayout &layout, const char *caller) {
  auto positive = [&](const char *name, double value) {
    if (!std::isfinite(value) || value <= 0)
      throw std::invalid_argument(std::string(caller) + ": " + name + " is " + HyperRange::format(value) +
                                  "; it must be finite and positive");
  };
  positive("lossScale", lossScale);
  if (maxGradNorm)
    positive("maxGradNorm", *maxGradNorm);
  if (clipValue)
    positive("clipValue", *clipValue);
  bool changesGradients = scales || maxGradNorm || clipValue;
  if (changesGradients && (layout.stepHyper(kGradScaleHyper) < 0 || layout.stepHyper(kGradClipHyper) < 0))
    throw std::invalid_argument(std::string(caller) + ": rule '" + layout.rule().name +
                                "' has no step hypers (grad_scale, grad_clip), so its kernels cannot unscale "
                                "or clip gradients; rebuild it with this version of optc");
}

} // namespace optrt::detail
