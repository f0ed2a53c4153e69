// Interpreter unit tests. Each rule of the library is run on random small
// tensors and compared, step by step, with its peer's update written out here
// in plain C++ (from torch.optim 1.13, the AdEMAMix reference, lion-pytorch
// and timm's Lamb), independently of the .opt file. Then the interpreter's
// own contract: hypers, gradient checks, broadcasting, conditionals and
// reductions.
#include "optdsl/Interpreter.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <iomanip>
#include <limits>
#include <map>
#include <optional>
#include <memory>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>

namespace optdsl {
namespace {

using Vec = std::vector<double>;
using Hypers = std::map<std::string, double>;

constexpr double kRelative = 1e-12;

const CheckedRule &libraryRule(const std::string &name) {
  static std::map<std::string, std::unique_ptr<CheckedRule>> cache;
  std::unique_ptr<CheckedRule> &rule = cache[name];
  if (!rule)
    rule = std::make_unique<CheckedRule>(
        loadRuleFile(std::string(OPTDSL_DSL_DIR) + "/" + name + ".opt"));
  return *rule;
}

/// Compiles a rule from text; fails the test (and returns nullopt) on errors.
std::optional<CheckedRule> compile(const std::string &text) {
  auto file = std::make_shared<const SourceFile>("test.opt", text);
  std::ostringstream diagnostics;
  std::optional<CheckedRule> rule = compileSource(file, diagnostics);
  EXPECT_TRUE(rule) << diagnostics.str();
  return rule;
}

/// A fixed seed, so that a failure reproduces, plus a fresh one each run;
/// OPTDSL_TEST_SEED=N runs only seed N.
std::vector<uint32_t> seeds(uint32_t fixed) {
  if (const char *env = std::getenv("OPTDSL_TEST_SEED"))
    return {static_cast<uint32_t>(std::strtoul(env, nullptr, 10))};
  return {fixed, std::random_device{}()};
}

double logUniform(std::mt19937 &rng, double lo, double hi) {
  return std::exp(std::uniform_real_distribution<double>(std::log(lo), std::log(hi))(rng));
}

double randomSign(std::mt19937 &rng) {
  return std::bernoulli_distribution(0.5)(rng) ? 1.0 : -1.0;
}

/// Non-zero values around `scale`, spread over two decades either way.
Vec randomNonZero(std::mt19937 &rng, size_t n, double scale) {
  Vec values(n);
  for (double &x : values)
    x = randomSign(rng) * scale * logUniform(rng, 1e-2, 1e2);
  return values;
}

/// A gradient: a random overall scale (1e-4 .. 1e2), varied per element, and
/// now and then an exact zero.
Vec randomGradient(std::mt19937 &rng, size_t n) {
  Vec grad = randomNonZero(rng, n, logUniform(rng, 1e-4, 1e2));
  for (double &g : grad)
    if (std::bernoulli_distribution(0.05)(rng))
      g = 0;
  return grad;
}

/// Element i of `actual` must be within kRelative of `expected`, relative to
/// the larger magnitude of the value before and after the step (a value that
/// nearly cancels, as in param - update, is judged on the scale of its terms).
::testing::AssertionResult close(const Vec &actual, const Vec &expected, const Vec &before) {
  if (actual.size() != expected.size())
    return ::testing::AssertionFailure()
           << "size " << actual.size() << ", expected " << expected.size();
  for (size_t i = 0; i < actual.size(); ++i) {
    double a = actual[i], e = expected[i];
    if (std::isnan(e) || std::isnan(a)) {
      if (std::isnan(e) && std::isnan(a))
        continue;
      return ::testing::AssertionFailure() << "element " << i << ": " << a << ", expected " << e;
    }
    double scale = std::max(std::fabs(e), i < before.size() ? std::fabs(before[i]) : 0.0);
    if (!(std::fabs(a - e) <= kRelative * scale))
      return ::testing::AssertionFailure()
             << std::setprecision(17) << "element " << i << " of " << actual.size() << ": " << a
             << ", expected " << e << " (relative error " << std::fabs(a - e) / scale << ")";
  }
  return ::testing::AssertionSuccess();
}

double hyper(const Hypers &hypers, const char *name, double fallback) {
  auto it = hypers.find(name);
  return it == hypers.end() ? fallback : it->second;
}

// --- The peers, one tensor each ---------------------------------------------

/// One tensor's optimizer as its peer implements it. Hypers not given take
/// the peer's defaults, written here (not read from the rule).
struct Reference {
  virtual ~Reference() = default;
  virtual void step(Vec &param, const Vec &grad, int64_t t, const Hypers &h) = 0;
  /// The states to compare, by the rule's names.
  virtual std::map<std::string, Vec> states() const = 0;
  virtual std::map<std::string, double> scalars() const { return {}; }
};

using Factory = std::function<std::unique_ptr<Reference>(size_t size, const Hypers &h)>;

/// torch.optim.SGD (_single_tensor_sgd).
struct Sgd : Reference {
  Vec buf;
  bool hasBuf = false;
  bool momentumOn = false;
  void step(Vec &p, const Vec &g, int64_t, const Hypers &h) override {
    double lr = hyper(h, "lr", 0.01), momentum = hyper(h, "momentum", 0);
    double dampening = hyper(h, "dampening", 0), wd = hyper(h, "weight_decay", 0);
    bool nesterov = hyper(h, "nesterov", 0) != 0;
    Vec d = g;
    if (wd != 0)
      for (size_t i = 0; i < p.size(); ++i)
        d[i] = g[i] + wd * p[i];
    momentumOn = momentum != 0;
    if (momentum != 0) {
      if (!hasBuf) {
        buf = d; // torch.clone(d_p).detach()
        hasBuf = true;
      } else {
        for (size_t i = 0; i < p.size(); ++i)
          buf[i] = buf[i] * momentum + (1 - dampening) * d[i];
      }
      if (nesterov)
        for (size_t i = 0; i < p.size(); ++i)
          d[i] = d[i] + momentum * buf[i];
      else
        d = buf;
    }
    for (size_t i = 0; i < p.size(); ++i)
      p[i] = p[i] + -lr * d[i];
  }
  std::map<std::string, Vec> states() const override {
    if (!momentumOn)
      return {};
    return {{"momentum_buffer", buf}};
  }
};

/// torch.optim.Adam (L2) and AdamW (decoupled), with AMSGrad.
struct Adam : Reference {
  bool decoupled;
  Vec m, v, vmax;
  Adam(size_t n, bool decoupled) : decoupled(decoupled), m(n), v(n), vmax(n) {}
  void step(Vec &p, const Vec &grad, int64_t t, const Hypers &h) override {
    double lr = hyper(h, "lr", 1e-3), b1 = hyper(h, "beta1", 0.9), b2 = hyper(h, "beta2", 0.999);
    double eps = hyper(h, "eps", 1e-8), wd = hyper(h, "weight_decay", decoupled ? 1e-2 : 0);
    bool amsgrad = hyper(h, "amsgrad", 0) != 0;
    Vec g = grad;
    for (size_t i = 0; i < p.size(); ++i) {
      if (decoupled)
        p[i] = p[i] * (1 - lr * wd);
      else if (wd != 0)
        g[i] = grad[i] + wd * p[i];
    }
    double bc1 = 1 - std::pow(b1, static_cast<double>(t));
    double bc2 = 1 - std::pow(b2, static_cast<double>(t));
    double stepSize = lr / bc1, bc2Sqrt = std::sqrt(bc2);
    for (size_t i = 0; i < p.size(); ++i) {
      m[i] = m[i] * b1 + (1 - b1) * g[i];
      v[i] = v[i] * b2 + (1 - b2) * g[i] * g[i];
      double denom;
      if (amsgrad) {
        vmax[i] = std::max(vmax[i], v[i]);
        denom = std::sqrt(vmax[i]) / bc2Sqrt + eps;
      } else {
        denom = std::sqrt(v[i]) / bc2Sqrt + eps;
      }
      p[i] = p[i] + -stepSize * (m[i] / denom);
    }
  }
  std::map<std::string, Vec> states() const override {
    // Without AMSGrad the maximum is never touched: it stays 0.
    return {{"exp_avg", m}, {"exp_avg_sq", v}, {"max_exp_avg_sq", vmax}};
  }
};

/// apple/ml-ademamix AdEMAMix; warm-ups of 0 stand for the reference's None.
struct Ademamix : Reference {
  Vec fast, slow, sq;
  Ademamix(size_t n) : fast(n), slow(n), sq(n) {}
  static double linearWarmup(double step, double end, double start, double warmup) {
    if (step < warmup) {
      double a = step / warmup;
      return (1.0 - a) * start + a * end;
    }
    return end;
  }
  static double halfLifeWarmup(double step, double end, double start, double warmup) {
    auto f = [](double beta) { return std::log(0.5) / std::log(beta + 1e-8) - 1; };
    auto fInv = [](double x) { return std::pow(0.5, 1 / (x + 1)); };
    if (step < warmup) {
      double a = step / warmup;
      return fInv((1.0 - a) * f(start) + a * f(end));
    }
    return end;
  }
  void step(Vec &p, const Vec &grad, int64_t t, const Hypers &h) override {
    double lr = hyper(h, "lr", 1e-3), b1 = hyper(h, "beta1", 0.9), b2 = hyper(h, "beta2", 0.999);
    double b3Final = hyper(h, "beta3", 0.9999), alphaFinal = hyper(h, "alpha", 2.0);
    double eps = hyper(h, "eps", 1e-8), lambda = hyper(h, "weight_decay", 0);
    double alphaWarmup = hyper(h, "alpha_warmup", 0), beta3Warmup = hyper(h, "beta3_warmup", 0);
    double step = static_cast<double>(t);
    double bc1 = 1 - std::pow(b1, step), bc2 = 1 - std::pow(b2, step);
    double alpha = alphaWarmup != 0 ? linearWarmup(step, alphaFinal, 0, alphaWarmup) : alphaFinal;
    double b3 = beta3Warmup != 0 ? halfLifeWarmup(step, b3Final, b1, beta3Warmup) : b3Final;
    for (size_t i = 0; i < p.size(); ++i) {
      double fastValue;
      if (b1 != 0) {
        fast[i] = fast[i] * b1 + (1 - b1) * grad[i];
        fastValue = fast[i];
      } else {
        fastValue = grad[i];
      }
      slow[i] = slow[i] * b3 + (1 - b3) * grad[i];
      sq[i] = sq[i] * b2 + (1 - b2) * grad[i] * grad[i];
      double denom = std::sqrt(sq[i]) / std::sqrt(bc2) + eps;
      double update = (fastValue / bc1 + alpha * slow[i]) / denom;
      update = update + lambda * p[i];
      p[i] = p[i] + -lr * update;
    }
  }
  std::map<std::string, Vec> states() const override {
    return {{"m1", fast}, {"m2", slow}, {"nu", sq}};
  }
};

/// torch.optim.NAdam, mu_product kept per tensor.
struct Nadam : Reference {
  Vec m, v;
  double muProduct = 1;
  Nadam(size_t n) : m(n), v(n) {}
  void step(Vec &p, const Vec &grad, int64_t t, const Hypers &h) override {
    double lr = hyper(h, "lr", 2e-3), b1 = hyper(h, "beta1", 0.9), b2 = hyper(h, "beta2", 0.999);
    double eps = hyper(h, "eps", 1e-8), wd = hyper(h, "weight_decay", 0);
    double psi = hyper(h, "momentum_decay", 4e-3);
    double step = static_cast<double>(t);
    double bc2 = 1 - std::pow(b2, step);
    double mu = b1 * (1. - 0.5 * std::pow(0.96, step * psi));
    double muNext = b1 * (1. - 0.5 * std::pow(0.96, (step + 1) * psi));
    muProduct *= mu;
    double muProductNext = muProduct * muNext;
    for (size_t i = 0; i < p.size(); ++i) {
      double g = wd != 0 ? grad[i] + wd * p[i] : grad[i];
      m[i] = m[i] * b1 + (1 - b1) * g;
      v[i] = v[i] * b2 + (1 - b2) * g * g;
      double denom = std::sqrt(v[i] / bc2) + eps;
      p[i] = p[i] + (-lr * (1. - mu) / (1. - muProduct)) * (g / denom);
      p[i] = p[i] + ((-lr * muNext) / (1. - muProductNext)) * (m[i] / denom);
    }
  }
  std::map<std::string, Vec> states() const override { return {{"exp_avg", m}, {"exp_avg_sq", v}}; }
  std::map<std::string, double> scalars() const override { return {{"mu_product", muProduct}}; }
};

/// torch.optim.RAdam.
struct Radam : Reference {
  Vec m, v;
  int adaptiveSteps = 0, plainSteps = 0; // which branch ran
  Radam(size_t n) : m(n), v(n) {}
  void step(Vec &p, const Vec &grad, int64_t t, const Hypers &h) override {
    double lr = hyper(h, "lr", 1e-3), b1 = hyper(h, "beta1", 0.9), b2 = hyper(h, "beta2", 0.999);
    double eps = hyper(h, "eps", 1e-8), wd = hyper(h, "weight_decay", 0);
    double step = static_cast<double>(t);
    double bc1 = 1 - std::pow(b1, step), bc2 = 1 - std::pow(b2, step);
    double rhoInf = 2 / (1 - b2) - 1;
    double rhoT = rhoInf - 2 * step * std::pow(b2, step) / bc2;
    (rhoT > 5. ? adaptiveSteps : plainSteps) += 1;
    for (size_t i = 0; i < p.size(); ++i) {
      double g = wd != 0 ? grad[i] + wd * p[i] : grad[i];
      m[i] = m[i] * b1 + (1 - b1) * g;
      v[i] = v[i] * b2 + (1 - b2) * g * g;
      double corrected = m[i] / bc1;
      if (rhoT > 5.) {
        double rect = std::sqrt((rhoT - 4) * (rhoT - 2) * rhoInf /
                                ((rhoInf - 4) * (rhoInf - 2) * rhoT));
        double adaptiveLr = std::sqrt(bc2) / (std::sqrt(v[i]) + eps);
        p[i] = p[i] + -1.0 * (corrected * lr * adaptiveLr * rect);
      } else {
        p[i] = p[i] + -1.0 * (corrected * lr);
      }
    }
  }
  std::map<std::string, Vec> states() const override { return {{"exp_avg", m}, {"exp_avg_sq", v}}; }
};

/// torch.optim.RMSprop.
struct Rmsprop : Reference {
  Vec squareAvg, gradAvg, buf;
  Rmsprop(size_t n) : squareAvg(n), gradAvg(n), buf(n) {}
  void step(Vec &p, const Vec &grad, int64_t, const Hypers &h) override {
    double lr = hyper(h, "lr", 1e-2), alpha = hyper(h, "alpha", 0.99), eps = hyper(h, "eps", 1e-8);
    double wd = hyper(h, "weight_decay", 0), momentum = hyper(h, "momentum", 0);
    bool centered = hyper(h, "centered", 0) != 0;
    for (size_t i = 0; i < p.size(); ++i) {
      double g = wd != 0 ? grad[i] + wd * p[i] : grad[i];
      squareAvg[i] = squareAvg[i] * alpha + (1 - alpha) * g * g;
      double avg;
      if (centered) {
        gradAvg[i] = gradAvg[i] * alpha + (1 - alpha) * g;
        avg = std::sqrt(squareAvg[i] + -1 * gradAvg[i] * gradAvg[i]);
      } else {
        avg = std::sqrt(squareAvg[i]);
      }
      avg = avg + eps;
      if (momentum > 0) {
        buf[i] = buf[i] * momentum + g / avg;
        p[i] = p[i] + -lr * buf[i];
      } else {
        p[i] = p[i] + -lr * (g / avg);
      }
    }
  }
  std::map<std::string, Vec> states() const override {
    // Unused buffers stay at 0.
    return {{"square_avg", squareAvg}, {"grad_avg", gradAvg}, {"momentum_buffer", buf}};
  }
};

/// torch.optim.Adagrad.
struct Adagrad : Reference {
  Vec sum;
  Adagrad(size_t n, const Hypers &h) : sum(n, hyper(h, "initial_accumulator_value", 0)) {}
  void step(Vec &p, const Vec &grad, int64_t t, const Hypers &h) override {
    double lr = hyper(h, "lr", 1e-2), lrDecay = hyper(h, "lr_decay", 0);
    double wd = hyper(h, "weight_decay", 0), eps = hyper(h, "eps", 1e-10);
    double clr = lr / (1 + (static_cast<double>(t) - 1) * lrDecay);
    for (size_t i = 0; i < p.size(); ++i) {
      double g = wd != 0 ? grad[i] + wd * p[i] : grad[i];
      sum[i] = sum[i] + 1 * g * g;
      double stdev = std::sqrt(sum[i]) + eps;
      p[i] = p[i] + -clr * (g / stdev);
    }
  }
  std::map<std::string, Vec> states() const override { return {{"sum", sum}}; }
};

/// lucidrains/lion-pytorch update_fn.
struct Lion : Reference {
  Vec m;
  Lion(size_t n) : m(n) {}
  static double sign(double x) { return x > 0 ? 1.0 : x < 0 ? -1.0 : 0.0; }
  void step(Vec &p, const Vec &grad, int64_t, const Hypers &h) override {
    double lr = hyper(h, "lr", 1e-4), b1 = hyper(h, "beta1", 0.9), b2 = hyper(h, "beta2", 0.99);
    double wd = hyper(h, "weight_decay", 0);
    for (size_t i = 0; i < p.size(); ++i) {
      p[i] = p[i] * (1 - lr * wd);
      double update = sign(m[i] * b1 + (1 - b1) * grad[i]);
      p[i] = p[i] + -lr * update;
      m[i] = m[i] * b2 + (1 - b2) * grad[i];
    }
  }
  std::map<std::string, Vec> states() const override { return {{"exp_avg", m}}; }
};

/// timm Lamb (bias_correction, grad_averaging, no trust_clip, no clipping:
/// the tests run the rule with max_grad_norm 0, timm's None; the global
/// clipping is checked against timm itself by the golden case lamb_clip).
struct Lamb : Reference {
  Vec m, v;
  double lastTrustRatio = std::numeric_limits<double>::quiet_NaN();
  Lamb(size_t n) : m(n), v(n) {}
  void step(Vec &p, const Vec &grad, int64_t t, const Hypers &h) override {
    double lr = hyper(h, "lr", 1e-3), b1 = hyper(h, "beta1", 0.9), b2 = hyper(h, "beta2", 0.999);
    double eps = hyper(h, "eps", 1e-6), wd = hyper(h, "weight_decay", 0.01);
    bool alwaysAdapt = hyper(h, "always_adapt", 0) != 0;
    double step = static_cast<double>(t);
    double bc1 = 1 - std::pow(b1, step), bc2 = 1 - std::pow(b2, step);
    double beta3 = 1 - b1;
    Vec update(p.size());
    for (size_t i = 0; i < p.size(); ++i) {
      m[i] = m[i] * b1 + beta3 * grad[i];
      v[i] = v[i] * b2 + (1 - b2) * grad[i] * grad[i];
      double denom = std::sqrt(v[i]) / std::sqrt(bc2) + eps;
      update[i] = (m[i] / bc1) / denom;
      if (wd != 0)
        update[i] = update[i] + wd * p[i];
    }
    lastTrustRatio = 1;
    if (wd != 0 || alwaysAdapt) {
      double w = 0, u = 0;
      for (size_t i = 0; i < p.size(); ++i) {
        w += p[i] * p[i];
        u += update[i] * update[i];
      }
      double wNorm = std::sqrt(w), uNorm = std::sqrt(u);
      lastTrustRatio = wNorm > 0 ? (uNorm > 0 ? wNorm / uNorm : 1.0) : 1.0;
    }
    for (size_t i = 0; i < p.size(); ++i)
      p[i] = p[i] + -lr * (update[i] * lastTrustRatio);
  }
  std::map<std::string, Vec> states() const override { return {{"exp_avg", m}, {"exp_avg_sq", v}}; }
};

Factory factoryFor(const std::string &rule) {
  if (rule == "sgd")
    return [](size_t, const Hypers &) { return std::make_unique<Sgd>(); };
  if (rule == "adam")
    return [](size_t n, const Hypers &) { return std::make_unique<Adam>(n, false); };
  if (rule == "adamw")
    return [](size_t n, const Hypers &) { return std::make_unique<Adam>(n, true); };
  if (rule == "ademamix")
    return [](size_t n, const Hypers &) { return std::make_unique<Ademamix>(n); };
  if (rule == "nadam")
    return [](size_t n, const Hypers &) { return std::make_unique<Nadam>(n); };
  if (rule == "radam")
    return [](size_t n, const Hypers &) { return std::make_unique<Radam>(n); };
  if (rule == "rmsprop")
    return [](size_t n, const Hypers &) { return std::make_unique<Rmsprop>(n); };
  if (rule == "adagrad")
    return [](size_t n, const Hypers &h) { return std::make_unique<Adagrad>(n, h); };
  if (rule == "lion")
    return [](size_t n, const Hypers &) { return std::make_unique<Lion>(n); };
  if (rule == "lamb")
    return [](size_t n, const Hypers &) { return std::make_unique<Lamb>(n); };
  ADD_FAILURE() << "no reference for " << rule;
  return {};
}

int scalarSlot(const CheckedRule &rule, const std::string &name) {
  for (size_t i = 0; i < rule.scalarStates.size(); ++i)
    if (rule.symbol(rule.scalarStates[i]).name == name)
      return static_cast<int>(i);
  return -1;
}

struct PeerRun {
  std::string rule;
  Hypers hypers;                                     // overrides of the defaults
  int steps = 4;
  std::function<void(int64_t step, Hypers &)> schedule; // per-step changes
  std::function<std::vector<Vec>(std::mt19937 &)> params; // default: random
  /// Called after each step with the interpreter's tensors and the references.
  std::function<void(int64_t step, const std::vector<TensorState> &,
                     const std::vector<std::unique_ptr<Reference>> &)>
      check;
};

/// Runs `run` in the interpreter and in the reference side by side, comparing
/// every parameter, state and scalar state after every step.
void compareWithPeerOnce(const PeerRun &run, uint32_t seed) {
  std::ostringstream trace;
  trace << run.rule << " seed " << seed << " (OPTDSL_TEST_SEED=" << seed << " reruns it)";
  SCOPED_TRACE(trace.str());
  const CheckedRule &rule = libraryRule(run.rule);
  Interpreter interpreter(rule);
  Factory factory = factoryFor(run.rule);
  ASSERT_TRUE(factory);
  std::mt19937 rng(seed);

  std::vector<Vec> params;
  if (run.params) {
    params = run.params(rng);
  } else {
    size_t count = std::uniform_int_distribution<size_t>(1, 3)(rng);
    for (size_t k = 0; k < count; ++k) {
      size_t size = std::uniform_int_distribution<size_t>(1, 40)(rng);
      params.push_back(randomNonZero(rng, size, logUniform(rng, 1e-2, 1e1)));
    }
  }

  Hypers initialHypers = run.hypers;
  if (run.schedule)
    run.schedule(0, initialHypers);
  HyperValues values = interpreter.defaultHypers();
  for (const auto &[name, value] : initialHypers)
    interpreter.setHyper(values, name, value);
  std::vector<TensorState> tensors;
  std::vector<std::unique_ptr<Reference>> references;
  std::vector<Vec> expectedParams = params;
  for (const Vec &param : params) {
    tensors.push_back(interpreter.initTensor(param, values));
    references.push_back(factory(param.size(), initialHypers));
  }
  // Initial states agree (Adagrad's initial_accumulator_value).
  for (size_t k = 0; k < tensors.size(); ++k)
    for (const auto &[name, expected] : references[k]->states())
      if (rule.stateSlot(name) >= 0 && expected.size() == params[k].size())
        EXPECT_TRUE(close(tensors[k].states[rule.stateSlot(name)], expected, expected))
            << "initial " << name;

  for (int64_t t = 1; t <= run.steps; ++t) {
    SCOPED_TRACE("step " + std::to_string(t));
    Hypers stepHypers = run.hypers;
    if (run.schedule)
      run.schedule(t, stepHypers);
    values = interpreter.defaultHypers();
    for (const auto &[name, value] : stepHypers)
      interpreter.setHyper(values, name, value);

    std::vector<Vec> grads;
    for (const Vec &param : params)
      grads.push_back(randomGradient(rng, param.size()));
    std::vector<Vec> paramsBefore = expectedParams;
    std::vector<std::map<std::string, Vec>> statesBefore;
    for (const auto &reference : references)
      statesBefore.push_back(reference->states());

    interpreter.step(tensors, grads, t, values);
    for (size_t k = 0; k < tensors.size(); ++k)
      references[k]->step(expectedParams[k], grads[k], t, stepHypers);

    for (size_t k = 0; k < tensors.size(); ++k) {
      SCOPED_TRACE("tensor " + std::to_string(k) + " of size " + std::to_string(params[k].size()));
      EXPECT_TRUE(close(tensors[k].param, expectedParams[k], paramsBefore[k])) << "param";
      for (const auto &[name, expected] : references[k]->states()) {
        int slot = rule.stateSlot(name);
        ASSERT_GE(slot, 0) << "the rule has no state '" << name << "'";
        const Vec &before = statesBefore[k].count(name) ? statesBefore[k].at(name) : expected;
        EXPECT_TRUE(close(tensors[k].states[slot], expected, before)) << name;
      }
      for (const auto &[name, expected] : references[k]->scalars()) {
        int slot = scalarSlot(rule, name);
        ASSERT_GE(slot, 0) << "the rule has no scalar state '" << name << "'";
        EXPECT_TRUE(close({tensors[k].scalarStates[slot]}, {expected}, {expected})) << name;
      }
    }
    if (run.check)
      run.check(t, tensors, references);
    if (::testing::Test::HasFailure())
      return; // the first step that differs is the interesting one
  }
}

void compareWithPeer(const PeerRun &run, std::initializer_list<uint32_t> fixedSeeds) {
  for (uint32_t fixed : fixedSeeds)
    for (uint32_t seed : seeds(fixed))
      compareWithPeerOnce(run, seed);
}

// --- The library against its peers ------------------------------------------

TEST(InterpreterPeers, SgdMomentumAndNesterov) {
  compareWithPeer({"sgd", {{"lr", 0.05}, {"momentum", 0.9}, {"nesterov", 1}, {"weight_decay", 1e-2}}, 5},
                  {101});
}

TEST(InterpreterPeers, SgdDampening) {
  compareWithPeer({"sgd", {{"lr", 0.02}, {"momentum", 0.8}, {"dampening", 0.3}}, 5}, {102});
}

TEST(InterpreterPeers, SgdPlainIgnoresDampening) {
  compareWithPeer({"sgd", {{"lr", 0.1}, {"dampening", 0.5}, {"weight_decay", 0.1}}, 4}, {103});
}

TEST(InterpreterPeers, SgdFirstStepBufferIsTheGradientItself) {
  // torch clones d_p on the first step: no momentum, no dampening then.
  const CheckedRule &rule = libraryRule("sgd");
  Interpreter interpreter(rule);
  HyperValues values = interpreter.defaultHypers();
  interpreter.setHyper(values, "momentum", 0.9);
  interpreter.setHyper(values, "dampening", 0.5);
  interpreter.setHyper(values, "weight_decay", 0.25);
  std::vector<TensorState> tensors{interpreter.initTensor({2, -4, 8}, values)};
  interpreter.step(tensors, {{1, 0.5, -3}}, 1, values);
  const Vec &buffer = tensors[0].states[rule.stateSlot("momentum_buffer")];
  EXPECT_EQ(buffer, (Vec{1 + 0.25 * 2, 0.5 + 0.25 * -4, -3 + 0.25 * 8}));
  // Step 2: momentum * buf + (1 - dampening) * d_p.
  Vec param = tensors[0].param;
  interpreter.step(tensors, {{2, 2, 2}}, 2, values);
  for (size_t i = 0; i < 3; ++i) {
    double d = 2 + 0.25 * param[i];
    double expected = 0.9 * (i == 0 ? 1.5 : i == 1 ? -0.5 : -1.0) + 0.5 * d;
    EXPECT_DOUBLE_EQ(tensors[0].states[0][i], expected) << i;
  }
}

TEST(InterpreterPeers, AdamL2) {
  compareWithPeer({"adam", {{"lr", 1e-2}, {"weight_decay", 0.1}}, 5}, {201});
}

TEST(InterpreterPeers, AdamAmsgrad) {
  compareWithPeer({"adam", {{"amsgrad", 1}, {"beta2", 0.9}}, 5}, {202});
}

TEST(InterpreterPeers, AdamwDecoupled) {
  compareWithPeer({"adamw", {{"lr", 3e-3}, {"weight_decay", 0.1}}, 5}, {301});
}

TEST(InterpreterPeers, AdamwAmsgrad) {
  compareWithPeer({"adamw", {{"amsgrad", 1}, {"beta1", 0.8}, {"beta2", 0.95}}, 5}, {302});
}

TEST(InterpreterPeers, AdamwDefaults) { compareWithPeer({"adamw", {}, 3}, {303}); }

TEST(InterpreterPeers, AdemamixWithWarmups) {
  // alpha warms up over steps 1-2, beta3 over steps 1-3; then both are final.
  compareWithPeer({"ademamix",
                   {{"lr", 1e-2}, {"alpha_warmup", 3}, {"beta3_warmup", 4}, {"weight_decay", 0.1},
                    {"beta3", 0.999}},
                   5},
                  {401});
}

TEST(InterpreterPeers, AdemamixWithoutFastEma) {
  PeerRun run{"ademamix", {{"beta1", 0}, {"beta3_warmup", 3}, {"alpha", 5}}, 4};
  run.check = [](int64_t, const std::vector<TensorState> &tensors,
                 const std::vector<std::unique_ptr<Reference>> &) {
    // m1 is not used with beta1 == 0: it keeps its initial 0.
    const Vec &m1 = tensors[0].states[libraryRule("ademamix").stateSlot("m1")];
    EXPECT_EQ(m1, Vec(m1.size(), 0.0));
  };
  compareWithPeer(run, {402});
}

TEST(InterpreterPeers, AdemamixDefaults) { compareWithPeer({"ademamix", {}, 3}, {403}); }

TEST(InterpreterPeers, NadamMuProduct) {
  PeerRun run{"nadam", {{"weight_decay", 0.05}, {"momentum_decay", 0.1}}, 5};
  run.check = [](int64_t t, const std::vector<TensorState> &tensors,
                 const std::vector<std::unique_ptr<Reference>> &) {
    // Independently: the product of mu_1..mu_t.
    double product = 1;
    for (int64_t i = 1; i <= t; ++i)
      product *= 0.9 * (1 - 0.5 * std::pow(0.96, static_cast<double>(i) * 0.1));
    for (const TensorState &tensor : tensors)
      EXPECT_NEAR(tensor.scalarStates.at(0), product, 1e-15);
  };
  compareWithPeer(run, {501});
}

TEST(InterpreterPeers, NadamDefaults) { compareWithPeer({"nadam", {}, 4}, {502}); }

TEST(InterpreterPeers, RadamBothBranches) {
  // With beta2 = 0.999, rho_t <= 5 for steps 1-5 and > 5 from step 6 on.
  PeerRun run{"radam", {{"weight_decay", 0.01}, {"lr", 1e-2}}, 8};
  run.check = [](int64_t t, const std::vector<TensorState> &tensors,
                 const std::vector<std::unique_ptr<Reference>> &references) {
    const auto &radam = static_cast<const Radam &>(*references[0]);
    EXPECT_EQ(radam.plainSteps, std::min<int64_t>(t, 5));
    EXPECT_EQ(radam.adaptiveSteps, std::max<int64_t>(t - 5, 0));
    // The untaken arm is NaN on steps 3-5 (a negative square root).
    for (const TensorState &tensor : tensors)
      for (double x : tensor.param)
        EXPECT_TRUE(std::isfinite(x));
  };
  compareWithPeer(run, {601});
}

TEST(InterpreterPeers, RadamLowBeta2) {
  // beta2 = 0.9: rho_inf = 19, rho_t stays below 5 for the first steps.
  compareWithPeer({"radam", {{"beta2", 0.9}, {"beta1", 0.5}}, 5}, {602});
}

TEST(InterpreterPeers, RmspropCenteredWithMomentum) {
  compareWithPeer(
      {"rmsprop", {{"centered", 1}, {"momentum", 0.9}, {"weight_decay", 0.01}, {"alpha", 0.9}}, 5},
      {701});
}

TEST(InterpreterPeers, RmspropVariants) {
  compareWithPeer({"rmsprop", {}, 4}, {702});
  compareWithPeer({"rmsprop", {{"centered", 1}, {"lr", 1e-3}}, 4}, {703});
  compareWithPeer({"rmsprop", {{"momentum", 0.5}}, 4}, {704});
}

TEST(InterpreterHypers, OutsideTheDeclaredRangeIsRefusedAsTorchDoes) {
  // torch raises "Invalid momentum value" for momentum < 0 and "Invalid
  // beta parameter" outside [0, 1); the rules declare the same ranges.
  Interpreter rmsprop(libraryRule("rmsprop"));
  HyperValues values = rmsprop.defaultHypers(), original = values;
  try {
    rmsprop.setHyper(values, "momentum", -0.5);
    ADD_FAILURE() << "momentum -0.5 accepted";
  } catch (const std::invalid_argument &error) {
    EXPECT_NE(std::string(error.what()).find("'momentum'"), std::string::npos) << error.what();
    EXPECT_NE(std::string(error.what()).find("-0.5, outside its range [0, inf)"), std::string::npos) << error.what();
  }
  EXPECT_EQ(values, original) << "a refused value changes nothing";
  Interpreter adam(libraryRule("adam"));
  HyperValues adamValues = adam.defaultHypers();
  EXPECT_THROW(adam.setHyper(adamValues, "beta2", 1.0), std::invalid_argument) << "[0, 1) excludes 1";
  EXPECT_THROW(adam.setHyper(adamValues, "beta1", -1e-9), std::invalid_argument);
  EXPECT_NO_THROW(adam.setHyper(adamValues, "beta2", 0.0)) << "[0, 1) includes 0";
  EXPECT_NO_THROW(adam.setHyper(adamValues, "beta2", 0.9999999));
}

TEST(InterpreterPeers, AdagradDecayAndInitialAccumulator) {
  compareWithPeer({"adagrad",
                   {{"lr_decay", 0.1}, {"initial_accumulator_value", 0.5}, {"weight_decay", 0.01}},
                   5},
                  {801});
  compareWithPeer({"adagrad", {}, 4}, {802});
}

TEST(InterpreterPeers, Lion) {
  compareWithPeer({"lion", {{"lr", 1e-3}, {"weight_decay", 0.1}}, 5}, {901});
  compareWithPeer({"lion", {{"beta1", 0.5}, {"beta2", 0.9}}, 4}, {902});
}

TEST(InterpreterPeers, LambTrustRatio) {
  PeerRun run{"lamb", {{"lr", 1e-2}, {"max_grad_norm", 0}}, 5};
  run.check = [](int64_t, const std::vector<TensorState> &,
                 const std::vector<std::unique_ptr<Reference>> &references) {
    // Random data: the ratio is in play, not 1.
    EXPECT_NE(static_cast<const Lamb &>(*references[0]).lastTrustRatio, 1.0);
  };
  compareWithPeer(run, {1001});
  compareWithPeer({"lamb", {{"weight_decay", 0}, {"max_grad_norm", 0}}, 4}, {1002}); // no ratio
  compareWithPeer({"lamb", {{"weight_decay", 0}, {"always_adapt", 1}, {"max_grad_norm", 0}}, 4}, {1003}); // ratio
}

TEST(InterpreterPeers, LambZeroTensorHasTrustRatioOne) {
  PeerRun run{"lamb", {{"lr", 1e-2}, {"weight_decay", 0.1}, {"max_grad_norm", 0}}, 3};
  run.params = [](std::mt19937 &rng) {
    size_t n = std::uniform_int_distribution<size_t>(1, 40)(rng);
    return std::vector<Vec>{Vec(n, 0.0), randomNonZero(rng, 7, 1.0)};
  };
  run.check = [](int64_t t, const std::vector<TensorState> &,
                 const std::vector<std::unique_ptr<Reference>> &references) {
    // The zero tensor: w_norm = 0, ratio 1 (not 0 / u_norm = 0).
    if (t == 1)
      EXPECT_EQ(static_cast<const Lamb &>(*references[0]).lastTrustRatio, 1.0);
  };
  compareWithPeer(run, {1004});
}

TEST(InterpreterPeers, LambZeroUpdateDoesNotDivideByZero) {
  // always_adapt with weight_decay 0 and a zero gradient: the update is 0,
  // so u_norm = 0 and w_norm / u_norm is infinite in the untaken arm.
  const CheckedRule &rule = libraryRule("lamb");
  Interpreter interpreter(rule);
  HyperValues values = interpreter.defaultHypers();
  interpreter.setHyper(values, "weight_decay", 0);
  interpreter.setHyper(values, "always_adapt", 1);
  std::vector<TensorState> tensors{interpreter.initTensor({1.5, -2, 3}, values)};
  interpreter.step(tensors, {{0, 0, 0}}, 1, values);
  EXPECT_EQ(tensors[0].param, (Vec{1.5, -2, 3}));

  // A zero parameter with weight decay: w_norm = 0, ratio 1, so the tensor
  // moves by lr * update (a ratio of 0 / u_norm = 0 would keep it at 0).
  // Step 1: m / bc1 = g and sqrt(v) / sqrt(bc2) = |g|, so update ~ sign(g).
  interpreter.setHyper(values, "weight_decay", 0.1);
  interpreter.setHyper(values, "always_adapt", 0);
  std::vector<TensorState> zero{interpreter.initTensor({0, 0, 0}, values)};
  interpreter.step(zero, {{0.5, -2, 3}}, 1, values);
  EXPECT_NEAR(zero[0].param[0], -1e-3, 1e-8);
  EXPECT_NEAR(zero[0].param[1], 1e-3, 1e-8);
  EXPECT_NEAR(zero[0].param[2], -1e-3, 1e-8);
}

// --- Functions --------------------------------------------------------------

// floor, mod (the sign of the divisor, as Python's and torch's %), atan2,
// cos, sin, tanh: `param = f(grad)` from param 0, one step, exact values.
TEST(InterpreterFunctions, ElementwiseMathAsPythonAndLibm) {
  auto apply = [](const std::string &expression, Vec grads) {
    std::optional<CheckedRule> rule =
        compile("optimizer f { hyper k = 3; param = " + expression + "; }");
    EXPECT_TRUE(rule);
    Interpreter interpreter(*rule);
    HyperValues values = interpreter.defaultHypers();
    std::vector<TensorState> tensors{interpreter.initTensor(Vec(grads.size(), 0.0), values)};
    interpreter.step(tensors, {grads}, 1, values);
    return tensors[0].param;
  };
  EXPECT_EQ(apply("floor(grad)", {-0.5, 0.5, -2, 2.75}), (Vec{-1, 0, -2, 2}));
  EXPECT_EQ(apply("mod(grad, k)", {-7, 7, 3, -0.5, 6.5}), (Vec{2, 1, 0, 2.5, 0.5}));
  EXPECT_EQ(apply("mod(grad, -3)", {7, -7, 6}), (Vec{-2, -1, 0}));
  EXPECT_EQ(apply("atan2(grad, -1)", {1, -1}), (Vec{std::atan2(1.0, -1.0), std::atan2(-1.0, -1.0)}));
  EXPECT_EQ(apply("atan2(grad, 0)", {0, 2}), (Vec{0, M_PI / 2}));
  EXPECT_EQ(apply("cos(grad) + sin(grad)", {0.25}), (Vec{std::cos(0.25) + std::sin(0.25)}));
  EXPECT_EQ(apply("tanh(grad)", {-30, 0, 0.5}), (Vec{-1, 0, std::tanh(0.5)}));
}

// `state s = f(param);`: 0 until the first step, which sets it from the
// params at its start, before the body runs; later steps leave it to the rule.
TEST(InterpreterStates, InitialValueFromParamIsSetOnTheFirstStep) {
  std::optional<CheckedRule> rule =
      compile("optimizer f { hyper c = 3; state s = c * param; s = s + grad; param = param - grad; }");
  ASSERT_TRUE(rule);
  Interpreter interpreter(*rule);
  HyperValues values = interpreter.defaultHypers();
  std::vector<TensorState> tensors{interpreter.initTensor({1, -2}, values)};
  EXPECT_EQ(tensors[0].states[0], (Vec{0, 0}));
  interpreter.step(tensors, {{0.5, 0.25}}, 1, values);
  EXPECT_EQ(tensors[0].states[0], (Vec{3 * 1 + 0.5, 3 * -2 + 0.25}));
  interpreter.step(tensors, {{0.5, 0.25}}, 2, values);
  EXPECT_EQ(tensors[0].states[0], (Vec{3 * 1 + 1.0, 3 * -2 + 0.5}));
}

TEST(InterpreterInputs, AGivenInputIsReadAndAnAbsentOneIsZero) {
  std::optional<CheckedRule> rule = compile(
      "optimizer f { input h; state s; s = s + (given(h) ? 10 : 0) + h; param = param - grad; }");
  ASSERT_TRUE(rule);
  Interpreter interpreter(*rule);
  HyperValues values = interpreter.defaultHypers();
  std::vector<TensorState> tensors{interpreter.initTensor({1, -2}, values), interpreter.initTensor({3}, values)};
  interpreter.step(tensors, {{0, 0}, {0}}, 1, values, {{{0.5, 0.25}, {2}}});
  EXPECT_EQ(tensors[0].states[0], (Vec{10.5, 10.25}));
  EXPECT_EQ(tensors[1].states[0], (Vec{12}));
  interpreter.step(tensors, {{0, 0}, {0}}, 2, values); // not given: 0, and given(h) is 0
  EXPECT_EQ(tensors[0].states[0], (Vec{10.5, 10.25}));
  interpreter.step(tensors, {{0, 0}, {0}}, 3, values, {{}}); // an empty list: not given either
  EXPECT_EQ(tensors[1].states[0], (Vec{12}));
}

TEST(InterpreterInputs, MisuseThrowsBeforeAnythingChanges) {
  std::optional<CheckedRule> rule =
      compile("optimizer f { input h; state s; s = s + h; param = param - grad; }");
  ASSERT_TRUE(rule);
  Interpreter interpreter(*rule);
  HyperValues values = interpreter.defaultHypers();
  std::vector<TensorState> tensors{interpreter.initTensor({1, -2}, values)};
  std::vector<TensorState> before = tensors;
  auto expectThrows = [&](const StepInputs &inputs, const std::string &text) {
    try {
      interpreter.step(tensors, {{1, 1}}, 1, values, inputs);
      ADD_FAILURE() << "no exception for: " << text;
    } catch (const std::invalid_argument &e) {
      EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
    }
    EXPECT_EQ(tensors[0].param, before[0].param);
    EXPECT_EQ(tensors[0].states, before[0].states);
  };
  expectThrows({}, "input 'h' of 'f' is needed every step (the rule never tests given(h))");
  expectThrows({{{1}}}, "input 'h' of tensor 0 has 1 elements, its tensor 2");
  expectThrows({{{1, 2}, {3, 4}}}, "input 'h' has values for 2 tensors, the group 1");
  expectThrows({{{1, 2}}, {{1, 2}}}, "got values for 2 inputs; 'f' declares 1");
}

// random(stream): [0, 1), the same draws for the same (seed, step, tensor,
// element), different ones when any of them or the stream changes, and
// uniform (mean 1/2 within 5 standard errors over 20000 draws).
TEST(InterpreterRandom, CounterBasedDraws) {
  std::optional<CheckedRule> rule =
      compile("optimizer f { state a; state b; a = random(0); b = random(1); param = param - grad; }");
  ASSERT_TRUE(rule);
  EXPECT_TRUE(rule->usesRandom);
  Interpreter interpreter(*rule);
  HyperValues values = interpreter.defaultHypers();
  auto draw = [&](RandomSource source, int64_t step) {
    std::vector<TensorState> tensors{interpreter.initTensor(Vec(10000, 0), values),
                                     interpreter.initTensor(Vec(10000, 0), values)};
    interpreter.step(tensors, {Vec(10000, 0), Vec(10000, 0)}, step, values, {}, source);
    return tensors;
  };
  std::vector<TensorState> base = draw({7, 0, 0}, 1);
  double sum = 0;
  for (double x : base[0].states[0]) {
    ASSERT_GE(x, 0.0);
    ASSERT_LT(x, 1.0);
    ASSERT_EQ(x, std::ldexp(std::floor(std::ldexp(x, 24)), -24)) << "24 bits, exact in f32";
    sum += x;
  }
  EXPECT_NEAR(sum / 10000, 0.5, 5 * std::sqrt(1.0 / 12 / 10000));
  EXPECT_EQ(draw({7, 0, 0}, 1)[0].states, base[0].states) << "reproducible";
  EXPECT_NE(base[0].states[0], base[0].states[1]) << "streams differ";
  EXPECT_NE(base[0].states[0], base[1].states[0]) << "tensors differ";
  EXPECT_NE(draw({7, 0, 0}, 2)[0].states[0], base[0].states[0]) << "steps differ";
  EXPECT_NE(draw({8, 0, 0}, 1)[0].states[0], base[0].states[0]) << "seeds differ";
  EXPECT_EQ(draw({7, 0, 1}, 1)[0].states[0], base[1].states[0]) << "the tensor index is the optimizer's";
  EXPECT_EQ(draw({7, 1, 0}, 5)[0].states[0], base[0].states[0]) << "the step is the optimizer's";
}

// The library's gradient_noise transform: N(0, eta / (1 + step)^gamma) per
// element (mean within 5 standard errors of 0, variance within 5 of sigma^2
// over 20000 draws).
TEST(InterpreterTransforms, GradientNoiseIsGaussianWithTheAnnealedVariance) {
  std::optional<CheckedRule> rule =
      compile("optimizer f { hyper lr = 1; apply gradient_noise; param = param - lr * grad; }");
  ASSERT_TRUE(rule);
  Interpreter interpreter(*rule);
  HyperValues values = interpreter.defaultHypers();
  interpreter.setHyper(values, "noise_eta", 0.3);
  const size_t n = 20000;
  std::vector<TensorState> tensors{interpreter.initTensor(Vec(n, 0.0), values)};
  interpreter.step(tensors, {Vec(n, 0.0)}, 3, values, {}, {5, 3, 0});
  double variance = 0.3 / std::pow(1 + 3, 0.55), sum = 0, squares = 0;
  for (double x : tensors[0].param) {
    sum += x;
    squares += x * x;
  }
  double mean = sum / n;
  EXPECT_NEAR(mean, 0.0, 5 * std::sqrt(variance / n));
  EXPECT_NEAR(squares / n, variance, 5 * variance * std::sqrt(2.0 / n));
}

// A library transform applied by a rule written elsewhere: the rule's own
// update, then the transform's state sees the updated params.
TEST(InterpreterTransforms, ParamEmaFollowsTheUpdatedParams) {
  std::optional<CheckedRule> rule =
      compile("optimizer f { hyper lr = 0.5; param = param - lr * grad; apply param_ema; }");
  ASSERT_TRUE(rule);
  Interpreter interpreter(*rule);
  HyperValues values = interpreter.defaultHypers();
  interpreter.setHyper(values, "ema_decay", 0.75);
  std::vector<TensorState> tensors{interpreter.initTensor({1, -2}, values)};
  interpreter.step(tensors, {{2, 4}}, 1, values); // params 0, -4; ema from 1, -2
  EXPECT_EQ(tensors[0].param, (Vec{0, -4}));
  EXPECT_EQ(tensors[0].states[0], (Vec{0.75 * 1 + 0.25 * 0, 0.75 * -2 + 0.25 * -4}));
  interpreter.step(tensors, {{2, 4}}, 2, values); // params -1, -6
  EXPECT_EQ(tensors[0].states[0], (Vec{0.75 * 0.75 + 0.25 * -1, 0.75 * -2.5 + 0.25 * -6}));
}

// --- Hypers -----------------------------------------------------------------

TEST(InterpreterHypers, PerStepOverrides) {
  // A learning-rate schedule and a changing beta1, different at every step.
  PeerRun run{"adam", {{"weight_decay", 0.01}}, 5};
  run.schedule = [](int64_t t, Hypers &h) {
    const double lrs[] = {1e-3, 1e-3, 5e-3, 2e-4, 1e-1, 3e-2};
    h["lr"] = lrs[t];
    h["beta1"] = 0.9 - 0.1 * static_cast<double>(t % 3);
  };
  compareWithPeer(run, {1101});
}

TEST(InterpreterHypers, ChangingLrChangesTheStep) {
  // The same gradient, lr 1e-2 then 1e-1: SGD's steps differ tenfold.
  const CheckedRule &rule = libraryRule("sgd");
  Interpreter interpreter(rule);
  HyperValues values = interpreter.defaultHypers();
  std::vector<TensorState> tensors{interpreter.initTensor({1.0, -1.0}, values)};
  interpreter.setHyper(values, "lr", 1e-2);
  interpreter.step(tensors, {{3, -5}}, 1, values);
  EXPECT_EQ(tensors[0].param, (Vec{1.0 - 1e-2 * 3, -1.0 - 1e-2 * -5}));
  Vec before = tensors[0].param;
  interpreter.setHyper(values, "lr", 1e-1);
  interpreter.step(tensors, {{3, -5}}, 2, values);
  EXPECT_EQ(tensors[0].param, (Vec{before[0] - 1e-1 * 3, before[1] - 1e-1 * -5}));
}

TEST(InterpreterHypers, DefaultsAreTheDeclaredOnes) {
  const CheckedRule &rule = libraryRule("adamw");
  Interpreter interpreter(rule);
  EXPECT_EQ(interpreter.defaultHypers(), (HyperValues{1e-3, 0.9, 0.999, 1e-8, 1e-2, 0}));
  HyperValues values = interpreter.defaultHypers();
  interpreter.setHyper(values, "eps", 1e-6);
  EXPECT_EQ(values[rule.hyperSlot("eps")], 1e-6);
  EXPECT_EQ(values[rule.hyperSlot("lr")], 1e-3) << "others unchanged";
}

TEST(InterpreterHypers, SetHyperRejectsUnknownNamesAndNonFiniteValues) {
  const CheckedRule &rule = libraryRule("adam");
  Interpreter interpreter(rule);
  HyperValues values = interpreter.defaultHypers();
  const HyperValues original = values;
  auto messageOf = [&](const std::string &name, double value) -> std::string {
    try {
      interpreter.setHyper(values, name, value);
    } catch (const std::invalid_argument &e) {
      return e.what();
    } catch (...) {
      return "<another exception>";
    }
    return "<no exception>";
  };
  std::string unknown = messageOf("learning_rate", 1e-3);
  EXPECT_NE(unknown.find("'learning_rate'"), std::string::npos) << unknown;
  EXPECT_NE(unknown.find("beta1"), std::string::npos) << "lists the rule's hypers: " << unknown;
  for (double bad : {std::numeric_limits<double>::quiet_NaN(),
                     std::numeric_limits<double>::infinity(),
                     -std::numeric_limits<double>::infinity()}) {
    std::string message = messageOf("beta2", bad);
    EXPECT_NE(message.find("'beta2'"), std::string::npos) << message;
  }
  EXPECT_NE(messageOf("", 1).find("''"), std::string::npos);
  EXPECT_EQ(values, original) << "a rejected value changes nothing";
  // Names are exact: no case folding, no state names.
  EXPECT_THROW(interpreter.setHyper(values, "LR", 1), std::invalid_argument);
  EXPECT_THROW(interpreter.setHyper(values, "exp_avg", 1), std::invalid_argument);
  EXPECT_THROW(interpreter.setHyper(values, "step", 1), std::invalid_argument);
  EXPECT_NO_THROW(interpreter.setHyper(values, "lr", 1e300)) << "finite and in [0, inf) is enough";
}

// --- Checks before a step ---------------------------------------------------

TEST(InterpreterStep, WrongGradientSizeThrowsAndChangesNothing) {
  const CheckedRule &rule = libraryRule("nadam");
  Interpreter interpreter(rule);
  HyperValues values = interpreter.defaultHypers();
  std::vector<TensorState> tensors{interpreter.initTensor({1, 2, 3}, values),
                                   interpreter.initTensor({4, 5}, values)};
  interpreter.step(tensors, {{0.1, 0.2, 0.3}, {0.4, 0.5}}, 1, values);
  const std::vector<TensorState> before = tensors;
  auto unchanged = [&] {
    for (size_t k = 0; k < tensors.size(); ++k) {
      EXPECT_EQ(tensors[k].param, before[k].param) << k;
      EXPECT_EQ(tensors[k].states, before[k].states) << k;
      EXPECT_EQ(tensors[k].scalarStates, before[k].scalarStates) << k;
    }
  };
  // The first tensor's gradient is fine; the second's is one short. The
  // first tensor must not have been stepped either.
  EXPECT_THROW(interpreter.step(tensors, {{1, 1, 1}, {1}}, 2, values), std::invalid_argument);
  unchanged();
  EXPECT_THROW(interpreter.step(tensors, {{1, 1, 1, 1}, {1, 1}}, 2, values), std::invalid_argument);
  unchanged();
  EXPECT_THROW(interpreter.step(tensors, {{1, 1, 1}}, 2, values), std::invalid_argument)
      << "one gradient for two tensors";
  unchanged();
  HyperValues short_ = values;
  short_.pop_back();
  EXPECT_THROW(interpreter.step(tensors, {{1, 1, 1}, {1, 1}}, 2, short_), std::invalid_argument);
  unchanged();
  // A good step still works afterwards.
  interpreter.step(tensors, {{1, 1, 1}, {1, 1}}, 2, values);
  EXPECT_NE(tensors[0].param, before[0].param);
}

TEST(InterpreterStep, EmptyTensorListAndStepNumber) {
  std::optional<CheckedRule> rule =
      compile("optimizer t { param = param + step * grad; }");
  ASSERT_TRUE(rule);
  Interpreter interpreter(*rule);
  std::vector<TensorState> none;
  EXPECT_NO_THROW(interpreter.step(none, {}, 1, {}));
  std::vector<TensorState> tensors{interpreter.initTensor({1, 2}, {})};
  interpreter.step(tensors, {{0.5, -1}}, 7, {});
  EXPECT_EQ(tensors[0].param, (Vec{1 + 7 * 0.5, 2 - 7}));
}

// --- Semantics --------------------------------------------------------------

TEST(InterpreterSemantics, UniformValueAssignedToAStateBroadcasts) {
  std::optional<CheckedRule> rule = compile(R"(optimizer t {
  hyper lr = 0.5;
  state m = 3;
  scalar s = 1;
  s = s * 2;
  m = lr * s + step;               # uniform, stored per element
  param = s;                       # uniform into param as well
})");
  ASSERT_TRUE(rule);
  Interpreter interpreter(*rule);
  HyperValues values = interpreter.defaultHypers();
  std::vector<TensorState> tensors{interpreter.initTensor({1, 2, 3, 4, 5}, values),
                                   interpreter.initTensor({9}, values)};
  EXPECT_EQ(tensors[0].states[0], Vec(5, 3.0)) << "initial value, per element";
  interpreter.step(tensors, {{1, 1, 1, 1, 1}, {1}}, 1, values);
  EXPECT_EQ(tensors[0].states[0], Vec(5, 0.5 * 2 + 1));
  EXPECT_EQ(tensors[1].states[0], Vec(1, 0.5 * 2 + 1));
  EXPECT_EQ(tensors[0].param, Vec(5, 2.0));
  interpreter.step(tensors, {{1, 1, 1, 1, 1}, {1}}, 2, values);
  EXPECT_EQ(tensors[0].states[0], Vec(5, 0.5 * 4 + 2));
  EXPECT_EQ(tensors[0].scalarStates, Vec{4.0});
  EXPECT_EQ(tensors[0].param, Vec(5, 4.0));
}

TEST(InterpreterSemantics, ConditionalsDoNotLeakNaNFromTheUntakenArm) {
  std::optional<CheckedRule> rule = compile(R"(optimizer t {
  state a;  state b;  state c;
  a = grad >= 0 ? sqrt(grad) : -sqrt(-grad);        # each arm NaN on the other side
  b = grad != 0 ? 1 / grad : 0;                       # inf in the untaken arm
  c = grad > 0 ? log(grad) : (grad < 0 ? log(-grad) : -1);
  param = param + (param > 0 ? 0 : 0 / 0);            # a NaN arm never taken
})");
  ASSERT_TRUE(rule);
  Interpreter interpreter(*rule);
  std::vector<TensorState> tensors{interpreter.initTensor({1, 2, 3, 4}, {})};
  interpreter.step(tensors, {{4, -9, 0, 0.25}}, 1, {});
  EXPECT_EQ(tensors[0].states[0], (Vec{2, -3, 0, 0.5}));
  EXPECT_EQ(tensors[0].states[1], (Vec{0.25, -1.0 / 9, 0, 4}));
  EXPECT_EQ(tensors[0].states[2], (Vec{std::log(4.0), std::log(9.0), -1, std::log(0.25)}));
  EXPECT_EQ(tensors[0].param, (Vec{1, 2, 3, 4}));
  // The taken arm's NaN does show.
  std::vector<TensorState> negative{interpreter.initTensor({-1}, {})};
  interpreter.step(negative, {{1}}, 1, {});
  EXPECT_TRUE(std::isnan(negative[0].param[0]));
}

