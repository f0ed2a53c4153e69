// Training with precision layouts: a least-squares problem trained with
// AdamW and AdEMAMix under f32, bf16-state, q8-state and bf16-param layouts
// must reach a final loss within 2% of the f32 run's (the issue's
// criterion), from the same start and the same data.
//
// The problem: per element i, K noisy observations y_ik = t_i + 0.3 e_ik
// weighted by d_i (log-uniform over [0.1, 10], so the curvature spans two
// decades, as Adam-family rules are meant for), plus one dense low-rank term
// coupling every element, trained with a cosine learning-rate decay: loss(x) = 1/N sum_i d_i/2 ((x_i - ybar_i)^2 +
// var_i) + lambda/2 (u.x - c)^2, 1000 steps. The variance term is a floor no
// optimizer can go under; the test also asserts that every run removed at
// least 95% of the loss above it, so a run that does not train fails.
//
// What the numbers say (printed): after 1000 steps every layout is within
// 1.3% of f32, but most of that is the shared floor: q8 states leave about
// 2.5x the f32 run's excess loss (0.0016 vs 0.0006). Stopped early (300
// steps) the q8 runs lag 7-16%: an EMA increment below the map's spacing at
// an element's value relative to its block's absmax is rounded away (the
// block absmax itself is exact, so uniform decay is kept), so the second
// moment of elements whose gradients shrink faster than their block's
// largest stays too large and they step too little.
#include "optdsl/JIT.h"
#include "optrt/Optimizer.h"
#include "optrt/Storage.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>

namespace optdsl {
namespace {

struct Problem {
  std::vector<size_t> sizes = {16384, 8192, 64}; // the 64 run the small-tensor fallback
  std::vector<std::vector<double>> d, ybar, var, u;
  double lambda = 0.01, c = 3.0;
  double floor = 0;
  size_t n = 0;

  Problem() {
    std::mt19937 rng(11);
    std::normal_distribution<double> normal;
    std::uniform_real_distribution<double> uniform(std::log(0.1), std::log(10.0));
    for (size_t size : sizes) {
      d.emplace_back(size);
      ybar.emplace_back(size);
      var.emplace_back(size);
      u.emplace_back(size);
      for (size_t i = 0; i < size; ++i) {
        d.back()[i] = std::exp(uniform(rng));
        double t = normal(rng), sum = 0, sum2 = 0;
        for (int k = 0; k < 4; ++k) {
          double y = t + 0.3 * normal(rng);
          sum += y;
          sum2 += y * y;
        }
        ybar.back()[i] = sum / 4;
        var.back()[i] = sum2 / 4 - ybar.back()[i] * ybar.back()[i];
        u.back()[i] = normal(rng) / std::sqrt(static_cast<double>(size));
        floor += d.back()[i] / 2 * var.back()[i];
      }
      n += size;
    }
    floor /= static_cast<double>(n);
  }

  double coupling(const std::vector<std::vector<float>> &x) const {
    double dot = 0;
    for (size_t k = 0; k < sizes.size(); ++k)
      for (size_t i = 0; i < sizes[k]; ++i)
        dot += u[k][i] * x[k][i];
    return dot - c;
  }

  double loss(const std::vector<std::vector<float>> &x) const {
    double sum = 0;
    for (size_t k = 0; k < sizes.size(); ++k)
      for (size_t i = 0; i < sizes[k]; ++i) {
        double r = x[k][i] - ybar[k][i];
        sum += d[k][i] / 2 * (r * r + var[k][i]);
      }
    double r = coupling(x);
    return sum / static_cast<double>(n) + lambda / 2 * r * r;
  }

