// The checks of a step's gradient options (optrt/StepOptions.h) that the
// CPU and CUDA optimizers share: both refuse the same values with the same
// words, before anything changes.
#pragma once

#include <optional>

namespace optrt {
class RuleLayout;
}

namespace optrt::detail {

/// Throws std::invalid_argument, naming `caller`, for a loss scale, max norm
/// or clip value that is not finite and positive, and for options that change
/// the gradients (`scales`: a loss scale other than 1, fixed or dynamic) of
/// a rule built without the step hypers grad_scale and grad_clip.
void checkGradientOptions(double lossScale, bool scales, const std::optional<double> &maxGradNorm,
                          const std::optional<double> &clipValue, const optrt::RuleLayout &layout, const char *caller);

} // namespace optrt::detail