TEST(InterpreterSemantics, UniformConditionalAndLogic) {
  std::optional<CheckedRule> rule = compile(R"(optimizer t {
  hyper flag = 0;
  scalar r = 0;
  r = (step < 3 && flag == 0 ? 10 : 20) + !flag + (flag || step > 1) * 100 + (2 ^ -1);
  param = param * 0 + r;
})");
  ASSERT_TRUE(rule);
  Interpreter interpreter(*rule);
  HyperValues values = interpreter.defaultHypers();
  std::vector<TensorState> tensors{interpreter.initTensor({0, 0}, values)};
  interpreter.step(tensors, {{1, 1}}, 1, values);
  EXPECT_EQ(tensors[0].scalarStates[0], 10 + 1 + 0 + 0.5);
  interpreter.step(tensors, {{1, 1}}, 3, values);
  EXPECT_EQ(tensors[0].scalarStates[0], 20 + 1 + 100 + 0.5);
  interpreter.setHyper(values, "flag", 1);
  interpreter.step(tensors, {{1, 1}}, 1, values);
  EXPECT_EQ(tensors[0].scalarStates[0], 20 + 0 + 100 + 0.5);
}

TEST(InterpreterSemantics, ReductionsOnKnownData) {
  std::optional<CheckedRule> rule = compile(R"(optimizer t {
  scalar s = 0;  scalar n = 0;  scalar mu = 0;  scalar mx = 0;
  scalar mabs = 0;  scalar count = 0;  scalar after = 0;  scalar dot = 0;
  s = sum(grad);
  n = norm(grad);
  mu = mean(grad);
  mx = max(grad);
  mabs = max(abs(grad));
  count = sum(1);                  # a uniform argument counts once per element
  dot = sum(grad * param);
  param = param * 2;
  after = sum(param);              # sees param as assigned just above
})");
  ASSERT_TRUE(rule);
  Interpreter interpreter(*rule);
  std::vector<TensorState> tensors{interpreter.initTensor({1, 2, 3, 4}, {}),
                                   interpreter.initTensor({-1, -1, -1}, {})};
  interpreter.step(tensors, {{3, -4, 12, 1.5}, {-3, -0.5, -2}}, 1, {});
  const Vec &first = tensors[0].scalarStates;
  EXPECT_EQ(first[0], 12.5);
  EXPECT_EQ(first[1], std::sqrt(9 + 16 + 144 + 2.25));
  EXPECT_EQ(first[2], 12.5 / 4);
  EXPECT_EQ(first[3], 12);
  EXPECT_EQ(first[4], 12);
  EXPECT_EQ(first[5], 4);
  EXPECT_EQ(first[7], 3 - 8 + 36 + 6);
  EXPECT_EQ(first[6], 20) << "sum of the doubled param";
  // Per tensor, and max of negatives is negative (not an initial 0).
  const Vec &second = tensors[1].scalarStates;
  EXPECT_EQ(second[0], -5.5);
  EXPECT_EQ(second[1], std::sqrt(9 + 0.25 + 4));
  EXPECT_EQ(second[2], -5.5 / 3);
  EXPECT_EQ(second[3], -0.5);
  EXPECT_EQ(second[4], 3);
  EXPECT_EQ(second[5], 3);
  EXPECT_EQ(second[6], -6);
}

