// Ranks as threads of one process: an optrt::Communicator of host memory
// whose collectives go through shared pointers and a barrier. It lets a
// test run several ranks of a sharded optimizer without mpirun, in
// particular several sharded CudaOptimizers on one GPU (a GPU machine here
// has one, and NCCL cannot run several ranks on it). The reduce-scatter adds
// the ranks' values in rank order (16-bit values in f32, each sum rounded to
// nearest even) and divides the rounded sum for the mean, as the engines'
// contract says. Checked against MPI's results by the CPU sharded optimizer
// (tests/cpu/ThreadWorldTest.cpp).
#pragma once

#include "optrt/Communicator.h"
#include "optrt/Storage.h"

#include <condition_variable>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace optdsl::test {

class ThreadWorld {
public:
  explicit ThreadWorld(int size) : size_(size), published_(static_cast<size_t>(size)) {}

  int size() const { return size_; }

  /// Rank `rank`'s communicator; each rank's thread uses its own.
  std::shared_ptr<optrt::Communicator> communicator(int rank);

  /// Runs body(rank) on size() threads at once and waits for them; rethrows
  /// the first exception. A rank that throws while others wait in a
  /// collective would leave them waiting: bodies must fail on every rank
  /// alike (as the optimizers' agreement makes them).
  void run(const std::function<void(int)> &body) {
    std::vector<std::thread> threads;
    std::vector<std::exception_ptr> errors(static_cast<size_t>(size_));
    for (int r = 0; r < size_; ++r)
      threads.emplace_back([&, r] {
        try {
          body(r);
        } catch (...) {
          errors[static_cast<size_t>(r)] = std::current_exception();
        }
      });
    for (std::thread &thread : threads)
      thread.join();
    for (const std::exception_ptr &error : errors)
      if (error)
        std::rethrow_exception(error);
  }

private:
  friend class ThreadCommunicator;

  // Every rank waits until all have arrived (reusable: counted by generation).
  void barrier() {
    std::unique_lock<std::mutex> lock(mutex_);
    uint64_t generation = generation_;
    if (++waiting_ == size_) {
      waiting_ = 0;
      ++generation_;
      arrived_.notify_all();
      return;
    }
    arrived_.wait(lock, [&] { return generation_ != generation; });
  }

  int size_;
  std::vector<const void *> published_; // each rank's buffer of the collective in progress
  std::mutex mutex_;
  std::condition_variable arrived_;
  int waiting_ = 0;
  uint64_t generation_ = 0;
};

class ThreadCommunicator final : public optrt::Communicator {
public:
  ThreadCommunicator(ThreadWorld &world, int rank) : world_(world), rank_(rank) {}

  int rank() const override { return rank_; }
  int size() const override { return world_.size(); }
  std::string engine() const override { return "threads"; }
  Memory memory() const override { return Memory::Host; }

  void allGather(const void *mine, void *all, size_t bytes) override {
    publish(mine);
    for (int q = 0; q < size(); ++q)
      std::memcpy(static_cast<char *>(all) + bytes * static_cast<size_t>(q), world_.published_[q], bytes);
    world_.barrier(); // nobody's buffer is read after this
  }

  void allGatherInPlace(void *buffer, std::span<const size_t> bytesPerRank, void *) override {
    publish(buffer);
    size_t start = 0;
    for (int q = 0; q < size(); ++q) {
      size_t part = bytesPerRank[static_cast<size_t>(q)];
      if (q != rank_ && part > 0)
        std::memcpy(static_cast<char *>(buffer) + start, static_cast<const char *>(world_.published_[q]) + start,
                    part);
      start += part;
    }
    world_.barrier();
  }

  void reduceScatter(const void *send, void *recv, std::span<const size_t> countsPerRank, optrt::Dtype dtype,
                     Reduction reduction, void *) override {
    publish(send);
    size_t start = 0;
    for (int q = 0; q < rank_; ++q)
      start += countsPerRank[static_cast<size_t>(q)];
    size_t unit = optrt::elementBytes(dtype, 1);
    auto rounded = [&](float value) { // to the dtype and back
      char stored[4];
      optrt::encodeF32(dtype, {&value, 1}, stored, nullptr);
      float back = 0;
      optrt::decodeToF32(dtype, stored, nullptr, {&back, 1});
      return back;
    };
    for (size_t i = 0; i < countsPerRank[static_cast<size_t>(rank_)]; ++i) {
      float sum = 0;
      for (int q = 0; q < size(); ++q) {
        float value = 0;
        optrt::decodeToF32(dtype, static_cast<const char *>(world_.published_[q]) + (start + i) * unit, nullptr,
                           {&value, 1});
        sum = q == 0 ? value : rounded(sum + value);
      }
      if (reduction == Reduction::Average)
        sum = rounded(sum / static_cast<float>(size()));
      optrt::encodeF32(dtype, {&sum, 1}, static_cast<char *>(recv) + i * unit, nullptr);
    }
    world_.barrier();
  }

private:
  // Shows this rank's buffer to the others once every rank has shown its own.
  void publish(const void *buffer) {
    world_.published_[static_cast<size_t>(rank_)] = buffer;
    world_.barrier();
  }

  ThreadWorld &world_;
  int rank_;
};

inline std::shared_ptr<optrt::Communicator> ThreadWorld::communicator(int rank) {
  return std::make_shared<ThreadCommunicator>(*this, rank);
}

} // namespace optdsl::test
