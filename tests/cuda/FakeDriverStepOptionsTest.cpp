// The CUDA training step's host side against the fake driver
// (CudaStepOptions, docs/training-step.md "CUDA"): which kernels a step with
// options launches, what reaches the device's step record, what is refused
// before anything is enqueued, and what the host reads back. The fake runs
// no kernel: where a test needs what stepoptions writes, it writes those
// bytes into the fake's device memory itself. The kernels' arithmetic runs
// on a GPU (CudaTrainingStepTest.cpp).
#include "cuda/FakeDriverControl.h"

#include "optrt/CudaKernels.h"
#include "optrt/CudaOptimizer.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstddef>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <stdexcept>

namespace {

using optdsl::test::Fake;
using optdsl::test::LayoutRule;
using optrt::CudaStepOptions;
using optrt::CudaStepRecord;
using optrt::DevicePtr;

/// Compiled once per process (never destroyed: JIT engines must not
/// outlive LLVM's globals).
const LayoutRule &rule(const std::string &name, const std::string &layout) {
  static auto &cache = *new std::map<std::string, LayoutRule>();
  std::string key = name + " " + layout;
  auto it = cache.find(key);
  if (it == cache.end())
    it = cache.emplace(key, optdsl::test::compileLayouts(name, {layout})).first;
  return it->second;
}

/// The step segment as the device holds it (the fake's device memory is the host's).
CudaStepRecord deviceRecord(const optrt::CudaOptimizer &optimizer) {
  CudaStepRecord record;
  std::memcpy(&record, reinterpret_cast<const void *>(optimizer.stepRecordAddress()), sizeof record);
  return record;
}

void writeDeviceRecord(const optrt::CudaOptimizer &optimizer, const CudaStepRecord &record) {
  std::memcpy(reinterpret_cast<void *>(optimizer.stepRecordAddress()), &record, sizeof record);
}

double deviceHyper(const optrt::CudaOptimizer &optimizer, const std::string &name, int group) {
  double value = 0;
  std::memcpy(&value, reinterpret_cast<const void *>(optimizer.hyperAddress(name, group)), sizeof value);
  return value;
}

class FakeDriverStepOptions : public optdsl::test::FakeDriverFixture<::testing::Test> {
protected:
  /// An optimizer of `layout` with one group of tensors of `sizes`, and
  /// gradients for them.
  optrt::CudaOptimizer make(const std::string &layout, const std::vector<size_t> &sizes) {
    const LayoutRule &r = rule("adamw", layout);
    optrt::CudaOptimizerOptions options;
    options.layout = layout;
    optrt::CudaOptimizer optimizer(r.host, r.device, options);
    std::vector<DevicePtr> params;
    grads_.clear();
    for (size_t n : sizes) {
      params.push_back(fake().alloc(n * sizeof(float)));
      grads_.push_back(fake().alloc(n * sizeof(float)));
    }
    optimizer.addGroup(params, sizes);
    fake().reset();
    return optimizer;
  }
  std::vector<std::vector<DevicePtr>> grads() const { return {grads_}; }