TEST(InterpreterSemantics, MaxReductionPropagatesNaN) {
  std::optional<CheckedRule> rule = compile(R"(optimizer t {
  scalar mx = 0;
  mx = max(grad);
  param = param - mx;
})");
  ASSERT_TRUE(rule);
  Interpreter interpreter(*rule);
  std::vector<TensorState> tensors{interpreter.initTensor({1, 2, 3}, {})};
  interpreter.step(tensors, {{1, std::nan(""), 2}}, 1, {});
  EXPECT_TRUE(std::isnan(tensors[0].scalarStates[0]));
}

TEST(InterpreterSemantics, StatementsRunInOrderAndStatesPersist) {
  std::optional<CheckedRule> rule = compile(R"(optimizer t {
  state m;
  state seen;
  seen = m;                 # last step's m
  m = m + grad;
  param = param + m * 10;   # this step's m
})");
  ASSERT_TRUE(rule);
  Interpreter interpreter(*rule);
  std::vector<TensorState> tensors{interpreter.initTensor({0.5, -0.5}, {})};
  interpreter.step(tensors, {{1, 2}}, 1, {});
  interpreter.step(tensors, {{3, 5}}, 2, {});
  EXPECT_EQ(tensors[0].states[0], (Vec{4, 7}));
  EXPECT_EQ(tensors[0].states[1], (Vec{1, 2}));
  EXPECT_EQ(tensors[0].param, (Vec{0.5 + 10 + 40, -0.5 + 20 + 70}));
}

