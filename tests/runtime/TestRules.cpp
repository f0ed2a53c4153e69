#include "TestRules.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <mutex>
#include <utility>

namespace optrt::test {

namespace {

// --- SGD with momentum ------------------------------------------------------

void sgdInit(const double *, float *elementwise, double *) { elementwise[0] = 0.0f; }

void sgdUniforms(const double *hypers, double, const double *, const double *, float *u) {
  u[0] = static_cast<float>(hypers[0]);
  u[1] = static_cast<float>(hypers[1]);
}

void sgdKernel(void *const *rawBuffers, const float *u, double *, int64_t begin, int64_t end) {
  auto buffers = reinterpret_cast<float *const *>(rawBuffers);
  float *param = buffers[0];
  const float *grad = buffers[1];
  float *m = buffers[2];
  for (int64_t i = begin; i < end; ++i) {
    m[i] = u[1] * m[i] + grad[i];
    param[i] = param[i] - u[0] * m[i];
  }
}

// --- LAMB-like --------------------------------------------------------------

enum LambHyper { Lr, Beta1, Eps, V0 };
enum LambScalar { Count, LastNorm };
enum LambReduction { PNorm, GMax };

void lambInit(const double *hypers, float *elementwise, double *scalars) {
  elementwise[0] = 0.0f;                           // m
  elementwise[1] = static_cast<float>(hypers[V0]); // v
  scalars[Count] = 0.0;
  scalars[LastNorm] = 0.0;
}

void lambUniforms0(const double *hypers, double, const double *, const double *, float *u) {
  u[0] = static_cast<float>(hypers[Beta1]);
  u[1] = static_cast<float>(1.0 - hypers[Beta1]);
}

void lambKernel0(void *const *rawBuffers, const float *u, double *partials, int64_t begin,
                 int64_t end) {
  auto buffers = reinterpret_cast<float *const *>(rawBuffers);
  const float *param = buffers[0];
  const float *grad = buffers[1];
  float *m = buffers[2];
  double sumSquares = 0.0;
  double gradMax = -std::numeric_limits<double>::infinity();
  for (int64_t i = begin; i < end; ++i) {
    m[i] = u[0] * m[i] + u[1] * grad[i];
    sumSquares += static_cast<double>(param[i]) * param[i];
    gradMax = std::max(gradMax, static_cast<double>(grad[i]));
  }
  partials[PNorm] = sumSquares;
  partials[GMax] = gradMax;
}

void lambUniforms1(const double *hypers, double step, const double *scalars,
                   const double *reductions, float *u) {
  double biasCorrection = 1.0 - std::pow(hypers[Beta1], step);
  double trust = reductions[PNorm] / (1.0 + scalars[Count]);
  u[0] = static_cast<float>(hypers[Lr] * trust / biasCorrection);
  u[1] = static_cast<float>(1.0 / (std::abs(reductions[GMax]) + 1.0));
  u[2] = static_cast<float>(hypers[Eps]);
}

void lambKernel1(void *const *rawBuffers, const float *u, double *, int64_t begin, int64_t end) {
  auto buffers = reinterpret_cast<float *const *>(rawBuffers);
  float *param = buffers[0];
  const float *m = buffers[2];
  float *v = buffers[3];
  for (int64_t i = begin; i < end; ++i) {
    v[i] = v[i] + m[i] * m[i];
    param[i] = param[i] - u[0] * (m[i] * u[1]) / (std::sqrt(v[i]) + u[2]);
  }
}

void lambScalarUpdate(const double *, double, const double *scalars, const double *reductions,
                      double *out) {
  out[Count] = scalars[Count] + 1.0;
  out[LastNorm] = reductions[PNorm];
}

// --- grad stats -------------------------------------------------------------

void statsInit(const double *, float *, double *scalars) { std::fill_n(scalars, 4, 0.0); }

void statsUniforms(const double *hypers, double, const double *, const double *, float *u) {
  u[0] = static_cast<float>(hypers[0]);
}

void statsKernel(void *const *rawBuffers, const float *u, double *partials, int64_t begin,
                 int64_t end) {
  auto buffers = reinterpret_cast<float *const *>(rawBuffers);
  float *param = buffers[0];
  const float *grad = buffers[1];
  double sum = 0.0, sumSquares = 0.0;
  double gradMax = -std::numeric_limits<double>::infinity();
  for (int64_t i = begin; i < end; ++i) {
    param[i] = param[i] - u[0] * grad[i];
    sum += grad[i];
    sumSquares += static_cast<double>(grad[i]) * grad[i];
    // NaN-propagating, as a max over a diverged gradient should be.
    if (std::isnan(grad[i]) || grad[i] > gradMax)
      gradMax = grad[i];
  }
  partials[0] = sum; // sum
  partials[1] = sum; // mean: the runtime divides by the element count
  partials[2] = sumSquares;
  partials[3] = gradMax;
}

void statsScalarUpdate(const double *, double, const double *, const double *reductions,
                       double *out) {
  std::copy_n(reductions, 4, out);
}

// --- recorder ---------------------------------------------------------------

std::mutex recordMutex;
std::vector<KernelCall> recordedCalls;

void recorderInit(const double *, float *elementwise, double *scalars) {
  elementwise[0] = 0.0f;
  scalars[0] = 0.0;
}

void recorderUniforms(const double *, double step, const double *, const double *, float *u) {
  u[0] = static_cast<float>(step);
}

void recorderKernel(void *const *rawBuffers, const float *u, double *partials, int64_t begin,
                    int64_t end) {
  auto buffers = reinterpret_cast<float *const *>(rawBuffers);
  partials[0] = static_cast<double>(end - begin);
  std::lock_guard lock(recordMutex);
  recordedCalls.push_back(
      {buffers[0], buffers[1], buffers[2], begin, end, u[0], std::this_thread::get_id()});
}

void recorderScalarUpdate(const double *, double, const double *, const double *reductions,
                          double *out) {
  out[0] = reductions[0];
}

} // namespace

std::vector<KernelCall> takeRecordedCalls() {
  std::lock_guard lock(recordMutex);
  return std::exchange(recordedCalls, {});
}

std::shared_ptr<const RuleKernels> recorderKernels() {
  auto rule = std::make_shared<RuleKernels>();
  rule->name = "recorder";
  rule->states = {{"s", false}, {"seen", true}};
  rule->reductions = {{ReductionKind::Sum, 0}};
  rule->numPhases = 1;
  rule->numUniforms = {1};
  rule->init = recorderInit;
  rule->uniforms = {recorderUniforms};
  rule->layouts = {{"f32", f32Buffers(rule->states), {recorderKernel}}};
  rule->scalarUpdate = recorderScalarUpdate;
  return rule;
}

std::shared_ptr<const RuleKernels> sgdMomentumKernels() {
  auto rule = std::make_shared<RuleKernels>();
  rule->name = "sgd_momentum";
  rule->hypers = {{"lr", 0.1}, {"momentum", 0.9}};
  rule->states = {{"momentum_buf", false}};
  rule->numPhases = 1;
  rule->numUniforms = {2};
  rule->init = sgdInit;
  rule->uniforms = {sgdUniforms};
  rule->layouts = {{"f32", f32Buffers(rule->states), {sgdKernel}}};
  return rule;
}

std::shared_ptr<const RuleKernels> lambLikeKernels() {
  auto rule = std::make_shared<RuleKernels>();
  rule->name = "lamb_like";
  rule->hypers = {{"lr", 0.01}, {"beta1", 0.9, false, {0.0, 1.0, false, true}}, {"eps", 1e-6}, {"v0", 0.1}};
  rule->states = {{"m", false}, {"count", true}, {"v", false}, {"lastNorm", true}};
  rule->reductions = {{ReductionKind::Norm, 0}, {ReductionKind::Max, 0}};
  rule->numPhases = 2;
  rule->numUniforms = {2, 3};
  rule->init = lambInit;
  rule->uniforms = {lambUniforms0, lambUniforms1};
  rule->layouts = {{"f32", f32Buffers(rule->states), {lambKernel0, lambKernel1}}};
  rule->scalarUpdate = lambScalarUpdate;
  return rule;
}

std::shared_ptr<const RuleKernels> gradStatsKernels() {
  auto rule = std::make_shared<RuleKernels>();
  rule->name = "grad_stats";
  rule->hypers = {{"lr", 0.1}};
  rule->states = {{"gsum", true}, {"gmean", true}, {"gnorm", true}, {"gmax", true}};
  rule->reductions = {{ReductionKind::Sum, 0},
                      {ReductionKind::Mean, 0},
                      {ReductionKind::Norm, 0},
                      {ReductionKind::Max, 0}};
  rule->numPhases = 1;
  rule->numUniforms = {1};
  rule->init = statsInit;
  rule->uniforms = {statsUniforms};
  rule->layouts = {{"f32", f32Buffers(rule->states), {statsKernel}}};
  rule->scalarUpdate = statsScalarUpdate;
  return rule;
}

} // namespace optrt::test
