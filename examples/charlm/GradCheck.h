// Checks the model's analytic gradients against central finite differences,
// in double precision, element by element for every parameter tensor.
#pragma once

#include "Model.h"

#include <functional>
#include <string>
#include <vector>

namespace charlm {

struct TensorCheck {
  std::string name;
  size_t elements;
  double maxAbsError;  // max |analytic - numeric|
  double maxRelError;  // max |analytic - numeric| / max(|analytic|, |numeric|, floor)
  bool passed;
};

struct GradCheckOptions {
  double step = 1e-5;          // central difference h
  double relTolerance = 1e-6;  // limit on the relative error per element
  double floor = 1e-7;         // magnitudes below this are compared absolutely
};

/// Runs forward+backward on the batch, then for every element x of every
/// tensor compares grad(x) with (L(x+h) - L(x-h)) / 2h. tamper, when given,
/// runs after backward() and may alter the analytic gradients: the tests use
/// it to show that a wrong gradient is caught.
std::vector<TensorCheck> gradCheck(Model<double> &model, const std::vector<uint8_t> &contexts,
                                   const std::vector<uint8_t> &targets, const GradCheckOptions &options = {},
                                   const std::function<void(Model<double> &)> &tamper = {});

} // namespace charlm
