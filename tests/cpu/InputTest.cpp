// Inputs besides the gradient (`input NAME;`, dsl/README.md) through the
// runtime: Sophia's kernels against the interpreter with the input on some
// steps, how a step takes inputs (StepOptions::inputs) in the grad's storage
// dtype, and every misuse refused by name with nothing changed. The golden
// case sophia_refresh checks the rule against the peer.
#include "optdsl/Interpreter.h"
#include "optdsl/JIT.h"
#include "optdsl/Sema.h"
#include "optrt/Optimizer.h"
#include "optrt/Storage.h"

#include "common/CheckedText.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <sstream>
#include <stdexcept>

namespace optdsl {
namespace {

std::shared_ptr<const optrt::RuleKernels> compileText(const std::string &text,
                                                      const std::vector<std::string> &layouts = {"f32"}) {
  return jitCompile(test::checkedText(text), {}, layouts);
}

std::shared_ptr<const optrt::RuleKernels> sophia(const std::vector<std::string> &layouts = {"f32"}) {
  return jitCompile(loadRuleFile(std::string(OPTDSL_DSL_DIR) + "/sophia.opt"), {}, layouts);
}

std::vector<float> draw(std::mt19937 &rng, size_t n, float scale) {
  std::normal_distribution<float> normal;
  std::vector<float> values(n);
  for (float &x : values)
    x = normal(rng) * scale;
  return values;
}

/// Rounds to bf16 and back, so the same values can be given as f32 and bf16.
std::vector<float> bf16Exact(std::vector<float> values) {
  std::vector<uint16_t> bits(values.size());
  optrt::encodeF32(optrt::Dtype::BF16, values, bits.data(), nullptr);
  for (size_t i = 0; i < values.size(); ++i) {
    uint32_t word = static_cast<uint32_t>(bits[i]) << 16;
    std::memcpy(&values[i], &word, sizeof word);
  }
  return values;
}

std::vector<uint16_t> asBf16(const std::vector<float> &values) {
  std::vector<uint16_t> bits(values.size());
  optrt::encodeF32(optrt::Dtype::BF16, values, bits.data(), nullptr);
  return bits;
}

// Sophia's f32 kernels against the float64 interpreter, each step from the
// kernels' own state (as CpuKernelTest), with the Hessian estimate given on
// two steps of three. The bound is CpuKernelTest's plus what dividing the
// momentum by the Hessian term adds: m = beta1 m + (1 - beta1) g rounds at
// the magnitude of its terms, and an unclamped ratio |m| / den carries that
// rounding divided by den (where m cancels to below den, f32 keeps few of
// its digits; the peer's f32 does the same).
TEST(Inputs, SophiaKernelsMatchTheInterpreter) {
  CheckedRule rule = loadRuleFile(std::string(OPTDSL_DSL_DIR) + "/sophia.opt");
  auto kernels = jitCompile(rule);
  const double lr = 1e-3, beta1 = 0.965, rho = 0.04, bs = 8; // the defaults but lr and bs
  std::map<std::string, double> hypers{{"lr", lr}, {"bs", bs}};
  std::vector<size_t> sizes{1, 7, 17, 300, 100003};
  std::mt19937 rng(11);
  std::vector<std::vector<float>> params;
  std::vector<float *> pointers;
  for (size_t n : sizes)
    pointers.push_back(params.emplace_back(draw(rng, n, 1.0f)).data());
  optrt::Optimizer optimizer(kernels, {2, 4096});
  optimizer.addGroup(pointers, sizes, hypers);
  Interpreter interpreter(rule);
  HyperValues values = interpreter.defaultHypers();
  for (const auto &[name, value] : hypers)
    interpreter.setHyper(values, name, value);
  for (int step = 1; step <= 6; ++step) {
    std::vector<TensorState> states;
    std::vector<std::vector<float>> grads, estimates;
    std::vector<std::vector<double>> gradsDouble;
    StepInputs inputs(1);
    optrt::StepOptions options;
    bool given = step % 3 != 0;
    if (given)
      options.inputs = {{"hessian_estimate", {{}}}};
    for (size_t k = 0; k < sizes.size(); ++k) {
      TensorState state = interpreter.initTensor({params[k].begin(), params[k].end()}, values);
      for (size_t s = 0; s < 2; ++s) {
        auto span = optimizer.state(rule.symbol(rule.states[s]).name, 0, k);
        state.states[s].assign(span.begin(), span.end());
      }
      states.push_back(std::move(state));
      float scale = std::pow(10.0f, static_cast<float>((k + step) % 4) - 3.0f);
      grads.push_back(draw(rng, sizes[k], scale));
      gradsDouble.emplace_back(grads[k].begin(), grads[k].end());
      // g_hat * g_hat, g_hat at the gradient's scale (SophiaG's estimate).
      std::vector<float> &estimate = estimates.emplace_back(draw(rng, sizes[k], scale));
      for (float &x : estimate)
        x *= x;
      if (given) {
        inputs[0].emplace_back(estimate.begin(), estimate.end());
        options.inputs[0].perGroup[0].push_back(estimate.data());
      }
    }
    std::vector<TensorState> before = states;
    std::vector<const float *> gradPointers;
    for (const auto &g : grads)
      gradPointers.push_back(g.data());
    interpreter.step(states, gradsDouble, step, values, inputs);
    optimizer.step({gradPointers}, options);
    for (size_t k = 0; k < sizes.size(); ++k) {
      SCOPED_TRACE("step " + std::to_string(step) + " tensor " + std::to_string(k));
      const std::vector<double> &m0 = before[k].states[0], &p0 = before[k].param;
      const std::vector<double> &ref = states[k].param, &m1 = states[k].states[0], &h1 = states[k].states[1];
      double largestChange = 0;
      for (size_t i = 0; i < ref.size(); ++i)
        largestChange = std::max(largestChange, std::fabs(ref[i] - p0[i]));
      size_t bad = 0;
      for (size_t i = 0; i < ref.size(); ++i) {
        double den = rho * bs * h1[i] + 1e-15;
        double momentumRounding = 4 * std::ldexp(beta1 * std::fabs(m0[i]) + (1 - beta1) * std::fabs(gradsDouble[k][i]), -24);
        double ratioError = std::fabs(m1[i]) < den ? momentumRounding / den : 0;
        double bound = 1e-5 * largestChange + 4 * std::ldexp(std::fabs(ref[i]), -24) + lr * ratioError;
        if (!(std::fabs(params[k][i] - ref[i]) <= bound) && bad++ < 3)
          ADD_FAILURE() << "param " << i << ": kernel " << params[k][i] << ", interpreter " << ref[i] << ", bound "
                        << bound;
      }
      EXPECT_EQ(bad, 0u);
      auto h = optimizer.state("hessian", 0, k);
      for (size_t i = 0; i < h1.size(); ++i)
        ASSERT_LE(std::fabs(h[i] - h1[i]), 4 * std::ldexp(std::fabs(h1[i]), -24)) << "hessian " << i;
    }
  }
}

// Gradients and inputs stored as bf16 are read as the f32 values they hold:
// a bf16-grad run equals an f32 run on the same (bf16-exact) values, bit for
// bit, with the input on some steps and not others.
TEST(Inputs, Bf16GradientsAndInputsMatchF32OnTheSameValues) {
  std::mt19937 rng(5);
  std::vector<float> params32 = draw(rng, 1000, 1.0f), params16 = params32;
  optrt::Optimizer f32(sophia(), {1, 256});
  optrt::Optimizer bf16(sophia({"grad=bf16"}), {1, 256, "grad=bf16"});
  std::map<std::string, double> hypers{{"bs", 8}, {"lr", 1e-3}};
  f32.addGroup({params32.data()}, {1000}, hypers);
  bf16.addGroup({params16.data()}, {1000}, hypers);
  for (int step = 1; step <= 6; ++step) {
    std::vector<float> grad = bf16Exact(draw(rng, 1000, 0.1f));
    std::vector<float> estimate = bf16Exact(draw(rng, 1000, 1e-2f));
    for (float &x : estimate)
      x = x * x;
    estimate = bf16Exact(estimate);
    std::vector<uint16_t> grad16 = asBf16(grad), estimate16 = asBf16(estimate);
    optrt::StepOptions options32, options16;
    if (step % 3 != 0) {
      options32.inputs = {{"hessian_estimate", {{estimate.data()}}}};
      options16.inputs = {{"hessian_estimate", {{estimate16.data()}}}};
    }
    f32.step({{grad.data()}}, options32);
    bf16.stepStored({{grad16.data()}}, options16);
  }
  EXPECT_EQ(std::memcmp(params32.data(), params16.data(), params32.size() * sizeof(float)), 0);
  for (const char *state : {"exp_avg", "hessian"}) {
    auto a = f32.state(state, 0, 0), b = bf16.state(state, 0, 0);
    EXPECT_TRUE(std::equal(a.begin(), a.end(), b.begin(), b.end())) << state;
  }
  // And the input did reach the state: the Hessian EMA is not zero.
  auto hessian = f32.state("hessian", 0, 0);
  EXPECT_NE(*std::max_element(hessian.begin(), hessian.end()), 0.0f);
}

// One group given the input and another not in the same step: each group's
// given() is its own.
TEST(Inputs, EachGroupIsGivenOrNot) {
  std::mt19937 rng(6);
  std::vector<float> a = draw(rng, 100, 1.0f), b = draw(rng, 50, 1.0f);
  optrt::Optimizer optimizer(sophia(), {1});
  optimizer.addGroup({a.data()}, {100});
  optimizer.addGroup({b.data()}, {50});
  std::vector<float> ga = draw(rng, 100, 0.1f), gb = draw(rng, 50, 0.1f), ha(100, 0.5f);
  optrt::StepOptions options;
  options.inputs = {{"hessian_estimate", {{ha.data()}, {}}}};
  optimizer.step({{ga.data()}, {gb.data()}}, options);
  auto hessianA = optimizer.state("hessian", 0, 0), hessianB = optimizer.state("hessian", 1, 0);
  EXPECT_FLOAT_EQ(hessianA[0], static_cast<float>(1 - 0.99) * 0.5f);
  EXPECT_EQ(*std::max_element(hessianB.begin(), hessianB.end()), 0.0f);
}

class InputErrors : public ::testing::Test {
protected:
  void expectRefused(optrt::Optimizer &optimizer, const optrt::StepOptions &options, const std::string &text,
                     bool logicError = false) {
    std::vector<float> params(param_.begin(), param_.end());
    try {
      optimizer.step({{grad_.data()}}, options);
      ADD_FAILURE() << "no exception for: " << text;
    } catch (const std::invalid_argument &e) {
      EXPECT_FALSE(logicError) << e.what();
      EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
    } catch (const std::logic_error &e) {
      EXPECT_TRUE(logicError) << e.what();
      EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
    }
    EXPECT_EQ(param_, params) << "the params changed";
    EXPECT_EQ(optimizer.stepCount(), 0);
  }

