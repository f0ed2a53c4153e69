// The CUDA kernels, run by optrt::CudaOptimizer on a GPU, against the float64
// reference interpreter, with the bound the CPU kernels meet
// (tests/cpu/CpuKernelTest.cpp): before every step the interpreter gets the
// GPU's own f32 state, so each step is compared from identical inputs.
// Skipped, with the reason, where there is no GPU.
#include "GpuTestSupport.h"
#include "common/BranchHypers.h"
#include "common/ElementBound.h"

#include "optdsl/Interpreter.h"
#include "optrt/CudaOptimizer.h"

#include <gtest/gtest.h>

#include <cmath>
#include <dlfcn.h>
#include <random>

namespace optdsl::gputest {
namespace {

/// Tensors carved out of one device allocation. Aligned: each starts on a
/// 16-byte boundary (the 4-wide path); otherwise one float apart, so param
/// and grad are misaligned as in a flat parameter store (the scalar path).
struct DeviceTensors {
  std::vector<size_t> sizes, offsets;
  std::vector<float> host;
  DeviceFloats params, grads;

  DeviceTensors(const std::vector<size_t> &tensorSizes, bool aligned, std::mt19937 &rng)
      : sizes(tensorSizes), host(layout(tensorSizes, aligned, offsets)), params(host.size()),
        grads(host.size()) {
    std::normal_distribution<float> normal;
    for (float &x : host)
      x = normal(rng);
    params.upload(0, host.data(), host.size());
  }

  static size_t layout(const std::vector<size_t> &sizes, bool aligned, std::vector<size_t> &offsets) {
    size_t at = aligned ? 0 : 1;
    for (size_t size : sizes) {
      offsets.push_back(at);
      at += size + (aligned ? (4 - size % 4) % 4 : 1);
    }
    return at + 4;
  }

  std::vector<optrt::DevicePtr> paramPointers() const {
    std::vector<optrt::DevicePtr> result;
    for (size_t offset : offsets)
      result.push_back(params.at(offset));
    return result;
  }

  /// New gradients (host copies returned), uploaded to the device.
  std::vector<std::vector<float>> drawGrads(std::mt19937 &rng, int step, std::vector<optrt::DevicePtr> &pointers) {
    std::normal_distribution<float> normal;
    std::vector<std::vector<float>> result;
    pointers.clear();
    for (size_t k = 0; k < sizes.size(); ++k) {
      float scale = std::pow(10.0f, static_cast<float>((k + step) % 5) - 3.0f);
      std::vector<float> g(sizes[k]);
      for (float &x : g)
        x = normal(rng) * scale;
      grads.upload(offsets[k], g.data(), g.size());
      pointers.push_back(grads.at(offsets[k]));
      result.push_back(std::move(g));
    }
    return result;
  }

