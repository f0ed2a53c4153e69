// A golden trajectory (format optdsl-golden/1, see tests/golden/README.md)
// produced by a real peer implementation, and the error criterion that
// judges a run of ours against it.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace optdsl {

/// trajectory[t][k][i]: element i of tensor k after step t+1.
using Trajectory = std::vector<std::vector<std::vector<double>>>;

struct GoldenCase {
  std::string name;
  std::string rule;
  std::string source;
  std::vector<std::pair<std::string, double>> hypers;
  std::vector<size_t> sizes;
  size_t steps = 0;
  std::vector<std::vector<double>> init;
  Trajectory grads;
  Trajectory expect;
  double float32ReferenceError = 0;
  /// `max_grad_norm` (optional): the peer clipped all gradients by their
  /// global L2 norm (torch.nn.utils.clip_grad_norm_) before each step.
  std::optional<double> maxGradNorm;
  /// `shapes` (optional): per tensor its dimensions, row-major, their
  /// product its size; empty when the case has none (every tensor 1-D).
  std::vector<std::vector<size_t>> shapes;
  /// `inputs` (optional): per input name, per step, the values per tensor,
  /// or nullopt when the trainer gives that input no value at that step.
  std::vector<std::pair<std::string, std::vector<std::optional<std::vector<std::vector<double>>>>>> inputs;

  /// Reads and validates a case; throws std::runtime_error naming the file
  /// and the field that is missing or inconsistent.
  static GoldenCase load(const std::string &path);
};

/// max over t, k of max_i |ours - expect| / max_i |expect - init|.
double trajectoryError(const GoldenCase &golden, const Trajectory &ours);

/// The pass limit: 1e-9 for float64 evaluation, else max(4 × peer's float32 error, 1e-6).
double errorLimit(const GoldenCase &golden, bool float64);

} // namespace optdsl