  std::vector<float> param_ = std::vector<float>(64, 1.0f), grad_ = std::vector<float>(64, 0.5f),
                     input_ = std::vector<float>(64, 0.25f);
};

TEST_F(InputErrors, EveryMisuseIsRefusedByNameAndChangesNothing) {
  optrt::Optimizer optimizer(sophia());
  optimizer.addGroup({param_.data()}, {64});
  auto with = [&](std::vector<optrt::StepInput> inputs) {
    optrt::StepOptions options;
    options.inputs = std::move(inputs);
    return options;
  };
  expectRefused(optimizer, with({{"hessian", {{input_.data()}}}}),
                "rule 'sophia' has no input 'hessian' (its inputs: 'hessian_estimate')");
  expectRefused(optimizer, with({{"hessian_estimate", {{input_.data()}}}, {"hessian_estimate", {{input_.data()}}}}),
                "input 'hessian_estimate' is given twice");
  expectRefused(optimizer, with({{"hessian_estimate", {{input_.data()}, {input_.data()}}}}),
                "input 'hessian_estimate' has values for 2 groups but the optimizer has 1");
  expectRefused(optimizer, with({{"hessian_estimate", {{input_.data(), input_.data()}}}}),
                "input 'hessian_estimate' has 2 tensors for group 0, which has 1");
  expectRefused(optimizer, with({{"hessian_estimate", {{nullptr}}}}),
                "input 'hessian_estimate' of tensor 0 of group 0 is null");
  EXPECT_THROW(optimizer.setHyper("given(hessian_estimate)", 1), std::invalid_argument)
      << "the step sets given(), never the user";
}

TEST_F(InputErrors, ARuleWithoutInputsRefusesOne) {
  optrt::Optimizer optimizer(compileText("optimizer plain { hyper lr = 0.1; param = param - lr * grad; }"));
  optimizer.addGroup({param_.data()}, {64});
  optrt::StepOptions options;
  options.inputs = {{"h", {{input_.data()}}}};
  expectRefused(optimizer, options, "rule 'plain' has no input 'h' (it takes none)");
}

TEST_F(InputErrors, ARequiredInputMustComeWithEveryStep) {
  optrt::Optimizer optimizer(
      compileText("optimizer needs { input h; hyper lr = 0.1; param = param - lr * h * grad; }"));
  ASSERT_EQ(optimizer.rule().inputs.size(), 1u);
  EXPECT_FALSE(optimizer.rule().inputs[0].optional);
  optimizer.addGroup({param_.data()}, {64});
  expectRefused(optimizer, {},
                "rule 'needs' needs input 'h' at every step (it never tests given(h)), and group 0 has none");
  optrt::StepOptions options;
  options.inputs = {{"h", {{input_.data()}}}};
  optimizer.step({{grad_.data()}}, options);
  EXPECT_FLOAT_EQ(param_[0], 1.0f - 0.1f * 0.25f * 0.5f);
}

// The state stream holds what the optimizer keeps: not the inputs, which
// are the caller's.
TEST(Inputs, CheckpointsHoldTheStatesAndContinueBitForBit) {
  std::mt19937 rng(8);
  std::vector<float> a = draw(rng, 300, 1.0f), b = a;
  optrt::Optimizer first(sophia(), {1, 128});
  first.addGroup({a.data()}, {300}, {{"bs", 8}});
  std::vector<float> grad = draw(rng, 300, 0.1f), estimate(300, 1e-3f);
  optrt::StepOptions given;
  given.inputs = {{"hessian_estimate", {{estimate.data()}}}};
  first.step({{grad.data()}}, given);
  std::stringstream saved;
  first.saveState(saved);
  b = a;
  optrt::Optimizer second(sophia(), {1, 128});
  second.addGroup({b.data()}, {300}, {{"bs", 8}});
  second.loadState(saved);
  for (int step = 0; step < 3; ++step) {
    first.step({{grad.data()}}, step == 1 ? given : optrt::StepOptions{});
    second.step({{grad.data()}}, step == 1 ? given : optrt::StepOptions{});
  }
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0);
}

} // namespace
} // namespace optdsl