  std::vector<float> param(size_t k) const {
    std::vector<float> values(sizes[k]);
    params.download(offsets[k], values.data(), values.size());
    return values;
  }
};

/// The CPU kernels' bound (tests/common/ElementBound.h).
void expectClose(const std::vector<double> &before, const std::vector<double> &reference,
                 const std::vector<float> &ours, const std::string &what) {
  test::expectWithinElementBound(before, reference, ours.data(), what, "GPU");
}

void compareWithInterpreter(const std::string &name, const std::vector<size_t> &sizes, int steps, unsigned seed,
                            bool aligned, size_t chunkElements = 65536,
                            const std::vector<std::vector<size_t>> &shapes = {}) {
  SCOPED_TRACE("rule " + name + ", seed " + std::to_string(seed) + (aligned ? ", aligned" : ", misaligned"));
  const CompiledRule &c = compiledRule(name);
  std::mt19937 rng(seed);
  DeviceTensors tensors(sizes, aligned, rng);
  optrt::CudaOptimizer optimizer(c.host, c.device, {-1, chunkElements});
  optimizer.addGroup(tensors.paramPointers(), sizes, test::kBranchHypers.at(name), shapes);
  Interpreter interpreter(c.rule);
  HyperValues hypers = interpreter.defaultHypers();
  for (const auto &[hyper, value] : test::kBranchHypers.at(name))
    interpreter.setHyper(hypers, hyper, value);
  // What the device kernels were built with (lamb's clipping off).
  for (const auto &[hyper, value] : test::cudaFixedHypers(name))
    interpreter.setHyper(hypers, hyper, value);

  for (int step = 1; step <= steps; ++step) {
    std::vector<TensorState> states;
    for (size_t k = 0; k < sizes.size(); ++k) {
      std::vector<float> param = tensors.param(k);
      std::vector<int64_t> shape = shapes.empty() ? std::vector<int64_t>{static_cast<int64_t>(sizes[k])}
                                                  : std::vector<int64_t>(shapes[k].begin(), shapes[k].end());
      // The interpreter's tensor of this shape (its hidden rank, rows and
      // cols), then the GPU's own state.
      TensorState state = interpreter.initTensor(std::vector<double>(param.begin(), param.end()), hypers, shape);
      for (size_t s = 0; s < c.rule.states.size(); ++s) {
        std::vector<float> values = optimizer.state(c.rule.symbol(c.rule.states[s]).name, 0, k);
        state.states[s].assign(values.begin(), values.end());
      }
      for (size_t s = 0; s < c.rule.scalarStates.size(); ++s)
        state.scalarStates[s] = optimizer.scalarState(c.rule.symbol(c.rule.scalarStates[s]).name, 0, k);
      states.push_back(std::move(state));
    }
    std::vector<TensorState> before = states;
    std::vector<optrt::DevicePtr> gradPointers;
    std::vector<std::vector<float>> grads = tensors.drawGrads(rng, step, gradPointers);
    std::vector<std::vector<double>> gradsDouble;
    for (const auto &g : grads)
      gradsDouble.emplace_back(g.begin(), g.end());
    interpreter.step(states, gradsDouble, step, hypers);
    optimizer.step({gradPointers});
    for (size_t k = 0; k < sizes.size(); ++k) {
      std::string where = "step " + std::to_string(step) + " tensor " + std::to_string(k);
      expectClose(before[k].param, states[k].param, tensors.param(k), where + " param");
      for (size_t s = 0; s < c.rule.states.size(); ++s)
        expectClose(before[k].states[s], states[k].states[s],
                    optimizer.state(c.rule.symbol(c.rule.states[s]).name, 0, k),
                    where + " state " + c.rule.symbol(c.rule.states[s]).name);
      for (size_t s = 0; s < c.rule.scalarStates.size(); ++s) {
        double ours = optimizer.scalarState(c.rule.symbol(c.rule.scalarStates[s]).name, 0, k);
        // As on the CPU (CpuKernelTest.cpp): a scalar that reads a reduction
        // (Prodigy's d) inherits the f32 rounding of the reduction's terms.
        if (!c.host->reductions.empty())
          EXPECT_NEAR(ours, states[k].scalarStates[s], 0x1p-17 * std::abs(states[k].scalarStates[s])) << where;
        else
          EXPECT_DOUBLE_EQ(ours, states[k].scalarStates[s]) << where;
      }
    }
    if (::testing::Test::HasFailure())
      return;
  }
}

class EveryRule : public ::testing::TestWithParam<std::string> {
protected:
  void SetUp() override { OPTDSL_REQUIRE_GPU(); }
};

TEST_P(EveryRule, MatchesInterpreterOnEdgeSizesAligned) {
  compareWithInterpreter(GetParam(), {1, 3, 4, 5, 7, 15, 16, 17, 65537, 1000003}, 2, 2026, true);
}

TEST_P(EveryRule, MatchesInterpreterOnEdgeSizesMisaligned) {
  compareWithInterpreter(GetParam(), {1, 3, 4, 5, 7, 15, 16, 17, 65537, 1000003}, 2, 2027, false);
}

TEST_P(EveryRule, MatchesInterpreterOnFiftyOddTensorsWithOddChunks) {
  std::mt19937 rng(7);
  std::vector<size_t> sizes;
  for (int k = 0; k < 50; ++k)
    sizes.push_back(1 + rng() % 3000);
  // Eight steps: RAdam's rectified branch starts at step 6. Chunks of 1001
  // elements start at odd offsets, so chunks have unaligned heads.
  compareWithInterpreter(GetParam(), sizes, 8, 11, true, 1001);
}

/// Shapes of every kind (CpuKernelTest.cpp's): 40 x 700 in one chunk of whole
/// rows, 300 x 17 and a stack of four 100 x 33 in several (chunks of 64 rows
/// cross the stack's matrices), a stack of three 5 x 7, a vector (one row),
/// 2 x 1 x 16. Rules that read tensors as matrices reduce their rows and
/// columns; the others read `rank`, `rows`, `cols`.
TEST_P(EveryRule, MatchesInterpreterOnMatrices) {
  compareWithInterpreter(GetParam(), {28000, 105, 33, 5100, 32, 13200}, 4, 5, true, 4096,
                         {{40, 700}, {3, 5, 7}, {33}, {300, 17}, {2, 1, 16}, {4, 100, 33}});
}

/// The library rules these tests run: all with kernels (test::kernelRules)
/// but those with inputs (test::kInputRules): Sophia divides by its Hessian
/// estimate, beyond this file's bound as on the CPU (InputTest.cpp); the
/// golden case sophia_refresh runs it on a GPU (golden.cuda.*).
std::vector<std::string> cudaRules() {
  std::vector<std::string> rules = test::kernelRules();
  for (const std::string &name : test::kInputRules)
    std::erase(rules, name);
  return rules;
}

INSTANTIATE_TEST_SUITE_P(Rules, EveryRule,
                         ::testing::ValuesIn(cudaRules()),
                         [](const auto &info) { return info.param; });

/// Params and states after three steps of a fresh optimizer.
std::vector<float> runThreeSteps(const std::string &name, optrt::CudaStream stream = nullptr) {
  const CompiledRule &c = compiledRule(name);
  std::mt19937 rng(99);
  DeviceTensors tensors({1, 5000, 77777, 3}, true, rng);
  optrt::CudaOptimizer optimizer(c.host, c.device, {-1, 1000});
  optimizer.addGroup(tensors.paramPointers(), tensors.sizes, test::kBranchHypers.at(name));
  for (int step = 1; step <= 3; ++step) {
    std::vector<optrt::DevicePtr> grads;
    tensors.drawGrads(rng, step, grads);
    optimizer.step({grads}, stream);
  }
  std::vector<float> result;
  for (size_t k = 0; k < tensors.sizes.size(); ++k) {
    std::vector<float> p = tensors.param(k);
    result.insert(result.end(), p.begin(), p.end());
    for (int id : c.rule.states) {
      std::vector<float> s = optimizer.state(c.rule.symbol(id).name, 0, k);
      result.insert(result.end(), s.begin(), s.end());
    }
  }
  return result;
}

TEST(CudaDeterminism, TwoRunsAreBitwiseEqual) {
  OPTDSL_REQUIRE_GPU();
  for (const char *name : {"lamb", "adamw"}) {
    std::vector<float> first = runThreeSteps(name), second = runThreeSteps(name);
    ASSERT_EQ(first.size(), second.size());
    EXPECT_EQ(std::memcmp(first.data(), second.data(), first.size() * sizeof(float)), 0) << name;
  }
}

TEST(CudaGroups, EachGroupKeepsItsHypers) {
  OPTDSL_REQUIRE_GPU();
  const CompiledRule &c = compiledRule("adamw");
  std::mt19937 rng(5);
  DeviceTensors a({1000}, true, rng), b({1000}, true, rng);
  std::vector<float> startA = a.param(0), startB = b.param(0);
  optrt::CudaOptimizer optimizer(c.host, c.device);
  optimizer.addGroup(a.paramPointers(), a.sizes, {{"lr", 0.0}, {"weight_decay", 0.0}});
  optimizer.addGroup(b.paramPointers(), b.sizes, {{"lr", 0.1}});
  std::vector<optrt::DevicePtr> ga, gb;
  a.drawGrads(rng, 1, ga);
  b.drawGrads(rng, 1, gb);
  optimizer.step({ga, gb});
  EXPECT_EQ(a.param(0), startA); // lr 0, no decay: unchanged
  EXPECT_NE(b.param(0), startB);
  optimizer.setHyper("lr", 0.0, 1);
  optimizer.setHyper("weight_decay", 0.0, 1);
  std::vector<float> afterOne = b.param(0);
  optimizer.step({ga, gb});
  EXPECT_EQ(b.param(0), afterOne); // the new hypers reached the device
}

/// A group added after two steps takes its first step as a fresh optimizer
/// does (step 1's bias corrections), bit for bit: each group has its own
/// counter on the device.
TEST(CudaGroups, AGroupAddedLaterStartsAtStepOne) {
  OPTDSL_REQUIRE_GPU();
  const CompiledRule &c = compiledRule("adamw");
  std::mt19937 rng(8), same(9), again(9), gradsLater(10), gradsFresh(10);
  DeviceTensors early({1000}, true, rng), later({3000}, true, same), fresh({3000}, true, again);
  optrt::CudaOptimizer optimizer(c.host, c.device), alone(c.host, c.device);
  optimizer.addGroup(early.paramPointers(), early.sizes);
  alone.addGroup(fresh.paramPointers(), fresh.sizes);
  std::vector<optrt::DevicePtr> ge, gl, gf;
  for (int step = 1; step <= 2; ++step) {
    early.drawGrads(rng, step, ge);
    optimizer.step({ge});
  }
  optimizer.addGroup(later.paramPointers(), later.sizes);
  early.drawGrads(rng, 3, ge);
  later.drawGrads(gradsLater, 1, gl);
  fresh.drawGrads(gradsFresh, 1, gf);
  optimizer.step({ge, gl});
  alone.step({gf});
  EXPECT_EQ(later.param(0), fresh.param(0));
  EXPECT_EQ(optimizer.stepCount(1), 1);
}

TEST(CudaErrors, WrongSizeParamIsNamed) {
  OPTDSL_REQUIRE_GPU();
  const CompiledRule &c = compiledRule("sgd");
  DeviceFloats small(100);
  optrt::CudaOptimizer optimizer(c.host, c.device);
  try {
    optimizer.addGroup({small.at(0)}, {200});
    FAIL() << "no error";
  } catch (const optrt::CudaError &e) {
    EXPECT_EQ(e.code(), optrt::CudaErrc::BadPointer) << e.what();
  }
  EXPECT_EQ(optimizer.numGroups(), 0);
}

/// torch's `capturable`: one step captured in a CUDA graph and replayed gives
/// what the same number of plain steps gives, bit for bit.
TEST(CudaGraph, ReplayedStepsEqualPlainSteps) {
  std::string why;
  const optrt::cuda::Driver *d = gpu(why);
  if (!d)
    GTEST_SKIP() << "no GPU: " << why;
  using namespace optrt::cuda;
  const GraphApi *graphs = GraphApi::get(why);
  ASSERT_TRUE(graphs) << why;

  const CompiledRule &c = compiledRule("lamb");
  std::mt19937 rng(3);
  DeviceTensors plain({4097, 33}, true, rng);
  std::mt19937 rng2(3);
  DeviceTensors graphed({4097, 33}, true, rng2);
  std::vector<optrt::DevicePtr> grads;
  plain.drawGrads(rng, 1, grads);
  std::vector<optrt::DevicePtr> graphedGrads;
  graphed.drawGrads(rng2, 1, graphedGrads);

  optrt::CudaOptimizer a(c.host, c.device), b(c.host, c.device);
  a.addGroup(plain.paramPointers(), plain.sizes);
  b.addGroup(graphed.paramPointers(), graphed.sizes);
  for (int i = 0; i < 4; ++i)
    a.step({grads});

  CUstream stream = nullptr;
  d->check(graphs->streamCreate(&stream, 1 /* non-blocking */), "cuStreamCreate");
  b.step({graphedGrads}, stream); // uploads the gradient pointers, outside the capture
  d->check(graphs->beginCapture(stream, 2 /* relaxed */), "cuStreamBeginCapture_v2");
  b.step({graphedGrads}, stream);
  void *graph = nullptr, *exec = nullptr;
  d->check(graphs->endCapture(stream, &graph), "cuStreamEndCapture");
  d->check(graphs->instantiate(&exec, graph, 0), "cuGraphInstantiateWithFlags");
  for (int i = 0; i < 3; ++i)
    d->check(graphs->launch(exec, stream), "cuGraphLaunch");
  d->check(d->cuStreamSynchronize(stream), "cuStreamSynchronize");
  for (size_t k = 0; k < plain.sizes.size(); ++k) {
    EXPECT_EQ(plain.param(k), graphed.param(k)) << "tensor " << k;
    EXPECT_EQ(a.state("exp_avg", 0, k), b.state("exp_avg", 0, k)) << "tensor " << k;
  }
}

} // namespace
} // namespace optdsl::gputest
