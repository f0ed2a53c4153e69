// The JIT-compiled CPU kernels, run by the runtime, against the float64
// reference interpreter. Before every step the interpreter is given the
// kernels' own f32 state, so each step is compared from identical inputs and
// the only difference left is f32 rounding within one step: a few units in
// the last place of the update, plus the roundings the stored value itself
// goes through at its own magnitude. No rule has more than four of those
// (AdamW's param: the decay factor rounded to f32, the decayed product, the
// subtraction of the update; NAdam: two subtractions and the L2 term), each
// at most half a unit: 4 x 2^-24 |value|.
#include "common/BranchHypers.h"
#include "common/ElementBound.h"
#include "optdsl/Interpreter.h"
#include "optdsl/JIT.h"
#include "optrt/Optimizer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <random>
#include <sstream>

namespace optdsl {
namespace {

struct Case {
  CheckedRule rule;
  std::shared_ptr<const optrt::RuleKernels> kernels;
};

const Case &compiled(const std::string &name) {
  // Never destroyed: JIT engines torn down during static destruction would
  // run after LLVM's own globals are gone.
  static auto &cache = *new std::map<std::string, Case>();
  auto it = cache.find(name);
  if (it == cache.end()) {
    CheckedRule rule = loadRuleFile(std::string(OPTDSL_DSL_DIR) + "/" + name + ".opt");
    auto kernels = jitCompile(rule);
    it = cache.emplace(name, Case{std::move(rule), kernels}).first;
  }
  return it->second;
}

/// Tensors carved out of one buffer at 4-byte (not 16- or 64-byte) aligned
/// offsets, so vector accesses are misaligned as in a real flat parameter store.
struct Tensors {
  std::vector<float> storage;
  std::vector<size_t> sizes;
  std::vector<float *> pointers;
  std::vector<std::vector<float>> grads;

  Tensors(const std::vector<size_t> &tensorSizes, std::mt19937 &rng) : sizes(tensorSizes) {
    size_t total = 1;
    for (size_t size : sizes)
      total += size + 1;
    storage.resize(total);
    std::normal_distribution<float> normal;
    for (float &x : storage)
      x = normal(rng);
    size_t offset = 1;
    for (size_t size : sizes) {
      pointers.push_back(storage.data() + offset);
      offset += size + 1;
    }
    grads.resize(sizes.size());
  }

