// Adds the wall time of a scope to a counter: how a sharded step reports the
// seconds it spent in collectives (StepResult::communicationSeconds).
#pragma once

#include <chrono>

namespace optrt::detail {

class CommTimer {
public:
  explicit CommTimer(double &seconds) : seconds_(seconds), start_(std::chrono::steady_clock::now()) {}
  ~CommTimer() { seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count(); }
  CommTimer(const CommTimer &) = delete;
  CommTimer &operator=(const CommTimer &) = delete;

private:
  double &seconds_;
  std::chrono::steady_clock::time_point start_;
};

} // namespace optrt::detail
