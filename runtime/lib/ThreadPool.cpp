#include "ThreadPool.h"

#include <stdexcept>

namespace optrt {

ThreadPool::ThreadPool(unsigned numThreads) {
  if (numThreads == 0)
    throw std::invalid_argument("ThreadPool: numThreads must be at least 1");
  workers_.reserve(numThreads - 1);
  try {
    for (unsigned share = 1; share < numThreads; ++share)
      workers_.emplace_back([this, share] { workerLoop(share); });
  } catch (...) {
    // A joinable std::thread destroyed unjoined terminates the program, so
    // the threads already started must be stopped before the error leaves.
    stopAndJoin();
    throw;
  }
}

ThreadPool::~ThreadPool() { stopAndJoin(); }

void ThreadPool::stopAndJoin() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wakeWorkers_.notify_all();
  for (std::thread &worker : workers_)
    worker.join();
  workers_.clear();
}

void ThreadPool::run(size_t numTasks, TaskFn fn, void *context) {
  {
    std::lock_guard lock(mutex_);
    jobFn_ = fn;
    jobContext_ = context;
    jobTasks_ = numTasks;
    busyWorkers_ = static_cast<unsigned>(workers_.size());
    ++generation_;
  }
  if (!workers_.empty())
    wakeWorkers_.notify_all();
  runShare(0);
  std::unique_lock lock(mutex_);
  jobDone_.wait(lock, [this] { return busyWorkers_ == 0; });
}

void ThreadPool::runShare(unsigned share) const {
  size_t numShares = workers_.size() + 1;
  size_t begin = share * jobTasks_ / numShares;
  size_t end = (share + 1) * jobTasks_ / numShares;
  for (size_t task = begin; task < end; ++task)
    jobFn_(jobContext_, task);
}

void ThreadPool::workerLoop(unsigned share) {
  uint64_t seenGeneration = 0;
  std::unique_lock lock(mutex_);
  for (;;) {
    wakeWorkers_.wait(lock, [&] { return stopping_ || generation_ != seenGeneration; });
    if (stopping_)
      return;
    seenGeneration = generation_;
    lock.unlock();
    runShare(share);
    lock.lock();
    if (--busyWorkers_ == 0)
      jobDone_.notify_one();
  }
}

} // namespace optrt
