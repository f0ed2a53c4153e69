// The AdEMAMix paper's toy (its Figure 1): an optimizer from the rule
// library descends the Rosenbrock function f(x, y) = (a - x)^2 + b (y - x^2)^2,
// whose minimum f = 0 at (a, a^2) lies at the end of a long, curved, flat
// valley: momentum that remembers old gradients moves along it faster.
#pragma once

#include "optrt/RuleKernels.h"

#include <array>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace rosenbrock {

struct Function {
  double a = 1, b = 100;
  double value(double x, double y) const { return (a - x) * (a - x) + b * (y - x * x) * (y - x * x); }
  std::array<double, 2> gradient(double x, double y) const {
    return {-2 * (a - x) - 4 * b * x * (y - x * x), 2 * b * (y - x * x)};
  }
};

struct Trajectory {
  std::string label;
  std::vector<std::array<double, 2>> points; ///< the start, then the point after each step
  std::vector<double> values;                ///< f at each point
};

/// Runs `steps` steps of `rule` (its hypers set to `hypers`, the rest at
/// their defaults) through optrt::Optimizer on one f32 tensor (x, y), from
/// `start`. Throws what the optimizer throws for a bad hyper.
Trajectory descend(const std::string &label, std::shared_ptr<const optrt::RuleKernels> rule,
                   const std::map<std::string, double> &hypers, const Function &function,
                   std::array<double, 2> start, int steps);

/// The first step from which the distance to the minimum (a, a^2) stays at
/// most `distance` to the end, or -1: when the descent has settled there,
/// not when it first passes by (momentum can carry it past the minimum).
int settledWithin(const Trajectory &trajectory, const Function &function, double distance);

/// The first step at most `distance` from the minimum, or -1.
int firstWithin(const Trajectory &trajectory, const Function &function, double distance);

} // namespace rosenbrock
