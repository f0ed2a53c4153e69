#include "GoldenCase.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <stdexcept>

namespace optdsl {

GoldenCase GoldenCase::load(const std::string &path) {
  std::ifstream in(path);
  if (!in)
    throw std::runtime_error("cannot open golden case '" + path + "'");
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception &e) {
    throw std::runtime_error(path + ": not valid JSON: " + e.what());
  }
  auto field = [&](const char *name) -> const nlohmann::json & {
    if (!json.contains(name))
      throw std::runtime_error(path + ": missing field '" + name + "'");
    return json[name];
  };
  GoldenCase golden;
  try {
    if (field("format") != "optdsl-golden/1")
      throw std::runtime_error(path + ": unsupported format " + field("format").dump());
    golden.name = field("name");
    golden.rule = field("rule");
    golden.source = json.value("source", "");
    for (const auto &[name, value] : field("hypers").items())
      golden.hypers.emplace_back(name, value.get<double>());
    golden.sizes = field("sizes").get<std::vector<size_t>>();
    golden.steps = field("steps");
    golden.init = field("init").get<std::vector<std::vector<double>>>();
    golden.grads = field("grads").get<Trajectory>();
    golden.expect = field("expect").get<Trajectory>();
    golden.float32ReferenceError = field("float32_reference_error");
    if (json.contains("max_grad_norm")) {
      golden.maxGradNorm = json["max_grad_norm"].get<double>();
      if (!(*golden.maxGradNorm > 0) || !std::isfinite(*golden.maxGradNorm))
        throw std::runtime_error(path + ": max_grad_norm must be finite and positive");
    }
    if (json.contains("shapes"))
      golden.shapes = json["shapes"].get<std::vector<std::vector<size_t>>>();
    if (json.contains("inputs"))
      for (const auto &[name, steps] : json["inputs"].items()) {
        auto &perStep = golden.inputs.emplace_back(name, decltype(golden.inputs)::value_type::second_type{}).second;
        for (const nlohmann::json &step : steps) {
          // A step's entry: null, or per tensor values or null. Our runtime
          // gives an input to a whole group or to none of it.
          bool anyNull = step.is_null(), anyGiven = false;
          if (!step.is_null())
            for (const nlohmann::json &tensor : step)
              (tensor.is_null() ? anyNull : anyGiven) = true;
          if (anyNull && anyGiven)
            throw std::runtime_error(path + ": input '" + name + "' step " + std::to_string(perStep.size() + 1) +
                                     " gives values to some tensors and not others");
          if (anyGiven)
            perStep.emplace_back(step.get<std::vector<std::vector<double>>>());
          else
            perStep.emplace_back(std::nullopt);
        }
      }
  } catch (const nlohmann::json::exception &e) {
    throw std::runtime_error(path + ": a field has the wrong type: " + e.what());
  }
  auto checkShape = [&](const Trajectory &trajectory, const char *name, size_t steps) {
    if (trajectory.size() != steps)
      throw std::runtime_error(path + ": '" + name + "' has " + std::to_string(trajectory.size()) +
                               " steps, expected " + std::to_string(steps));
    for (const auto &tensors : trajectory) {
      if (tensors.size() != golden.sizes.size())
        throw std::runtime_error(path + ": '" + name + "' has the wrong number of tensors");
      for (size_t k = 0; k < tensors.size(); ++k)
        if (tensors[k].size() != golden.sizes[k])
          throw std::runtime_error(path + ": '" + name + "' tensor " + std::to_string(k) +
                                   " has the wrong size");
    }
  };
  checkShape(golden.grads, "grads", golden.steps);
  checkShape(golden.expect, "expect", golden.steps);
  checkShape({golden.init}, "init", 1);
  for (const auto &[name, perStep] : golden.inputs) {
    if (perStep.size() != golden.steps)
      throw std::runtime_error(path + ": input '" + name + "' has " + std::to_string(perStep.size()) +
                               " steps, expected " + std::to_string(golden.steps));
    for (const auto &values : perStep)
      if (values)
        checkShape({*values}, ("input '" + name + "'").c_str(), 1);
  }
  if (!golden.shapes.empty()) {
    if (golden.shapes.size() != golden.sizes.size())
      throw std::runtime_error(path + ": 'shapes' has " + std::to_string(golden.shapes.size()) + " tensors, 'sizes' " +
                               std::to_string(golden.sizes.size()));
    for (size_t k = 0; k < golden.shapes.size(); ++k) {
      size_t product = 1;
      for (size_t dim : golden.shapes[k])
        product *= dim;
      if (product != golden.sizes[k])
        throw std::runtime_error(path + ": the shape of tensor " + std::to_string(k) + " has " +
                                 std::to_string(product) + " elements, its size is " + std::to_string(golden.sizes[k]));
    }
  }
  return golden;
}

double trajectoryError(const GoldenCase &golden, const Trajectory &ours) {
  double worst = 0;
  for (size_t t = 0; t < golden.steps; ++t) {
    for (size_t k = 0; k < golden.sizes.size(); ++k) {
      double deviation = 0, movement = 0;
      for (size_t i = 0; i < golden.sizes[k]; ++i) {
        double d = std::fabs(ours[t][k][i] - golden.expect[t][k][i]);
        // A NaN must fail the case, not vanish in a max().
        if (std::isnan(d))
          return NAN;
        deviation = std::max(deviation, d);
        movement = std::max(movement, std::fabs(golden.expect[t][k][i] - golden.init[k][i]));
      }
      if (deviation > 0)
        worst = std::max(worst, movement > 0 ? deviation / movement : INFINITY);
    }
  }
  return worst;
}

double errorLimit(const GoldenCase &golden, bool float64) {
  return float64 ? 1e-9 : std::max(4 * golden.float32ReferenceError, 1e-6);
}

} // namespace optdsl
