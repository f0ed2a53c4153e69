/* A descriptor written by hand against artifact_abi.h: a tiny one-phase rule
 * (param -= lr * grad) with its kernels in C. Built three ways:
 *   default                 a valid artifact (checks the C header's layout
 *                           against what the loader reads)
 *   FAKE_MISSING_FEATURE    needs a CPU feature no CPU has
 *   FAKE_NULL_RULE          a malformed descriptor: the rule name is null
 *   FAKE_DEFAULT_OUTSIDE    a malformed descriptor: lr's default lies
 *                           outside its declared range */
#include "optrt/artifact_abi.h"

#include <math.h>
#include <stddef.h>

static void init(const double *hypers, float *elementwise, double *scalars) {
  (void)hypers, (void)elementwise, (void)scalars;
}
static void uniforms0(const double *hypers, double step, const double *scalars,
                      const double *reductions, float *out) {
  (void)step, (void)scalars, (void)reductions;
  out[0] = (float)hypers[0];
}
static void kernel0(void *const *buffers, const float *u, double *partials, int64_t begin,
                    int64_t end) {
  (void)partials;
  float *param = buffers[0];
  const float *grad = buffers[1];
  for (int64_t i = begin; i < end; ++i)
    param[i] -= u[0] * grad[i];
}
static void scalarUpdate(const double *hypers, double step, const double *scalars,
                         const double *reductions, double *out) {
  (void)hypers, (void)step, (void)scalars, (void)reductions, (void)out;
}

/* lr in (0, 1] (in (0, 0.25] for FAKE_DEFAULT_OUTSIDE). */
#if defined(FAKE_DEFAULT_OUTSIDE)
#define LR_UPPER 0.25
#else
#define LR_UPPER 1.0
#endif
static const optdsl_hyper hypers[] = {{"lr", 0.5, 0, OPTDSL_RANGE_LOWER_OPEN, 0.0, LR_UPPER}};
static const int32_t numUniforms[] = {1};
static const optdsl_uniforms_fn uniformFns[] = {uniforms0};
static const optdsl_buffer buffers[] = {{OPTDSL_BUFFER_PARAM, OPTDSL_DTYPE_F32, -1, 0},
                                        {OPTDSL_BUFFER_GRAD, OPTDSL_DTYPE_F32, -1, 0}};
static const optdsl_kernel_fn kernels[] = {kernel0};
static const optdsl_layout layouts[] = {{"f32", 2, 0, buffers, kernels}};

#if defined(FAKE_NULL_RULE)
#define RULE_NAME NULL
#else
#define RULE_NAME "hand_sgd"
#endif
#if defined(FAKE_MISSING_FEATURE)
#define FEATURES "sse4.2,madeup512"
#else
#define FEATURES ""
#endif

/* FAKE_VARIANTS: a fat artifact whose only variants need instructions no
 * CPU has (a name the loader cannot test counts as missing). */
#if defined(FAKE_VARIANTS)
static const optdsl_kernel_fn *const variantKernels[] = {kernels};
static const optdsl_cpu_variant variants[] = {{"future-cpu", "avx2,madeup512", variantKernels},
                                              {"future-baseline", "madeup128", variantKernels}};
#define VARIANTS 2, 0, variants
#else
#define VARIANTS 0, 0, NULL
#endif

static const int32_t domains[] = {OPTDSL_DOMAIN_ELEMENTS};
static const int32_t columnSlots[] = {0};

static const optdsl_artifact artifact = {
    OPTDSL_ABI_VERSION, 1, RULE_NAME, "hand-written", "x86-64", FEATURES, hypers, 0, 0, NULL, NULL,
    1, 1, numUniforms, init, uniformFns, scalarUpdate, layouts, VARIANTS, 0, 0, NULL, domains, 0, 0, NULL, columnSlots};

uint32_t optdsl_abi_version(void) { return OPTDSL_ABI_VERSION; }
const optdsl_artifact *optdsl_artifact_descriptor(void) { return &artifact; }