  std::vector<const float *> drawGrads(std::mt19937 &rng, int step) {
    std::normal_distribution<float> normal;
    std::vector<const float *> result;
    for (size_t k = 0; k < sizes.size(); ++k) {
      float scale = std::pow(10.0f, static_cast<float>((k + step) % 5) - 3.0f);
      grads[k].resize(sizes[k]);
      for (float &g : grads[k])
        g = normal(rng) * scale;
      result.push_back(grads[k].data());
    }
    return result;
  }
};

void expectClose(const std::vector<double> &before, const std::vector<double> &reference,
                 const float *ours, const std::string &what) {
  test::expectWithinElementBound(before, reference, ours, what);
}

bool allocated(const optrt::RuleKernels &kernels, const std::string &state) {
  return std::any_of(kernels.states.begin(), kernels.states.end(),
                     [&](const optrt::StateInfo &info) { return info.name == state; });
}

/// Steps the kernels and the interpreter side by side. A state the kernels
/// do not allocate (specialisation dropped it) is given to the interpreter
/// at its initial value, and must still hold it after every step.
void compareWithInterpreter(const Case &c, const std::map<std::string, double> &hyperValues,
                            const std::vector<size_t> &sizes, int steps, unsigned seed,
                            const std::vector<std::vector<size_t>> &shapes = {}) {
  SCOPED_TRACE("rule " + c.rule.name() + ", seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  Tensors tensors(sizes, rng);
  optrt::Optimizer optimizer(c.kernels, {2, 4096});
  optimizer.addGroup(tensors.pointers, sizes, hyperValues, shapes);
  Interpreter interpreter(c.rule);
  HyperValues hypers = interpreter.defaultHypers();
  for (const auto &[hyper, value] : hyperValues)
    interpreter.setHyper(hypers, hyper, value);
  auto name = [&](int id) { return c.rule.symbol(id).name; };

  for (int step = 1; step <= steps; ++step) {
    // The interpreter starts from exactly the kernels' state.
    std::vector<TensorState> states;
    for (size_t k = 0; k < sizes.size(); ++k) {
      std::vector<int64_t> shape = shapes.empty() ? std::vector<int64_t>{static_cast<int64_t>(sizes[k])}
                                                  : std::vector<int64_t>(shapes[k].begin(), shapes[k].end());
      TensorState state = interpreter.initTensor(
          std::vector<double>(tensors.pointers[k], tensors.pointers[k] + sizes[k]), hypers, shape);
      for (size_t s = 0; s < c.rule.states.size(); ++s)
        if (allocated(*c.kernels, name(c.rule.states[s]))) {
          auto span = optimizer.state(name(c.rule.states[s]), 0, k);
          state.states[s].assign(span.begin(), span.end());
        }
      for (size_t s = 0; s < c.rule.scalarStates.size(); ++s)
        if (allocated(*c.kernels, name(c.rule.scalarStates[s])))
          state.scalarStates[s] = optimizer.scalarState(name(c.rule.scalarStates[s]), 0, k);
      states.push_back(std::move(state));
    }
    std::vector<TensorState> before = states;
    std::vector<const float *> grads = tensors.drawGrads(rng, step);
    std::vector<std::vector<double>> gradsDouble;
    for (size_t k = 0; k < sizes.size(); ++k)
      gradsDouble.emplace_back(grads[k], grads[k] + sizes[k]);
    interpreter.step(states, gradsDouble, step, hypers);
    optimizer.step({grads});
    for (size_t k = 0; k < sizes.size(); ++k) {
      std::string where = "step " + std::to_string(step) + " tensor " + std::to_string(k);
      expectClose(before[k].param, states[k].param, tensors.pointers[k], where + " param");
      for (size_t s = 0; s < c.rule.states.size(); ++s) {
        std::string state = name(c.rule.states[s]);
        if (allocated(*c.kernels, state))
          expectClose(before[k].states[s], states[k].states[s], optimizer.state(state, 0, k).data(),
                      where + " state " + state);
        else
          EXPECT_EQ(states[k].states[s], before[k].states[s]) << where << ": unallocated " << state << " changed";
      }
      for (size_t s = 0; s < c.rule.scalarStates.size(); ++s) {
        std::string state = name(c.rule.scalarStates[s]);
        // Scalar states are computed in double on both sides; one that
        // reads a reduction (Prodigy's d) inherits the f32 rounding of the
        // reduction's terms in the kernels (about 4 roundings of 2^-24 each,
        // times the sum's cancellation, Σ|t| / |Σt|, a few tens on random
        // data): 2^-17 relative bounds that; 4.6e-9 measured. Without
        // reductions they agree to the last bits.
        if (allocated(*c.kernels, state) && !c.kernels->reductions.empty())
          EXPECT_NEAR(optimizer.scalarState(state, 0, k), states[k].scalarStates[s],
                      0x1p-17 * std::abs(states[k].scalarStates[s]))
              << where << ": scalar " << state;
        else if (allocated(*c.kernels, state))
          EXPECT_DOUBLE_EQ(optimizer.scalarState(state, 0, k), states[k].scalarStates[s]);
        else
          EXPECT_EQ(states[k].scalarStates[s], before[k].scalarStates[s]) << where << ": unallocated " << state;
      }
    }
    if (::testing::Test::HasFailure())
      return;
  }
}

void compareWithInterpreter(const std::string &name, const std::vector<size_t> &sizes, int steps,
                            unsigned seed, const std::vector<std::vector<size_t>> &shapes = {}) {
  compareWithInterpreter(compiled(name), test::kBranchHypers.at(name), sizes, steps, seed, shapes);
}

class EveryRule : public ::testing::TestWithParam<std::string> {};

TEST_P(EveryRule, MatchesInterpreterOnEdgeSizes) {
  compareWithInterpreter(GetParam(), {1, 7, 15, 16, 17, 1000003}, 2, 2026);
}

TEST_P(EveryRule, MatchesInterpreterOnFiftyOddTensors) {
  std::mt19937 rng(7);
  std::vector<size_t> sizes;
  for (int k = 0; k < 50; ++k)
    sizes.push_back(1 + rng() % 300);
  // Eight steps: RAdam's rectified branch starts at step 6.
  compareWithInterpreter(GetParam(), sizes, 8, 11);
}

/// Matrices as the runtime cuts them (4096-element chunks of whole rows):
/// 40 x 700 in chunks of 5 rows, 300 x 17 in two chunks, a stack of three
/// 5 x 7 matrices in one, a vector (one row), 2 x 1 x 16 (rows of one
/// element); row lengths with and without a 16-lane tail. Rules that read
/// tensors as matrices reduce their rows and columns; the others read
/// `rank`, `rows`, `cols` (mars branches on the rank).
TEST_P(EveryRule, MatchesInterpreterOnMatrices) {
  compareWithInterpreter(GetParam(), {28000, 105, 33, 5100, 32}, 4, 5,
                         {{40, 700}, {3, 5, 7}, {33}, {300, 17}, {2, 1, 16}});
}

/// Every library rule with kernels (test::kernelRules) but those with
/// inputs (test::kInputRules): Sophia
/// divides its momentum by the Hessian estimate, so where the momentum
/// cancels to below it f32 keeps fewer digits than this file's bound allows
/// (the peer's f32 too); InputTest.cpp bounds it with that term added.
std::vector<std::string> boundedRules() {
  std::vector<std::string> rules = test::kernelRules();
  for (const std::string &name : test::kInputRules)
    std::erase(rules, name);
  return rules;
}

INSTANTIATE_TEST_SUITE_P(Rules, EveryRule,
                         ::testing::ValuesIn(boundedRules()),
                         [](const auto &info) { return info.param; });

/// Parameters and states after three steps, bit for bit, for 1, 2 and 3
/// threads: the chunk partition and the order reductions combine in do not
/// depend on the thread count.
std::vector<float> runWithThreads(const std::string &name, unsigned threads) {
  const Case &c = compiled(name);
  std::mt19937 rng(99);
  Tensors tensors({1, 5000, 77777, 3}, rng);
  optrt::Optimizer optimizer(c.kernels, {threads, 1000});
  optimizer.addGroup(tensors.pointers, tensors.sizes, test::kBranchHypers.at(name));
  for (int step = 1; step <= 3; ++step)
    optimizer.step({tensors.drawGrads(rng, step)});
  std::vector<float> result = tensors.storage;
  for (size_t k = 0; k < tensors.sizes.size(); ++k)
    for (int id : c.rule.states) {
      auto span = optimizer.state(c.rule.symbol(id).name, 0, k);
      result.insert(result.end(), span.begin(), span.end());
    }
  return result;
}

TEST(Determinism, BitwiseIdenticalForOneTwoAndThreeThreads) {
  for (const char *name : {"lamb", "adamw", "ademamix", "adamw_clip", "prodigy"}) {
    SCOPED_TRACE(name);
    std::vector<float> one = runWithThreads(name, 1);
    for (unsigned threads : {2u, 3u}) {
      std::vector<float> many = runWithThreads(name, threads);
      ASSERT_EQ(one.size(), many.size());
      EXPECT_EQ(std::memcmp(one.data(), many.data(), one.size() * sizeof(float)), 0)
          << threads << " threads differ from 1";
    }
  }
}

TEST(Specialisation, FixedHyperMatchesFreeHyperAndCannotChange) {
  CheckedRule rule = loadRuleFile(std::string(OPTDSL_DSL_DIR) + "/adamw.opt");
  auto fixed = jitCompile(rule, {{"amsgrad", 0}});
  auto free = jitCompile(rule);
  std::mt19937 rngA(5), rngB(5);
  Tensors a({1000, 33}, rngA), b({1000, 33}, rngB);
  optrt::Optimizer withFixed(fixed, {1, 4096}), withFree(free, {1, 4096});
  withFixed.addGroup(a.pointers, a.sizes);
  withFree.addGroup(b.pointers, b.sizes);
  for (int step = 1; step <= 3; ++step) {
    withFixed.step({a.drawGrads(rngA, step)});
    withFree.step({b.drawGrads(rngB, step)});
  }
  EXPECT_EQ(std::memcmp(a.storage.data(), b.storage.data(), a.storage.size() * sizeof(float)), 0);
  EXPECT_THROW(withFixed.setHyper("amsgrad", 1), std::invalid_argument);
  EXPECT_NO_THROW(withFixed.setHyper("amsgrad", 0));
}

/// AdEMAMix with beta1 fixed to 0 keeps no fast EMA (as the reference):
/// `m1 = beta1 != 0 ? ... : m1` folds to a store of m1's own value, which is
/// dropped, and then nothing reads or writes m1, so it is not allocated.
TEST(Specialisation, AdemamixWithoutFastEmaAllocatesNoM1) {
  Case withoutFastEma{loadRuleFile(std::string(OPTDSL_DSL_DIR) + "/ademamix.opt"), nullptr};
  withoutFastEma.kernels = jitCompile(withoutFastEma.rule, {{"beta1", 0}});
  std::vector<std::string> states;
  for (const optrt::StateInfo &state : withoutFastEma.kernels->states)
    states.push_back(state.name);
  EXPECT_EQ(states, (std::vector<std::string>{"m2", "nu"}));

  std::mt19937 rng(3);
  Tensors tensors({4096, 1024}, rng); // whole cache lines: no arena padding
  optrt::Optimizer specialised(withoutFastEma.kernels, {1, 4096}), full(compiled("ademamix").kernels, {1, 4096});
  specialised.addGroup(tensors.pointers, tensors.sizes);
  full.addGroup(tensors.pointers, tensors.sizes);
  EXPECT_EQ(specialised.stateBytesPerParam(), 8.0);
  EXPECT_EQ(full.stateBytesPerParam(), 12.0);
  EXPECT_THROW(specialised.state("m1", 0, 0), std::invalid_argument);

  std::map<std::string, double> hypers = test::kBranchHypers.at("ademamix");
  hypers["beta1"] = 0;
  compareWithInterpreter(withoutFastEma, hypers, {1, 7, 15, 16, 17, 1000}, 3, 17);
}

/// A reduction that only feeds a scalar state needs no second pass over the
/// elements: the phase it would start has no work and is not run.
TEST(Phases, APhaseWithNothingToDoIsNotRun) {
  auto file = std::make_shared<const SourceFile>("lastsum.opt", R"(
    optimizer lastsum {
      scalar total = 0;
      param = param - 0.5 * grad;
      total = total + sum(grad);
    })");
  std::ostringstream diagnostics;
  std::optional<CheckedRule> rule = compileSource(file, diagnostics);
  ASSERT_TRUE(rule) << diagnostics.str();
  ASSERT_EQ(rule->numPhases, 2);
  Case lastSum{std::move(*rule), nullptr};
  lastSum.kernels = jitCompile(lastSum.rule);
  EXPECT_EQ(lastSum.kernels->numPhases, 1);
  compareWithInterpreter(lastSum, {}, {1, 17, 1000}, 3, 23);
}

Case compiledSource(const std::string &name, const std::string &text) {
  auto file = std::make_shared<const SourceFile>(name, text);
  std::ostringstream diagnostics;
  std::optional<CheckedRule> rule = compileSource(file, diagnostics);
  EXPECT_TRUE(rule) << diagnostics.str();
  Case c{std::move(*rule), nullptr};
  c.kernels = jitCompile(c.rule);
  return c;
}

/// A reduction inside another's argument is a reduction of a later phase,
/// as when a `let` names it: both forms compile to the same kernels'
/// results, and those match the interpreter (Language v2, "make them agree").
TEST(Phases, ReductionInsideAReductionEqualsTheLetForm) {
  Case inline_ = compiledSource("inline.opt", R"(
    optimizer centred {
      hyper lr = 0.1;
      param = param - lr * (grad - mean(grad)) / sqrt(mean((grad - mean(grad)) * (grad - mean(grad))) + 1e-8);
    })");
  Case named = compiledSource("named.opt", R"(
    optimizer centred {
      hyper lr = 0.1;
      let centre = mean(grad);
      let spread = mean((grad - centre) * (grad - centre));
      param = param - lr * (grad - centre) / sqrt(spread + 1e-8);
    })");
  ASSERT_EQ(inline_.rule.numPhases, 3);
  ASSERT_EQ(named.rule.numPhases, 3);
  compareWithInterpreter(inline_, {}, {1, 17, 1000}, 3, 29);

  std::mt19937 rng(31);
  std::vector<size_t> sizes{7, 1000};
  Tensors a(sizes, rng), b = a;
  for (size_t t = 0; t < sizes.size(); ++t) // the copy's pointers into its own storage
    b.pointers[t] = b.storage.data() + (a.pointers[t] - a.storage.data());
  optrt::Optimizer first(inline_.kernels), second(named.kernels);
  first.addGroup(a.pointers, sizes);
  second.addGroup(b.pointers, sizes);
  for (int step = 1; step <= 3; ++step) {
    std::vector<const float *> grads = a.drawGrads(rng, step);
    first.step({grads});
    second.step({grads});
  }
  EXPECT_EQ(0, std::memcmp(a.storage.data(), b.storage.data(), a.storage.size() * sizeof(float)));
}

/// floor, mod, atan2, cos, sin, tanh in the kernels (vectorised: libm per
/// lane for atan2 and tanh, LLVM's intrinsics for the rest) against the
/// interpreter, on tensors with a vector tail; mod of the step (uniform, f64)
/// and of elements (exact here: powers of two). Arguments stay well
/// conditioned: sin(grad * 1000) would turn the f32 rounding of its argument
/// alone (half an ulp of ~1e4) into a 5e-4 difference from float64.
TEST(Builtins, MathFunctionsMatchTheInterpreter) {
  Case c = compiledSource("functions.opt", R"(
    optimizer functions {
      hyper lr = 0.1;
      hyper period = 3;
      state m;
      m = 0.9 * m + 0.1 * grad;
      let cycle = 1 + mod(step, period);
      let direction = atan2(m, sqrt(m * m) + 1e-3) + tanh(grad * 100);
      let wave = cos(param) * sin(grad * 3) + floor(grad * 64) / 64 + mod(grad * 256, 0.5);
      param = param - lr * cycle * (direction + wave);
    })");
  compareWithInterpreter(c, {}, {1, 7, 15, 16, 17, 1000}, 4, 37);
}

/// Distance in units in the last place of f32 between `ours` and the f32
/// nearest to `exact`.
double ulpError(float ours, double exact) {
  float nearest = static_cast<float>(exact);
  if (ours == nearest)
    return 0;
  float ulp = std::nextafter(std::fabs(nearest), INFINITY) - std::fabs(nearest);
  return std::fabs(static_cast<double>(ours) - exact) / ulp;
}

/// One step of `param = EXPRESSION` (of param and grad) over every pair of
/// values, in the vector loop and its scalar tail; the largest error in
/// ulps against float64, and no NaN where float64 has none.
double largestUlpError(const std::string &expression, double (*exact)(double, double)) {
  Case c = compiledSource("f.opt", "optimizer f { param = " + expression + "; }");
  std::vector<float> values{0.0f, -0.0f, 1e-30f, -1e-30f, 1e-7f, 0.5f, -0.5f, 1.0f, -1.0f, 3.0f, -7.25f, 1e7f, -1e30f,
                            INFINITY, -INFINITY};
  std::mt19937 rng(41);
  std::uniform_real_distribution<float> exponent(-20, 20);
  std::bernoulli_distribution negative(0.5);
  for (int i = 0; i < 4000; ++i)
    values.push_back((negative(rng) ? -1 : 1) * std::exp2(exponent(rng)));
  std::vector<float> params, grads;
  for (float x : values)
    for (float y : values) {
      params.push_back(x);
      grads.push_back(y);
      if (params.size() == 3'000'001) // a scalar tail too
        break;
    }
  std::vector<float> before = params;
  optrt::Optimizer optimizer(c.kernels);
  optimizer.addGroup({params.data()}, {params.size()});
  optimizer.step({{grads.data()}});
  double worst = 0;
  for (size_t i = 0; i < params.size(); ++i) {
    double reference = exact(before[i], grads[i]);
    if (std::isnan(reference)) {
      EXPECT_TRUE(std::isnan(params[i])) << expression << " at param " << before[i] << ", grad " << grads[i];
      continue;
    }
    double error = ulpError(params[i], reference);
    EXPECT_FALSE(std::isnan(error)) << expression << " at param " << before[i] << ", grad " << grads[i] << ": "
                                    << params[i] << " against " << reference;
    if (error > worst && std::getenv("OPTDSL_SHOW_WORST"))
      std::cout << expression << " worst so far at param " << before[i] << ", grad " << grads[i] << ": "
                << params[i] << " against " << reference << " (" << error << " ulp)\n";
    worst = std::max(worst, error);
  }
  return worst;
}

// atan2 is the kernels' own f32 expansion (it vectorises; libm's would be
// called per lane): within 3 ulps of float64 (2.2 measured; CUDA's
// libdevice promises 2, glibc about 1) over signed zeros, tiny and huge
// values, infinities and 16M random pairs, IEEE's special values exact
// (atan2(0, 0) = 0, atan2(0, -0) = pi, atan2(inf, -inf) = 3pi/4). tanh is
// libm's (glibc: within 2 ulps).
TEST(Builtins, Atan2AndTanhWithinAFewUlps) {
  double atan2Error = largestUlpError("atan2(grad, param)", [](double x, double y) { return std::atan2(y, x); });
  double tanhError = largestUlpError("tanh(grad) + 0 * param", [](double x, double y) { return std::tanh(y) + 0 * x; });
  std::cout << "atan2: " << atan2Error << " ulp, tanh: " << tanhError << " ulp\n";
  EXPECT_LE(atan2Error, 3.0);
  EXPECT_LE(tanhError, 2.0);
}

/// `state s = f(param);` is set at the start of each group's first step
/// (0 before it, as a state torch creates on the first step does not exist
/// yet), from the params as they are then; later steps keep what the rule
/// stores. A group added later gets its own first step; an 8-bit state gets
/// the value quantised.
TEST(StateFromParam, SetOnEachGroupsFirstStep) {
  Case c = compiledSource("anchor.opt", R"(
    optimizer anchor {
      hyper lr = 0.5;
      state start = 2 * param + lr;
      start = start + 0;
      param = param - lr * grad;
    })");
  for (const std::string layout : {"f32", "state=q8"}) {
    SCOPED_TRACE(layout);
    auto kernels = layout == "f32" ? c.kernels : jitCompile(c.rule, {}, {layout});
    std::vector<float> first(5000), second(4097), grad(5000, 1.0f);
    for (size_t i = 0; i < first.size(); ++i)
      first[i] = 0.25f * static_cast<float>(i % 97) - 3;
    for (size_t i = 0; i < second.size(); ++i)
      second[i] = 1.5f - 0.125f * static_cast<float>(i % 31);
    std::vector<float> firstAtStart = first, secondAtStart = second;
    optrt::OptimizerOptions options;
    options.layout = layout;
    optrt::Optimizer optimizer(kernels, options);
    optimizer.addGroup({first.data()}, {first.size()});
    EXPECT_EQ(optimizer.readState("start", 0, 0), std::vector<float>(first.size(), 0.0f));
    // q8: within 1% of the largest value (2 * 45 + 0.5): bitsandbytes'
    // dynamic map is spaced at most 1/128 of the block's absmax, so a value
    // is off by half that at most.
    auto expectStart = [&](int group, const std::vector<float> &params) {
      std::vector<float> start = optimizer.readState("start", group, 0);
      double tolerance = layout == "f32" ? 0 : 0.01 * (2 * 45 + 0.5);
      for (size_t i = 0; i < params.size(); ++i)
        ASSERT_LE(std::fabs(start[i] - (2 * params[i] + 0.5f)), tolerance) << "element " << i;
    };
    optimizer.step({{grad.data()}});
    expectStart(0, firstAtStart);
    EXPECT_EQ(first[0], firstAtStart[0] - 0.5f) << "the step itself ran";
    optimizer.step({{grad.data()}});
    expectStart(0, firstAtStart);
    optimizer.addGroup({second.data()}, {second.size()});
    optimizer.step({{grad.data()}, {grad.data()}});
    expectStart(0, firstAtStart);
    expectStart(1, secondAtStart);
  }
}

/// initial(lr) is lr as the group was added (a hidden scalar state,
/// `initial_lr`, per tensor): later changes of lr (schedules, setHyper) do
/// not reach it, each group has its own, and checkpoints carry it.
TEST(Initial, KeepsTheHypersValueFromWhenTheGroupWasAdded) {
  Case c = compiledSource("scaled.opt", R"(
    optimizer scaled {
      hyper lr = 0.1;
      param = param - lr / initial(lr) * grad;
    })");
  std::vector<float> first(100, 10.0f), second(50, 10.0f), grad(100, 1.0f);
  optrt::Optimizer optimizer(c.kernels);
  optimizer.addGroup({first.data()}, {first.size()}, {{"lr", 0.2}});
  optimizer.step({{grad.data()}});
  EXPECT_EQ(first[0], 9.0f); // 0.2 / 0.2
  optimizer.setHyper("lr", 0.1);
  optimizer.addGroup({second.data()}, {second.size()}, {{"lr", 0.4}});
  optimizer.step({{grad.data()}, {grad.data()}});
  EXPECT_EQ(first[0], 8.5f); // 0.1 / 0.2
  EXPECT_EQ(second[0], 9.0f); // added with lr 0.4: 0.4 / 0.4
  optimizer.setHyper("lr", 0.1, 1);
  optimizer.step({{grad.data()}, {grad.data()}});
  EXPECT_EQ(first[0], 8.0f);   // 0.1 / 0.2
  EXPECT_EQ(second[0], 8.75f); // 0.1 / 0.4
  EXPECT_EQ(optimizer.scalarState("initial_lr", 0, 0), 0.2);
  EXPECT_EQ(optimizer.scalarState("initial_lr", 1, 0), 0.4);
  compareWithInterpreter(c, {{"lr", 0.05}}, {1, 17, 1000}, 3, 43);
}

/// group_norm is over the group's tensors only: one optimizer with two
/// groups steps each group bit for bit as an optimizer holding only that
/// group does; and the clip binds (the norm is above max_grad_norm).
TEST(GroupWide, EachGroupReducesOverItsOwnTensors) {
  const Case &c = compiled("adamw_clip");
  std::mt19937 rng(47);
  std::vector<size_t> sizesA{1, 5000, 77}, sizesB{300, 2};
  Tensors a(sizesA, rng), b(sizesB, rng), aAlone = a, bAlone = b;
  for (size_t t = 0; t < sizesA.size(); ++t)
    aAlone.pointers[t] = aAlone.storage.data() + (a.pointers[t] - a.storage.data());
  for (size_t t = 0; t < sizesB.size(); ++t)
    bAlone.pointers[t] = bAlone.storage.data() + (b.pointers[t] - b.storage.data());
  std::map<std::string, double> hypers{{"max_grad_norm", 0.5}};
  optrt::Optimizer both(c.kernels, {2, 1000}), onlyA(c.kernels, {2, 1000}), onlyB(c.kernels, {2, 1000});
  both.addGroup(a.pointers, sizesA, hypers);
  both.addGroup(b.pointers, sizesB, hypers);
  onlyA.addGroup(aAlone.pointers, sizesA, hypers);
  onlyB.addGroup(bAlone.pointers, sizesB, hypers);
  for (int step = 1; step <= 3; ++step) {
    std::vector<const float *> gradsA = a.drawGrads(rng, step), gradsB = b.drawGrads(rng, step);
    both.step({gradsA, gradsB});
    onlyA.step({gradsA});
    onlyB.step({gradsB});
  }
  EXPECT_EQ(0, std::memcmp(a.storage.data(), aAlone.storage.data(), a.storage.size() * sizeof(float)));
  EXPECT_EQ(0, std::memcmp(b.storage.data(), bAlone.storage.data(), b.storage.size() * sizeof(float)));
  // Without clipping (the same data drawn again) the params differ: the
  // norm was above 0.5.
  std::mt19937 again(47);
  Tensors reference(sizesA, again);
  optrt::Optimizer loose(c.kernels, {2, 1000});
  loose.addGroup(reference.pointers, sizesA, {{"max_grad_norm", 1e30}});
  Tensors skip(sizesB, again);
  for (int step = 1; step <= 3; ++step) {
    loose.step({reference.drawGrads(again, step)});
    skip.drawGrads(again, step);
  }
  EXPECT_NE(0, std::memcmp(a.storage.data(), reference.storage.data(), a.storage.size() * sizeof(float)));
}

/// A scalar per group (`scalar d[group]`: Prodigy's d and its companions)
/// is one value for the group: every tensor of the group holds the same
/// bits after every step (sema let it take group-wide values only), while
/// two groups on other data part ways.
TEST(GroupScalar, EveryTensorOfTheGroupHoldsTheSameBits) {
  const Case &c = compiled("prodigy");
  std::mt19937 rng(53);
  std::vector<size_t> sizesA{3000, 17, 70001}, sizesB{500, 4096};
  Tensors a(sizesA, rng), b(sizesB, rng);
  optrt::Optimizer optimizer(c.kernels, {2, 1000});
  optimizer.addGroup(a.pointers, sizesA);
  optimizer.addGroup(b.pointers, sizesB);
  auto bitsOf = [](double x) {
    uint64_t bits;
    std::memcpy(&bits, &x, sizeof bits);
    return bits;
  };
  // The same gradients every step: the params travel in one direction, and
  // d grows (random ones would leave it near d0 for long).
  std::vector<const float *> gradsA = a.drawGrads(rng, 1), gradsB = b.drawGrads(rng, 1);
  for (int step = 1; step <= 6; ++step) {
    optimizer.step({gradsA, gradsB});
    for (const char *name : {"d", "d_max", "d_numerator"}) {
      for (size_t t = 1; t < sizesA.size(); ++t)
        EXPECT_EQ(bitsOf(optimizer.scalarState(name, 0, t)), bitsOf(optimizer.scalarState(name, 0, 0)))
            << name << " of tensor " << t << ", step " << step;
      EXPECT_EQ(bitsOf(optimizer.scalarState(name, 1, 1)), bitsOf(optimizer.scalarState(name, 1, 0)))
          << name << ", step " << step;
    }
  }
  // d has grown from d0 = 1e-6, each group by its own data.
  EXPECT_GT(optimizer.scalarState("d", 0, 0), 1e-6);
  EXPECT_NE(optimizer.scalarState("d", 0, 0), optimizer.scalarState("d", 1, 0));
}

TEST(Jit, UnknownFixedHyperIsNamed) {
  CheckedRule rule = loadRuleFile(std::string(OPTDSL_DSL_DIR) + "/adamw.opt");
  try {
    jitCompile(rule, {{"amsgrd", 0}});
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument &e) {
    EXPECT_NE(std::string(e.what()).find("'amsgrd'"), std::string::npos) << e.what();
  }
}

} // namespace
} // namespace optdsl