  std::vector<DevicePtr> grads_;
};

TEST_F(FakeDriverStepOptions, AStepThatNeedsTheNormReadsTheGradientsFirst) {
  optrt::CudaOptimizer optimizer = make("f32", {3000, 70000});
  const optrt::CudaKernels &k = *rule("adamw", "f32").device[0];
  std::vector<std::string> plain = optdsl::test::stepLaunches(k);
  std::vector<std::string> reading = {k.gradStatsEntry, k.stepOptionsEntry};
  reading.insert(reading.end(), plain.begin(), plain.end());

  CudaStepOptions check;
  check.checkFinite = true;
  optimizer.step(grads(), nullptr, check);
  EXPECT_EQ(optdsl::test::launchedKernels(), reading);
  EXPECT_EQ(fake().launchGrid(1), 1u) << "stepoptions is one block";
  fake().reset();
  CudaStepOptions clipOnly; // clipping by value needs no read
  clipOnly.clipValue = 0.5;
  optimizer.step(grads(), nullptr, clipOnly);
  EXPECT_EQ(optdsl::test::launchedKernels(), plain);
  for (auto edit : {+[](CudaStepOptions &o) { o.lossScale = 1024; }, +[](CudaStepOptions &o) { o.maxGradNorm = 1.0; },
                    +[](CudaStepOptions &o) { o.dynamicLossScale = true; }}) {
    fake().reset();
    CudaStepOptions options;
    edit(options);
    optimizer.step(grads(), nullptr, options);
    EXPECT_EQ(optdsl::test::launchedKernels(), reading);
  }
}

// A q8 layout runs its small tensors with the fallback's kernels: each run
// reads its own gradients (its own buffers table), then one decision.
TEST_F(FakeDriverStepOptions, EachRunReadsItsOwnGradients) {
  const std::string layout = "param=bf16,master=f32,state=q8";
  optrt::CudaOptimizer optimizer = make(layout, {100, 70000});
  const LayoutRule &r = rule("adamw", layout);
  ASSERT_EQ(r.device.size(), 2u);
  CudaStepOptions options;
  options.checkFinite = true;
  optimizer.step(grads(), nullptr, options);
  std::vector<std::string> launched = optdsl::test::launchedKernels();
  ASSERT_GE(launched.size(), 3u);
  EXPECT_EQ(launched[0], r.device[0]->gradStatsEntry);
  EXPECT_EQ(launched[1], r.device[1]->gradStatsEntry);
  EXPECT_NE(launched[0], launched[1]);
  EXPECT_EQ(launched[2], r.device[0]->stepOptionsEntry);
}

TEST_F(FakeDriverStepOptions, TheOptionsReachTheDevicesStepRecord) {
  optrt::CudaOptimizer optimizer = make("f32", {3000});
  CudaStepOptions options;
  options.lossScale = 128;
  options.maxGradNorm = 1.5;
  options.clipValue = 0.25;
  optimizer.step(grads(), nullptr, options);
  CudaStepRecord record = deviceRecord(optimizer);
  EXPECT_EQ(record.lossScale, 128);
  EXPECT_EQ(record.maxGradNorm, 1.5);
  EXPECT_EQ(record.clipValue, 0.25);
  EXPECT_EQ(record.dynamic, 0);

  CudaStepOptions dynamic;
  dynamic.dynamicLossScale = true;
  optimizer.step(grads(), nullptr, dynamic);
  record = deviceRecord(optimizer);
  EXPECT_EQ(record.dynamic, 1);
  EXPECT_EQ(record.maxGradNorm, 0) << "no clipping by norm";
  EXPECT_EQ(record.clipValue, optrt::kGradClipDefault);
  EXPECT_EQ(record.scale, 65536.0f) << "GradScaler's initial scale";
  EXPECT_EQ(record.growthInterval, 2000);
}

TEST_F(FakeDriverStepOptions, BadOptionsAreNamedBeforeAnyLaunch) {
  optrt::CudaOptimizer optimizer = make("f32", {3000});
  CudaStepOptions first;
  first.lossScale = 8;
  optimizer.step(grads(), nullptr, first);
  fake().reset();
  CudaStepRecord before = deviceRecord(optimizer);
  double inf = std::numeric_limits<double>::infinity(), nan = std::numeric_limits<double>::quiet_NaN();
  struct Bad {
    std::function<void(CudaStepOptions &)> edit;
    std::string named;
  };
  std::vector<Bad> bad = {
      {[](CudaStepOptions &o) { o.lossScale = 0; }, "lossScale is 0"},
      {[](CudaStepOptions &o) { o.lossScale = -4; }, "lossScale is -4"},
      {[&](CudaStepOptions &o) { o.lossScale = nan; }, "lossScale is nan"},
      {[](CudaStepOptions &o) { o.maxGradNorm = 0; }, "maxGradNorm is 0"},
      {[&](CudaStepOptions &o) { o.clipValue = inf; }, "clipValue is inf"},
      {[](CudaStepOptions &o) { o.inputs.push_back({"hessian", {}}); }, "hessian"},
  };
  for (const Bad &b : bad) {
    CudaStepOptions options;
    b.edit(options);
    try {
      optimizer.step(grads(), nullptr, options);
      ADD_FAILURE() << "accepted options that should name '" << b.named << "'";
    } catch (const std::invalid_argument &e) {
      EXPECT_NE(std::string(e.what()).find(b.named), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("optrt::CudaOptimizer::step"), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(fake().numLaunches(), 0u);
  CudaStepRecord after = deviceRecord(optimizer);
  EXPECT_EQ(std::memcmp(&before, &after, sizeof before), 0) << "the step record changed";
  EXPECT_EQ(optimizer.stepCount(), 1);
}

TEST_F(FakeDriverStepOptions, TheResultIsWhatTheDeviceWrote) {
  optrt::CudaOptimizer optimizer = make("f32", {3000});
  EXPECT_THROW(optimizer.lastStepResult(), std::logic_error);
  CudaStepOptions options;
  options.checkFinite = true;
  optimizer.step(grads(), nullptr, options);
  // What stepoptions writes, here written by hand.
  CudaStepRecord record = deviceRecord(optimizer);
  record.gradNorm = 3.5;
  record.clipCoefficient = 0.25;
  record.skipped = 1;
  writeDeviceRecord(optimizer, record);
  optrt::StepResult result = optimizer.lastStepResult();
  EXPECT_TRUE(result.skipped);
  EXPECT_EQ(result.gradNorm, 3.5);
  EXPECT_EQ(result.clipCoefficient, 0.25);
  // A step that does not read the gradients knows no norm.
  optimizer.step(grads(), nullptr, CudaStepOptions{});
  result = optimizer.lastStepResult();
  EXPECT_FALSE(result.skipped);
  EXPECT_TRUE(std::isnan(result.gradNorm));
  EXPECT_EQ(result.clipCoefficient, 1.0);
}

// stepoptions writes grad_scale and grad_clip into the device's hypers; a
// later step without the read must not run with them.
TEST_F(FakeDriverStepOptions, StepHypersGoBackToTheHostsAfterAReadingStep) {
  optrt::CudaOptimizer optimizer = make("f32", {3000});
  CudaStepOptions clipOnly;
  clipOnly.clipValue = 2.0;
  optimizer.step(grads(), nullptr, clipOnly); // the host's hypers now as below
  CudaStepOptions reading;
  reading.maxGradNorm = 1.0;
  reading.clipValue = 2.0;
  optimizer.step(grads(), nullptr, reading);
  double written = 0.125;
  std::memcpy(reinterpret_cast<void *>(optimizer.hyperAddress("grad_scale", 0)), &written, sizeof written);
  optimizer.step(grads(), nullptr, clipOnly);
  EXPECT_EQ(deviceHyper(optimizer, "grad_scale", 0), 1.0);
  EXPECT_EQ(deviceHyper(optimizer, "grad_clip", 0), 2.0);
  optimizer.step(grads(), nullptr);
  EXPECT_EQ(deviceHyper(optimizer, "grad_clip", 0), optrt::kGradClipDefault);
}

TEST_F(FakeDriverStepOptions, TheLossScalerLivesOnTheDevice) {
  const LayoutRule &r = rule("adamw", "f32");
  optrt::CudaOptimizer optimizer(r.host, r.device);
  EXPECT_EQ(optimizer.lossScale(), 65536.0f);
  optimizer.setLossScaler({1024.0, 4.0, 0.25, 7}, 3);
  optimizer.addGroup({fake().alloc(3000 * sizeof(float))}, {3000});
  EXPECT_EQ(optimizer.lossScale(), 1024.0f);
  EXPECT_EQ(optimizer.lossScaleGrowthTracker(), 3);
  CudaStepRecord record = deviceRecord(optimizer);
  EXPECT_EQ(record.growthFactor, 4.0);
  EXPECT_EQ(record.backoffFactor, 0.25);
  EXPECT_EQ(record.growthInterval, 7.0);
  EXPECT_EQ(optimizer.lossScaleAddress(), optimizer.stepRecordAddress() + offsetof(CudaStepRecord, scale));

  // What the device's scaler made of its scale survives a new group (new tables).
  float scale = 512.0f;
  std::memcpy(reinterpret_cast<void *>(optimizer.lossScaleAddress()), &scale, sizeof scale);
  optimizer.addGroup({fake().alloc(100 * sizeof(float))}, {100});
  EXPECT_EQ(optimizer.lossScale(), 512.0f);

  struct Bad {
    optrt::LossScalerOptions options;
    int64_t tracker;
    std::string named;
  };
  for (const Bad &b : std::vector<Bad>{{{0.0, 2.0, 0.5, 2000}, 0, "initScale"},
                                       {{1024.0, 1.0, 0.5, 2000}, 0, "growthFactor"},
                                       {{1024.0, 2.0, 1.5, 2000}, 0, "backoffFactor"},
                                       {{1024.0, 2.0, 0.5, int64_t{1} << 31}, 0, "growthInterval"},
                                       {{1024.0, 2.0, 0.5, 10}, 10, "growthTracker"},
                                       {{1024.0, 2.0, 0.5, 10}, -1, "growthTracker"}}) {
    try {
      optimizer.setLossScaler(b.options, b.tracker);
      ADD_FAILURE() << "accepted a bad " << b.named;
    } catch (const std::invalid_argument &e) {
      EXPECT_NE(std::string(e.what()).find(b.named), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(optimizer.lossScale(), 512.0f) << "a refused setLossScaler changed the scale";
}

} // namespace
