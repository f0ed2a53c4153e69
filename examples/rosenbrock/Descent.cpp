#include "Descent.h"

#include "optrt/Optimizer.h"

#include <cmath>

namespace rosenbrock {

Trajectory descend(const std::string &label, std::shared_ptr<const optrt::RuleKernels> rule,
                   const std::map<std::string, double> &hypers, const Function &function,
                   std::array<double, 2> start, int steps) {
  // One tensor of two elements: the optimizer sees the same kind of tensor
  // as a model's, only tiny (and so kept in f32 whatever the layout).
  std::vector<float> point{static_cast<float>(start[0]), static_cast<float>(start[1])};
  std::vector<float> gradient(2);
  optrt::OptimizerOptions options;
  options.threads = 1;
  optrt::Optimizer optimizer(std::move(rule), options);
  optimizer.addGroup({point.data()}, {point.size()}, hypers);

  Trajectory trajectory{label, {}, {}};
  auto record = [&] {
    trajectory.points.push_back({point[0], point[1]});
    trajectory.values.push_back(function.value(point[0], point[1]));
  };
  record();
  for (int step = 0; step < steps; ++step) {
    auto g = function.gradient(point[0], point[1]);
    gradient = {static_cast<float>(g[0]), static_cast<float>(g[1])};
    optimizer.step({{gradient.data()}});
    record();
  }
  return trajectory;
}

namespace {

double distanceToMinimum(const Function &function, std::array<double, 2> point) {
  return std::hypot(point[0] - function.a, point[1] - function.a * function.a);
}

} // namespace

int firstWithin(const Trajectory &trajectory, const Function &function, double distance) {
  for (size_t i = 0; i < trajectory.points.size(); ++i)
    if (distanceToMinimum(function, trajectory.points[i]) <= distance)
      return static_cast<int>(i);
  return -1;
}

int settledWithin(const Trajectory &trajectory, const Function &function, double distance) {
  int settled = -1;
  for (size_t i = trajectory.points.size(); i-- > 0;) {
    if (distanceToMinimum(function, trajectory.points[i]) > distance)
      break;
    settled = static_cast<int>(i);
  }
  return settled;
}

} // namespace rosenbrock
