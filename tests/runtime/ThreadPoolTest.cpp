// The step's threads: every thread of the pool takes a share of the chunks,
// the threads persist from one step to the next (no thread per step), and
// they are joined when the optimizer is destroyed.
#include "TestData.h"
#include "TestRules.h"

#include <chrono>
#include <filesystem>
#include <set>
#include <thread>

namespace optrt::test {
namespace {

std::set<std::thread::id> threadsOf(const std::vector<KernelCall> &calls) {
  std::set<std::thread::id> ids;
  for (const KernelCall &call : calls)
    ids.insert(call.thread);
  return ids;
}

// Linux: one entry per thread of this process.
size_t processThreadCount() {
  size_t count = 0;
  for ([[maybe_unused]] const auto &entry : std::filesystem::directory_iterator("/proc/self/task"))
    ++count;
  return count;
}

TEST(ThreadPool, EveryThreadTakesAShare) {
  Shape shape = {{1000}};
  for (unsigned threads : {1u, 2u, 3u}) {
    SCOPED_TRACE("threads " + std::to_string(threads));
    // Ten chunks: the static split gives each of up to three threads some.
    Training run(recorderKernels(), {threads, 100}, randomTensors(shape, 1));
    EXPECT_EQ(run.optimizer.numThreads(), threads);
    takeRecordedCalls();
    run.step(randomTensors(shape, 2));
    std::set<std::thread::id> ids = threadsOf(takeRecordedCalls());
    EXPECT_EQ(ids.size(), threads);
    // The calling thread works too rather than waiting idle.
    EXPECT_EQ(ids.count(std::this_thread::get_id()), 1u);
  }
}

TEST(ThreadPool, MoreThreadsThanChunksIsFine) {
  Shape shape = {{1}};
  Training run(recorderKernels(), {8, 65536}, randomTensors(shape, 1));
  takeRecordedCalls();
  run.step(randomTensors(shape, 2));
  EXPECT_EQ(takeRecordedCalls().size(), 1u);
  EXPECT_EQ(run.optimizer.scalarState("seen", 0, 0), 1.0);
}

TEST(ThreadPool, ThreadsPersistAcrossStepsAndAreJoined) {
  size_t before = processThreadCount();
  Shape shape = {{1000}};
  std::set<std::thread::id> seen;
  {
    Training run(recorderKernels(), {4, 100}, randomTensors(shape, 1));
    EXPECT_EQ(processThreadCount(), before + 3);
    takeRecordedCalls();
    for (int s = 0; s < 5; ++s) {
      run.step(randomTensors(shape, 2));
      EXPECT_EQ(processThreadCount(), before + 3);
      for (std::thread::id id : threadsOf(takeRecordedCalls()))
        seen.insert(id);
    }
  }
  // The same four threads served all five steps.
  EXPECT_EQ(seen.size(), 4u);
  // join() returns when a thread has finished, a moment before the kernel
  // drops its /proc entry; so poll briefly. Threads still running fail this.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (processThreadCount() != before && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_EQ(processThreadCount(), before);
}

TEST(ThreadPool, DefaultIsHardwareConcurrency) {
  Optimizer optimizer(sgdMomentumKernels());
  EXPECT_EQ(optimizer.numThreads(), std::max(1u, std::thread::hardware_concurrency()));
}

} // namespace
} // namespace optrt::test
