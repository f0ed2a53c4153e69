// A fixed set of persistent worker threads that runs one parallel-for at a
// time. Threads start with the pool and are joined when it is destroyed, so a
// step pays a wake-up, never a thread creation. Work is split statically:
// share s of T always gets tasks [s*n/T, (s+1)*n/T), and the calling thread
// runs share 0. A static split needs no atomics or work queue, and since
// every task writes only its own outputs, which thread runs it never changes
// a result.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

namespace optrt {

class ThreadPool {
public:
  /// numThreads (at least 1) counts the calling thread, so numThreads - 1
  /// threads are started here.
  explicit ThreadPool(unsigned numThreads);
  ~ThreadPool();
  ThreadPool(const ThreadPool &) = delete;
  ThreadPool &operator=(const ThreadPool &) = delete;

  unsigned numThreads() const { return static_cast<unsigned>(workers_.size()) + 1; }

  /// Calls task(i) once for every i in [0, numTasks) and returns when all
  /// calls have returned. task must not throw: most calls run on workers.
  template <typename Task> void parallelFor(size_t numTasks, Task &task) {
    run(
        numTasks, [](void *context, size_t i) { (*static_cast<Task *>(context))(i); }, &task);
  }

private:
  // Type-erased task: no std::function, so a step allocates nothing here.
  using TaskFn = void (*)(void *context, size_t task);

  void run(size_t numTasks, TaskFn fn, void *context);
  void runShare(unsigned share) const;
  void workerLoop(unsigned share);
  void stopAndJoin();

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wakeWorkers_;
  std::condition_variable jobDone_;
  // The current job. Written under mutex_ before generation_ is bumped, and
  // left alone until every worker has reported back, so workers may read it
  // without the lock.
  TaskFn jobFn_ = nullptr;
  void *jobContext_ = nullptr;
  size_t jobTasks_ = 0;
  uint64_t generation_ = 0;
  unsigned busyWorkers_ = 0;
  bool stopping_ = false;
};

} // namespace optrt
