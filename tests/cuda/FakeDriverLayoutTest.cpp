// CudaOptimizer's per-layout buffers against the fake driver, whose device
// memory is host memory the test can read and write: params in bf16/f16,
// masters (f32 copies and remainders), 16-bit and q8 states with their
// absmax, the small-tensor fallback, readState/writeState/master/
// memoryReport, the launches of both runs, and the named errors of misuse.
// What the kernels compute is compared with the CPU kernels on a GPU
// (CudaLayoutTest.cpp).
#include "common/BranchHypers.h"
#include "common/RandomValues.h"
#include "common/RuleLibrary.h"
#include "optdsl/CUDACompile.h"
#include "optdsl/JIT.h"
#include "optrt/CudaOptimizer.h"
#include "optrt/Layout.h"
#include "optrt/MemoryReport.h"
#include "optrt/Optimizer.h"
#include "optrt/RuleKernels.h"
#include "optrt/Storage.h"

#include "cuda/FakeDriverControl.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <sstream>

namespace {

using optdsl::test::compileLayouts;
using optdsl::test::Fake;
using optdsl::test::LayoutRule;
using optrt::CudaErrc;
using optrt::CudaError;
using optrt::DevicePtr;

/// The optimizer of `layout` over the rule's CUDA kernels.
optrt::CudaOptimizer optimizerFor(const LayoutRule &rule, const std::string &layout) {
  optrt::CudaOptimizerOptions options;
  options.layout = layout;
  return optrt::CudaOptimizer(rule.host, rule.device, options);
}

/// n bf16 params of fresh random values at a fake device address.
DevicePtr bf16Params(size_t n, std::mt19937 &random) {
  DevicePtr p = Fake::get().alloc(n * 2);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto *bits = reinterpret_cast<uint16_t *>(p);
  for (size_t i = 0; i < n; ++i)
    bits[i] = optrt::f32ToBf16(normal(random));
  return p;
}

/// What storing `values` in `dtype` and reading them back gives (the
/// reference codecs).
std::vector<float> roundTrip(optrt::Dtype dtype, const std::vector<float> &values) {
  std::vector<uint8_t> data(optrt::elementBytes(dtype, values.size()));
  std::vector<float> absmax(optrt::q8Blocks(values.size()));
  optrt::encodeF32(dtype, values, data.data(), absmax.data());
  std::vector<float> back(values.size());
  optrt::decodeToF32(dtype, data.data(), absmax.data(), back);
  return back;
}

/// The storage of state `name` in layout `layout` of the host kernels
/// (signed or unsigned q8 as the sign analysis decided).
optrt::Dtype stateDtype(const optrt::RuleKernels &host, const std::string &layout, const std::string &name) {
  for (const optrt::LayoutKernels &kernels : host.layouts)
    if (kernels.name == layout)
      for (const optrt::BufferDesc &buffer : kernels.buffers)
        if (buffer.role == optrt::BufferRole::State && host.states[buffer.state].name == name)
          return buffer.dtype;
  throw std::logic_error("no state " + name + " in layout " + layout);
}

class FakeDriverLayoutTest : public optdsl::test::FakeDriverFixture<::testing::Test> {};

TEST_F(FakeDriverLayoutTest, Bf16MasterQ8KeepsEveryBufferApart) {
  const std::string layout = "param=bf16,master=f32,state=q8";
  LayoutRule rule = compileLayouts("adamw", {layout});
  std::string fallback = optrt::smallTensorLayout(optrt::Layout::parse(layout)).str();
  optrt::CudaOptimizer optimizer = optimizerFor(rule, layout);
  std::mt19937 random(7);
  const std::vector<size_t> sizes = {5000, 100, 70001};
  std::vector<DevicePtr> params;
  for (size_t n : sizes)
    params.push_back(bf16Params(n, random));
  optimizer.addGroup(params, sizes);

  EXPECT_EQ(optimizer.tensorLayout(0, 0), optrt::Layout::parse(layout).str());
  EXPECT_EQ(optimizer.tensorLayout(0, 1), fallback);
  const std::vector<std::string> states = {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"};
  for (size_t t = 0; t < sizes.size(); ++t) {
    // The master starts as the exact value of each bf16 param.
    std::vector<float> master = optimizer.master(0, t);
    const auto *bits = reinterpret_cast<const uint16_t *>(params[t]);
    for (size_t i = 0; i < sizes[t]; ++i)
      ASSERT_EQ(master[i], optrt::bf16ToF32(bits[i])) << "tensor " << t << " element " << i;
    // States start at their init value (0), though fresh device memory is not zero.
    for (const std::string &name : states)
      EXPECT_EQ(optimizer.readState(name, 0, t), std::vector<float>(sizes[t], 0.0f)) << name << " of " << t;
  }
  // Every state of every tensor written with its own values reads back as
  // its storage encodes them: no two buffers (codes, absmax) overlap.
  std::map<std::pair<std::string, size_t>, std::vector<float>> written;
  for (size_t t = 0; t < sizes.size(); ++t)
    for (const std::string &name : states) {
      std::vector<float> values = optdsl::test::normalValues(sizes[t], random, 1.0f + static_cast<float>(t));
      optimizer.writeState(name, 0, t, values);
      written[{name, t}] = values;
    }
  for (size_t t = 0; t < sizes.size(); ++t)
    for (const std::string &name : states) {
      optrt::Dtype dtype = stateDtype(*rule.host, optimizer.tensorLayout(0, t), name);
      EXPECT_EQ(dtype == optrt::Dtype::F32, t == 1) << name << " of " << t;
      EXPECT_EQ(optimizer.readState(name, 0, t), roundTrip(dtype, written[{name, t}])) << name << " of " << t;
    }
  optrt::MemoryReport report = optimizer.memoryReport();
  optrt::MemoryReport expected =
      optrt::memoryReport(rule.host->states, optrt::Layout::parse(layout), sizes, optrt::MemoryOptions{});
  EXPECT_EQ(report.str(), expected.str());
  EXPECT_THROW(optimizer.writeState("exp_avg", 0, 0, std::vector<float>(4999)), std::invalid_argument);
}

TEST_F(FakeDriverLayoutTest, StepRunsTheLayoutAndItsFallbackOverTheirOwnChunks) {
  const std::string layout = "param=bf16,grad=bf16,state=q8";
  LayoutRule rule = compileLayouts("ademamix", {layout});
  optrt::CudaOptimizer optimizer = optimizerFor(rule, layout);
  std::mt19937 random(3);
  const std::vector<size_t> sizes = {100, 9000, 200};
  std::vector<DevicePtr> params, grads;
  for (size_t n : sizes) {
    params.push_back(bf16Params(n, random));
    grads.push_back(bf16Params(n, random));
  }
  optimizer.addGroup(params, sizes);
  Fake::get().reset();
  optimizer.step({grads});
  const optrt::CudaKernels &main = *rule.device[0], &small = *rule.device[1];
  ASSERT_EQ(main.layout, optrt::Layout::parse(layout).str());
  ASSERT_EQ(small.layout, optrt::smallTensorLayout(optrt::Layout::parse(layout)).str());
  std::vector<std::string> launched;
  for (size_t i = 0; i < Fake::get().numLaunches(); ++i)
    launched.push_back(Fake::get().launch(i));
  std::vector<std::string> expected;
  for (size_t p = 0; p < main.elementEntries.size(); ++p) {
    expected.push_back(main.uniformsEntries[p]);
    expected.push_back(main.elementEntries[p]);  // the 9000-element tensor
    expected.push_back(small.elementEntries[p]); // the two under 4096
    if (!main.finishEntries[p].empty())
      expected.push_back(main.finishEntries[p]);
  }
  if (!main.scalarsEntry.empty())
    expected.push_back(main.scalarsEntry);
  expected.push_back(main.advanceEntry);
  EXPECT_EQ(launched, expected);
}

TEST_F(FakeDriverLayoutTest, RemainderMasterStartsAtZeroRemainders) {
  const std::string layout = "param=bf16,master=remainder";
  LayoutRule rule = compileLayouts("lion", {layout});
  optrt::CudaOptimizer optimizer = optimizerFor(rule, layout);
  std::mt19937 random(5);
  DevicePtr param = bf16Params(3000, random);
  optimizer.addGroup({param}, {3000});
  std::vector<float> master = optimizer.master(0, 0);
  const auto *bits = reinterpret_cast<const uint16_t *>(param);
  for (size_t i = 0; i < 3000; ++i)
    ASSERT_EQ(master[i], optrt::bf16ToF32(bits[i])) << i;
  EXPECT_EQ(optimizer.stateBytes() >= 3000 * 2 + 3000 * 4, true); // remainders + f32 exp_avg
}

TEST_F(FakeDriverLayoutTest, StatesStartAtTheirEncodedInitValue) {
  // Adagrad's accumulator starts at a hyper's value: every element (and
  // every q8 block's absmax) must hold its encoding, for any tensor size.
  for (const std::string layout : {"state=bf16", "state=f16", "state=q8"}) {
    SCOPED_TRACE(layout);
    LayoutRule rule = compileLayouts("adagrad", {layout});
    optrt::CudaOptimizer optimizer = optimizerFor(rule, layout);
    const std::vector<size_t> sizes = {4097, 70001, 9};
    std::vector<DevicePtr> params;
    for (size_t n : sizes)
      params.push_back(Fake::get().alloc(n * 4));
    optimizer.addGroup(params, sizes, {{"initial_accumulator_value", 0.1}});
    for (size_t t = 0; t < sizes.size(); ++t) {
      optrt::Dtype dtype = stateDtype(*rule.host, optimizer.tensorLayout(0, t), "sum");
      EXPECT_EQ(optimizer.readState("sum", 0, t), roundTrip(dtype, std::vector<float>(sizes[t], 0.1f)))
          << "tensor " << t;
    }
  }
}

/// State saved by the CPU optimizer loads into the GPU optimizer bit for bit
/// (states, q8 absmax, masters, NAdam's per-tensor scalar, the step count),
/// and the GPU optimizer saves it back as the very same stream; another
/// layout needs `convert`.
TEST_F(FakeDriverLayoutTest, StateMovesBetweenTheCpuAndTheGpuOptimizer) {
  const std::string layout = "param=bf16,master=f32,state=q8";
  LayoutRule rule = compileLayouts("nadam", {layout});
  const std::vector<size_t> sizes = {5000, 100};
  std::mt19937 random(11);
  std::vector<DevicePtr> params;
  for (size_t n : sizes)
    params.push_back(bf16Params(n, random));
  optrt::OptimizerOptions cpuOptions;
  cpuOptions.layout = layout;
  optrt::Optimizer cpu(rule.host, cpuOptions);
  // Host copies of the params for the CPU optimizer to step.
  std::vector<std::vector<uint16_t>> cpuParams;
  for (size_t t = 0; t < sizes.size(); ++t)
    cpuParams.emplace_back(reinterpret_cast<const uint16_t *>(params[t]),
                           reinterpret_cast<const uint16_t *>(params[t]) + sizes[t]);
  cpu.addGroupStored({cpuParams[0].data(), cpuParams[1].data()}, sizes);
  for (int step = 0; step < 3; ++step) {
    std::vector<std::vector<float>> grads;
    for (size_t n : sizes)
      grads.push_back(optdsl::test::normalValues(n, random, 0.1f));
    cpu.step({{grads[0].data(), grads[1].data()}});
  }
  std::stringstream saved;
  cpu.saveState(saved);

  optrt::CudaOptimizer gpu = optimizerFor(rule, layout);
  gpu.addGroup(params, sizes);
  gpu.loadState(saved);
  EXPECT_EQ(gpu.stepCount(), 3);
  for (size_t t = 0; t < sizes.size(); ++t) {
    EXPECT_EQ(gpu.master(0, t), cpu.master(0, t)) << t;
    EXPECT_EQ(gpu.scalarState("mu_product", 0, t), cpu.scalarState("mu_product", 0, t)) << t;
    for (const optrt::StateInfo &state : rule.host->states)
      if (!state.scalar)
        EXPECT_EQ(gpu.readState(state.name, 0, t), cpu.readState(state.name, 0, t)) << state.name << " of " << t;
  }
  std::stringstream back;
  gpu.saveState(back);
  EXPECT_TRUE(back.str() == saved.str()) << "the GPU optimizer saved another stream";

  LayoutRule bf16 = compileLayouts("nadam", {"param=bf16,master=f32,state=bf16"});
  optrt::CudaOptimizer other = optimizerFor(bf16, "param=bf16,master=f32,state=bf16");
  other.addGroup({bf16Params(5000, random), bf16Params(100, random)}, sizes);
  std::stringstream again(saved.str());
  EXPECT_THROW(other.loadState(again), std::invalid_argument);
  std::stringstream converted(saved.str());
  other.loadState(converted, /*convert=*/true);
  EXPECT_EQ(other.readState("exp_avg", 0, 0), roundTrip(optrt::Dtype::BF16, cpu.readState("exp_avg", 0, 0)));
}

TEST_F(FakeDriverLayoutTest, MisuseIsNamed) {
  const std::string layout = "state=q8";
  LayoutRule rule = compileLayouts("adamw", {"f32", layout});
  auto expectInvalid = [](const std::string &needle, auto &&make) {
    try {
      make();
      ADD_FAILURE() << "no std::invalid_argument naming " << needle;
    } catch (const std::invalid_argument &e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  optrt::CudaOptimizerOptions options;
  options.layout = layout;
  // Only the f32 layout's CUDA kernels: the q8 layout's are missing.
  expectInvalid("no CUDA kernels for layout 'state=q8'",
                [&] { optrt::CudaOptimizer(rule.host, {rule.device[0]}, options); });
  // The q8 layout's without its fallback's.
  std::vector<std::shared_ptr<const optrt::CudaKernels>> withoutFallback;
  for (const auto &k : rule.device)
    if (k->layout != optrt::smallTensorLayout(optrt::Layout::parse(layout)).str())
      withoutFallback.push_back(k);
  ASSERT_EQ(withoutFallback.size(), rule.device.size() - 1);
  expectInvalid("no CUDA kernels for layout '" + optrt::smallTensorLayout(optrt::Layout::parse(layout)).str() + "'",
                [&] { optrt::CudaOptimizer(rule.host, withoutFallback, options); });
  options.chunkElements = 1000;
  expectInvalid("multiple of 256", [&] { optrt::CudaOptimizer(rule.host, rule.device, options); });
  // The host kernels were not built for the layout.
  options = {};
  options.layout = "state=bf16";
  EXPECT_THROW(optrt::CudaOptimizer(rule.host, rule.device, options), std::invalid_argument);
}

TEST_F(FakeDriverLayoutTest, PointersAreCheckedInTheirDtype) {
  const std::string layout = "param=bf16,master=f32";
  LayoutRule rule = compileLayouts("sgd", {layout});
  optrt::CudaOptimizer optimizer = optimizerFor(rule, layout);
  auto expectBadPointer = [](const std::string &needle, auto &&call) {
    try {
      call();
      ADD_FAILURE() << "no CudaError naming " << needle;
    } catch (const CudaError &e) {
      EXPECT_EQ(e.code(), CudaErrc::BadPointer) << e.what();
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  DevicePtr block = Fake::get().alloc(1002);
  expectBadPointer("2-byte aligned", [&] { optimizer.addGroup({block + 1}, {500}); });
  // 501 bf16 params need 1002 bytes: one more than the allocation has from +2.
  expectBadPointer("wrong size", [&] { optimizer.addGroup({block + 2}, {501}); });
  EXPECT_EQ(optimizer.numGroups(), 0);
  optimizer.addGroup({block}, {501}); // exactly fits
  // f32 gradients: 501 of them need 2004 bytes.
  DevicePtr shortGrad = Fake::get().alloc(1002);
  Fake::get().reset();
  expectBadPointer("wrong size", [&] { optimizer.step({{shortGrad}}); });
  EXPECT_EQ(Fake::get().numLaunches(), 0u);
  EXPECT_EQ(optimizer.stepCount(), 0);
}

} // namespace
