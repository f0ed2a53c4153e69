// The toy's pictures: the trajectories over the function's landscape, and
// the distance to the minimum against the step.
#pragma once

#include "Descent.h"

#include <string>
#include <vector>

namespace rosenbrock {

/// Writes `stem.dat` and draws `stem.svg` and `stem.png` with gnuplot.
/// Throws std::runtime_error naming the problem.
void drawDescents(const std::vector<Trajectory> &trajectories, const Function &function, const std::string &stem);

} // namespace rosenbrock
