#include "GradCheck.h"

#include <algorithm>
#include <cmath>

namespace charlm {

std::vector<TensorCheck> gradCheck(Model<double> &model, const std::vector<uint8_t> &contexts,
                                   const std::vector<uint8_t> &targets, const GradCheckOptions &options,
                                   const std::function<void(Model<double> &)> &tamper) {
  ThreadPool pool(1);
  size_t batch = targets.size();
  model.forward(contexts.data(), targets.data(), batch, pool);
  model.backward(pool);
  if (tamper)
    tamper(model);
  // Copy the analytic gradients: every forward() below leaves them alone,
  // but keep the check independent of that.
  std::vector<std::vector<double>> analytic;
  for (const auto &tensor : model.tensors())
    analytic.push_back(tensor.grad);

  std::vector<TensorCheck> results;
  for (size_t t = 0; t < model.tensors().size(); ++t) {
    auto &tensor = model.tensors()[t];
    TensorCheck check{tensor.name, tensor.value.size(), 0, 0, true};
    for (size_t i = 0; i < tensor.value.size(); ++i) {
      double saved = tensor.value[i];
      tensor.value[i] = saved + options.step;
      double plus = model.forward(contexts.data(), targets.data(), batch, pool);
      tensor.value[i] = saved - options.step;
      double minus = model.forward(contexts.data(), targets.data(), batch, pool);
      tensor.value[i] = saved;
      double numeric = (plus - minus) / (2 * options.step);
      double error = std::abs(analytic[t][i] - numeric);
      double relative = error / std::max({std::abs(analytic[t][i]), std::abs(numeric), options.floor});
      check.maxAbsError = std::max(check.maxAbsError, error);
      check.maxRelError = std::max(check.maxRelError, relative);
    }
    check.passed = check.maxRelError <= options.relTolerance;
    results.push_back(check);
  }
  return results;
}

} // namespace charlm