TEST(InterpreterSemantics, BuiltinFunctions) {
  std::optional<CheckedRule> rule = compile(R"(optimizer t {
  state a; state b; state c; state d; state e; state f; state g; state h; state i; state j;
  a = sqrt(grad * grad);
  b = rsqrt(4 * grad * grad);
  c = exp(log(abs(grad)));
  d = sign(grad);
  e = min(grad, 1);
  f = max(grad, 1);
  g = clamp(grad, -2, 2);
  h = lerp(param, grad, 0.25);
  i = pow(abs(grad), 0.5);
  j = -grad ^ 2;
  param = param;
})");
  ASSERT_TRUE(rule);
  Interpreter interpreter(*rule);
  std::vector<TensorState> tensors{interpreter.initTensor({1, 2, 3}, {})};
  interpreter.step(tensors, {{-4, 0.25, 9}}, 1, {});
  const auto &s = tensors[0].states;
  EXPECT_EQ(s[0], (Vec{4, 0.25, 9}));
  EXPECT_EQ(s[1], (Vec{0.125, 2, 1.0 / 18}));
  for (size_t k = 0; k < 3; ++k)
    EXPECT_NEAR(s[2][k], std::fabs((Vec{-4, 0.25, 9})[k]), 1e-14);
  EXPECT_EQ(s[3], (Vec{-1, 1, 1}));
  EXPECT_EQ(s[4], (Vec{-4, 0.25, 1}));
  EXPECT_EQ(s[5], (Vec{1, 1, 9}));
  EXPECT_EQ(s[6], (Vec{-2, 0.25, 2}));
  EXPECT_EQ(s[7], (Vec{1 + 0.25 * (-4 - 1), 2 + 0.25 * (0.25 - 2), 3 + 0.25 * (9 - 3)}));
  EXPECT_EQ(s[8], (Vec{2, 0.5, 3}));
  EXPECT_EQ(s[9], (Vec{-16, -0.0625, -81})) << "-x^2 is -(x^2)";
}

} // namespace
} // namespace optdsl
