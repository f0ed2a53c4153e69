// A fork-join pool for the model's loops: parallelFor splits [0, n) into one
// contiguous part per thread (the caller runs the first), so that which
// thread computes an output row never changes what it computes. Every output
// element is written by exactly one task with a fixed summation order:
// results are bitwise identical for any thread count.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace charlm {

class ThreadPool {
public:
  explicit ThreadPool(unsigned threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool &) = delete;
  ThreadPool &operator=(const ThreadPool &) = delete;

  unsigned size() const { return static_cast<unsigned>(workers_.size()) + 1; }

  /// Calls body(begin, end) on disjoint ranges covering [0, n), each a
  /// multiple of grain long except the last; returns when all are done.
  void parallelFor(size_t n, size_t grain, const std::function<void(size_t, size_t)> &body);

private:
  void workerLoop(unsigned index);

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  const std::function<void(size_t, size_t)> *body_ = nullptr;
  std::vector<std::pair<size_t, size_t>> ranges_;
  unsigned long generation_ = 0;
  unsigned pending_ = 0;
  bool stop_ = false;
};

} // namespace charlm