  /// d loss / d x_i, scaled by N (Adam-family rules do not care about the
  /// scale; N keeps the gradients near 1).
  void gradient(const std::vector<std::vector<float>> &x, std::vector<std::vector<float>> &g) const {
    double r = coupling(x);
    for (size_t k = 0; k < sizes.size(); ++k)
      for (size_t i = 0; i < sizes[k]; ++i)
        g[k][i] = static_cast<float>(d[k][i] * (x[k][i] - ybar[k][i]) +
                                     static_cast<double>(n) * lambda * r * u[k][i]);
  }
};

/// Trains from x = 0 and returns the final loss; param=bf16 layouts take the
/// gradient at the bf16 params, as a bf16 model would.
double train(const Problem &problem, const std::string &rule, const std::string &layoutText,
             const std::map<std::string, double> &hypers, int steps, double *initial,
             const FixedHypers &fixed = {}) {
  static auto &cache = *new std::map<std::string, std::shared_ptr<const optrt::RuleKernels>>();
  auto &kernels = cache[rule + (fixed.empty() ? "" : "/fixed")];
  if (!kernels)
    kernels = jitCompileFile(std::string(OPTDSL_DSL_DIR) + "/" + rule + ".opt", fixed,
                             {"f32", "state=bf16", "state=bf16,rounding=stochastic", "state=q8",
                              "param=bf16,master=f32,state=q8", "param=bf16,master=f32,state=bf16,rounding=stochastic",
                              "param=bf16,master=remainder,state=q8"});
  optrt::Layout layout = optrt::Layout::parse(layoutText);
  bool bf16 = layout.param == optrt::Dtype::BF16;
  std::vector<std::vector<float>> x, g;
  std::vector<std::vector<uint16_t>> stored;
  std::vector<void *> pointers;
  for (size_t size : problem.sizes) {
    x.emplace_back(size, 0.0f);
    g.emplace_back(size, 0.0f);
    stored.emplace_back(size, optrt::f32ToBf16(0.0f));
  }
  for (size_t k = 0; k < x.size(); ++k)
    pointers.push_back(bf16 ? static_cast<void *>(stored[k].data()) : x[k].data());
  optrt::Optimizer optimizer(kernels, {.threads = 2, .layout = layoutText});
  optimizer.addGroupStored(pointers, problem.sizes, hypers);
  *initial = problem.loss(x);
  double lr = hypers.at("lr");
  for (int step = 0; step < steps; ++step) {
    // Cosine decay to 0, as real training runs end: the comparison is of
    // where each layout lands, not of how loudly a constant step size makes
    // it rattle around the optimum.
    optimizer.setHyper("lr", lr * 0.5 * (1 + std::cos(M_PI * step / steps)));
    if (bf16)
      for (size_t k = 0; k < x.size(); ++k)
        optrt::decodeToF32(optrt::Dtype::BF16, stored[k].data(), nullptr, x[k]);
    problem.gradient(x, g);
    optimizer.step({{g[0].data(), g[1].data(), g[2].data()}});
  }
  if (bf16)
    for (size_t k = 0; k < x.size(); ++k)
      optrt::decodeToF32(optrt::Dtype::BF16, stored[k].data(), nullptr, x[k]);
  return problem.loss(x);
}

const std::vector<std::string> kAllLayouts = {"state=bf16", "state=bf16,rounding=stochastic", "state=q8",
                                              "param=bf16,master=f32,state=q8",
                                              "param=bf16,master=f32,state=bf16,rounding=stochastic",
                                              "param=bf16,master=remainder,state=q8"};

void expectWithin2Percent(const std::string &rule, const std::map<std::string, double> &hypers,
                          const std::vector<std::string> &layouts = kAllLayouts, const FixedHypers &fixed = {}) {
  static const Problem problem;
  const int steps = std::getenv("STEPS") ? std::atoi(std::getenv("STEPS")) : 1000;
  double initial = 0;
  double reference = train(problem, rule, "f32", hypers, steps, &initial, fixed);
  std::printf("%s: initial loss %.6f, floor %.6f, f32 final %.6f\n", rule.c_str(), initial, problem.floor,
              reference);
  // The f32 run itself removed most of the loss above the floor.
  ASSERT_LT(reference - problem.floor, 0.05 * (initial - problem.floor));
  for (const std::string &layout : layouts) {
    double final = train(problem, rule, layout, hypers, steps, &initial, fixed);
    std::printf("%s %-32s final %.6f (%+.3f%% of f32; excess over the floor %.2fx f32's)\n", rule.c_str(),
                layout.c_str(), final, 100 * (final - reference) / reference,
                (final - problem.floor) / (reference - problem.floor));
    EXPECT_LE(std::fabs(final - reference), 0.02 * reference) << rule << " under " << layout;
    EXPECT_LT(final - problem.floor, 0.05 * (initial - problem.floor)) << rule << " under " << layout;
  }
}

TEST(LayoutTraining, AdamWLeastSquares) { expectWithin2Percent("adamw", {{"lr", 0.02}, {"weight_decay", 0}}); }

/// With beta1, beta2 fixed the sign analysis proves exp_avg_sq >= 0 and q8
/// stores it with the unsigned map.
TEST(LayoutTraining, AdamWFixedBetas) {
  expectWithin2Percent("adamw", {{"lr", 0.02}, {"weight_decay", 0}}, kAllLayouts,
                       {{"beta1", 0.9}, {"beta2", 0.999}, {"amsgrad", 0}});
}

/// AdEMAMix's slow EMA (1 - beta3 = 0.001) and second moment (1 - beta2 =
/// 0.001) add increments far below half a bf16 spacing (2^-9 relative):
/// rounded to nearest they are absorbed and the states freeze, which leaves
/// this run about 11% above f32 (asserted below, so the finding stays
/// visible); stochastic rounding keeps them unbiased and lands within 2%.
TEST(LayoutTraining, AdEMAMixLeastSquares) {
  std::vector<std::string> layouts = kAllLayouts;
  layouts.erase(layouts.begin()); // state=bf16 with round to nearest: below
  expectWithin2Percent("ademamix", {{"lr", 0.02}, {"alpha", 2}, {"beta3", 0.999}}, layouts);
}

TEST(LayoutTraining, AdEMAMixBf16NearestStalls) {
  static const Problem problem;
  std::map<std::string, double> hypers = {{"lr", 0.02}, {"alpha", 2}, {"beta3", 0.999}};
  double initial = 0;
  double reference = train(problem, "ademamix", "f32", hypers, 1000, &initial);
  double nearest = train(problem, "ademamix", "state=bf16", hypers, 1000, &initial);
  EXPECT_GT(nearest, 1.05 * reference) << "bf16 EMAs rounded to nearest no longer stall?";
}

} // namespace
} // namespace optdsl
