#include "ThreadPool.h"

namespace charlm {

ThreadPool::ThreadPool(unsigned threads) {
  if (threads == 0)
    threads = 1;
  ranges_.resize(threads);
  for (unsigned i = 1; i < threads; ++i)
    workers_.emplace_back([this, i] { workerLoop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  for (std::thread &worker : workers_)
    worker.join();
}

void ThreadPool::workerLoop(unsigned index) {
  unsigned long seen = 0;
  for (;;) {
    std::pair<size_t, size_t> range;
    const std::function<void(size_t, size_t)> *body;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_)
        return;
      seen = generation_;
      range = ranges_[index];
      body = body_;
    }
    if (range.first < range.second)
      (*body)(range.first, range.second);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (--pending_ == 0)
        done_.notify_one();
    }
  }
}

void ThreadPool::parallelFor(size_t n, size_t grain, const std::function<void(size_t, size_t)> &body) {
  if (n == 0)
    return;
  if (grain == 0)
    grain = 1;
  unsigned threads = size();
  size_t units = (n + grain - 1) / grain;
  if (threads == 1 || units == 1) {
    body(0, n);
    return;
  }
  for (unsigned t = 0; t < threads; ++t) {
    size_t begin = std::min(n, units * t / threads * grain);
    size_t end = std::min(n, units * (t + 1) / threads * grain);
    ranges_[t] = {begin, end};
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    body_ = &body;
    pending_ = threads - 1;
    ++generation_;
  }
  wake_.notify_all();
  if (ranges_[0].first < ranges_[0].second)
    body(ranges_[0].first, ranges_[0].second);
  std::unique_lock<std::mutex> lock(mutex_);
  done_.wait(lock, [&] { return pending_ == 0; });
}

} // namespace charlm
