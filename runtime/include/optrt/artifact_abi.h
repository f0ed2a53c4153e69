/* The C ABI of an OptDSL kernel artifact: the shared library that
 * `optc RULE.opt --emit=so` writes (libopt_<rule>.so). It exports exactly two
 * functions:
 *
 *   uint32_t optdsl_abi_version(void);             always safe to call
 *   const optdsl_artifact *optdsl_artifact_descriptor(void);  when it matches
 *
 * A loader first checks optdsl_abi_version() == OPTDSL_ABI_VERSION, so a
 * future layout of these structs is refused by name instead of misread.
 * Everything the descriptor points to is constant data inside the library,
 * valid while it stays loaded.
 *
 * The runtime (optrt::loadArtifact) turns this into an optrt::RuleKernels;
 * the compiler emits it as constant LLVM data next to the kernels. C, not
 * C++, so artifacts stay loadable from any language. */
#ifndef OPTDSL_ARTIFACT_ABI_H
#define OPTDSL_ARTIFACT_ABI_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* 2: hypers carry their declared range.
 * 3: kernels for several CPUs in one artifact (optdsl_cpu_variant).
 * 4: per-element inputs besides the gradient (optdsl_input, OPTDSL_BUFFER_INPUT);
 *    random() (uses_random).
 * 5: tensors read as matrices: states per row, column or matrix
 *    (optdsl_state.span), phases over rows or columns (phase_domains), row
 *    and column reductions (optdsl_axis_reduction), OPTDSL_BUFFER_DIMS and
 *    OPTDSL_BUFFER_AXIS_STATE.
 * 6: the CUDA kernels' training step (gradstats_entry, stepoptions_entry) and
 *    its device ABI (the skip flag, counter arguments of element and finish
 *    kernels). */
#define OPTDSL_ABI_VERSION 6u
#define OPTDSL_ABI_VERSION_SYMBOL "optdsl_abi_version"
#define OPTDSL_ARTIFACT_SYMBOL "optdsl_artifact_descriptor"

/* Storage of one buffer. Arithmetic is always f32; these say how a value is
 * kept in memory between steps. */
typedef enum optdsl_dtype {
  OPTDSL_DTYPE_F32 = 0,
  OPTDSL_DTYPE_BF16 = 1,
  OPTDSL_DTYPE_F16 = 2,
  OPTDSL_DTYPE_Q8_SIGNED = 3,   /**< 8-bit block-wise, signed dynamic map */
  OPTDSL_DTYPE_Q8_UNSIGNED = 4, /**< 8-bit block-wise, unsigned dynamic map */
  /* int16 low halves of an f32 master whose high halves are the bf16 param
   * (apex's store_param_remainders; optrt::splitMaster/joinMaster). Added
   * within ABI version 1: a loader that predates it refuses the layout as
   * one of unknown dtype. */
  OPTDSL_DTYPE_REMAINDER = 5
} optdsl_dtype;

/* What a kernel buffer holds. */
typedef enum optdsl_buffer_role {
  OPTDSL_BUFFER_PARAM = 0,
  OPTDSL_BUFFER_GRAD = 1,        /**< read only */
  OPTDSL_BUFFER_MASTER = 2,      /**< full-precision copy of a reduced-precision param */
  OPTDSL_BUFFER_STATE = 3,       /**< elementwise state `state` */
  OPTDSL_BUFFER_STATE_ABSMAX = 4, /**< per-block scales of a q8 state `state` */
  OPTDSL_BUFFER_INPUT = 5,        /* input `state` (an index into inputs), read only, stored as the grad */
  OPTDSL_BUFFER_DIMS = 6,         /* int64_t matrices, rows, cols of the tensor (ABI 5) */
  OPTDSL_BUFFER_AXIS_STATE = 7    /* f32 state `state` with one value per row, column or matrix (ABI 5) */
} optdsl_buffer_role;

typedef enum optdsl_reduction_kind {
  OPTDSL_REDUCE_SUM = 0,  /**< partial: sum x;   result: the sum */
  OPTDSL_REDUCE_MEAN = 1, /**< partial: sum x;   result: sum / n */
  OPTDSL_REDUCE_NORM = 2, /**< partial: sum x^2; result: sqrt */
  OPTDSL_REDUCE_MAX = 3,  /**< partial: max x;   result: the max */
  /** Or'ed into a kind: over every tensor of the parameter group (combined
   * in tensor order), not one tensor. Loaders before it refuse the kind. */
  OPTDSL_REDUCE_GROUP_WIDE = 0x100
} optdsl_reduction_kind;

/* One step of one tensor with P phases:
 *   for p in 0..P-1:
 *     uniforms[p](hypers, step, scalars, reductions, u)     host, per tensor
 *     kernel[p](buffers, u, partials, begin, end)           per chunk of elements
 *     combine the chunks' partials of phase p in chunk order, finish each
 *   scalar_update(hypers, step, scalars, reductions, scalars_out)
 * hypers: one double per hyper; scalars: one double per scalar state
 * (start-of-step values); reductions: one double per reduction.
 * buffers: one pointer per buffer of the layout, in the layout's order, each
 * at the tensor's first element; the kernel processes elements [begin, end)
 * and writes one partial per reduction of its phase. */
typedef void (*optdsl_init_fn)(const double *hypers, float *elementwise_init, double *scalar_init);
typedef void (*optdsl_uniforms_fn)(const double *hypers, double step, const double *scalars,
                                   const double *reductions, float *uniforms_out);
typedef void (*optdsl_kernel_fn)(void *const *buffers, const float *uniforms, double *partials,
                                 int64_t begin, int64_t end);
typedef void (*optdsl_scalar_update_fn)(const double *hypers, double step, const double *scalars,
                                        const double *reductions, double *scalars_out);

/* Bits of optdsl_hyper.range_flags. */
#define OPTDSL_RANGE_LOWER_OPEN 1u /* lower itself excluded */
#define OPTDSL_RANGE_UPPER_OPEN 2u /* upper itself excluded */

/** A hyper of the rule. */
typedef struct optdsl_hyper {
  const char *name;     /**< as the rule declares it */
  double default_value; /**< the value a new group gets */
  uint32_t fixed;       /**< 1: folded into the kernels at default_value */
  uint32_t range_flags; /**< OPTDSL_RANGE_* */
  /** The values the rule allows (+-infinity where unbounded); the kernels may
   * rely on them, so a loader must refuse any other value. */
  double lower;
  double upper; /**< see lower */
} optdsl_hyper;

/* Bits of optdsl_state.span (ABI 5). */
#define OPTDSL_SPAN_ELEMENTS 0u /* one value per element */
#define OPTDSL_SPAN_ROWS 1u     /* one f32 per row of each matrix */
#define OPTDSL_SPAN_COLS 2u     /* one f32 per column of each matrix */
#define OPTDSL_SPAN_MATRICES 3u /* one f32 per matrix */
#define OPTDSL_SPAN_SCRATCH 0x100u /* or'ed in: a row or column reduction's result, never saved */

/** A state of the rule. */
typedef struct optdsl_state {
  const char *name; /**< as the rule declares it */
  uint32_t scalar; /**< 1: one double per tensor; 0: one value per element (or per span) */
  uint32_t span;   /**< OPTDSL_SPAN_* (0 for a scalar state) */
} optdsl_state;

/* What a phase runs over (ABI 5; optrt::PhaseDomain). */
#define OPTDSL_DOMAIN_ELEMENTS 0 /* each element, in chunks of whole rows when the rule reads matrices */
#define OPTDSL_DOMAIN_ROWS 1     /* each row of each matrix: one call per tensor */
#define OPTDSL_DOMAIN_COLS 2     /* each column of each matrix: one call per tensor */
#define OPTDSL_DOMAIN_MATRICES 3 /* each matrix: one call per tensor */

/** A row or column reduction (ABI 5; optrt::AxisReductionInfo). */
typedef struct optdsl_axis_reduction {
  int32_t phase;       /**< the phase that accumulates it */
  int32_t state;       /**< the scratch state it reduces into */
  uint32_t along_rows; /**< 1: row_* (each row over its columns); 0: col_* */
  uint32_t mean;       /**< 1: divided by the count */
} optdsl_axis_reduction;

/** A per-tensor reduction of the rule. */
typedef struct optdsl_reduction {
  uint32_t kind; /**< optdsl_reduction_kind */
  int32_t phase; /**< accumulated in this phase; usable from phase + 1 */
} optdsl_reduction;

/** One buffer a layout's kernels take. */
typedef struct optdsl_buffer {
  uint32_t role;           /**< optdsl_buffer_role */
  uint32_t dtype;          /**< optdsl_dtype */
  int32_t state;           /**< index into states for STATE/STATE_ABSMAX, into inputs for INPUT, else -1 */
  uint32_t block_elements; /**< elements per absmax block of a q8 state, else 0 */
} optdsl_buffer;

/** Device code of a layout for one GPU architecture. */
typedef struct optdsl_cuda_image {
  const char *arch;       /**< "sm_80", "sm_90": the oldest GPU it runs on */
  const char *ptx;        /**< NUL-terminated PTX; the driver JITs it where no cubin fits */
  int32_t ptx_version;    /**< PTX ISA version times 10 (78 = 7.8) */
  uint32_t reserved;      /**< 0 */
  const void *cubin;      /**< ptxas output for exactly `arch`, or null */
  uint64_t cubin_size;    /**< bytes of cubin */
} optdsl_cuda_image;

/** A layout's CUDA kernels: device code per architecture and the entry
 * names and launch facts of optrt/CudaKernels.h (which documents the
 * device ABI these kernels follow). */
typedef struct optdsl_cuda {
  uint32_t num_images;                   /**< entries of images */
  int32_t block_size;                    /**< threads per block every kernel is built for */
  const optdsl_cuda_image *images;       /**< ascending arch */
  const char *const *uniforms_entries;   /**< one per phase */
  const char *const *element_entries;    /**< one per phase */
  const char *const *finish_entries;     /**< one per phase, "" where no reduction */
  const char *scalars_entry;             /**< "" when the rule has no scalar state */
  const char *advance_entry;             /**< advances the device step counter */
  const char *gradstats_entry;           /**< each chunk's gradient sum of squares; "" without step hypers */
  const char *stepoptions_entry;         /**< the step's decisions on the device; "" without step hypers */
  int32_t buffers_per_tensor;            /**< buffers per tensor in the buffers table */
  int32_t uniform_stride;                /**< f32 slots per tensor in the uniforms table */
  int32_t partial_stride;                /**< f64 slots per chunk in the partials table */
  uint32_t num_fixed_hypers;             /**< entries of the two tables below */
  const char *const *fixed_hyper_names;  /**< hypers folded into the device code */
  const double *fixed_hyper_values;      /**< their values */
} optdsl_cuda;

/** One storage layout the kernels were compiled for. */
typedef struct optdsl_layout {
  const char *name; /**< canonical text, e.g. "f32" or "param=bf16,master=f32" */
  uint32_t num_buffers;            /**< entries of buffers */
  uint32_t reserved;               /**< 0 */
  const optdsl_buffer *buffers;    /**< what its kernels' buffers argument holds, in order */
  const optdsl_kernel_fn *kernels; /**< one per phase */
  const optdsl_cuda *cuda;         /**< null when built without the CUDA target */
} optdsl_layout;

/** The kernels compiled for one CPU of a fat artifact (`optc --cpu=portable`,
 * the default): the same layouts, in the same order, as the artifact's
 * `layouts`, each a table of one kernel per phase. The host functions (init,
 * uniforms, scalar_update) are the artifact's own, built for its baseline
 * `cpu`, which every variant's CPU can run. */
typedef struct optdsl_cpu_variant {
  const char *cpu;          /**< e.g. "x86-64-v4+avx512vbmi+avx512bf16" */
  const char *cpu_features; /**< as optdsl_artifact.cpu_features */
  const optdsl_kernel_fn *const *kernels; /**< num_layouts tables of num_phases kernels */
} optdsl_cpu_variant;

/** A per-element input of the rule (`input NAME;`), passed by the trainer
 * with the gradient and stored like it. */
typedef struct optdsl_input {
  const char *name;  /**< as the rule declares it */
  uint32_t optional; /**< 1: the rule tests given(NAME), so a step may leave it out */
  uint32_t reserved; /**< 0 */
} optdsl_input;

/** The descriptor optdsl_artifact_descriptor returns: everything a loader needs. */
typedef struct optdsl_artifact {
  uint32_t abi_version; /**< OPTDSL_ABI_VERSION */
  uint32_t num_hypers;  /**< entries of hypers */
  const char *rule;     /**< the rule's name */
  const char *producer; /**< "OptDSL <version> (MLIR/LLVM <version>)" */
  const char *cpu;      /**< the CPU the kernels were compiled for, e.g. "x86-64-v3" */
  /** Comma-separated instruction-set features the kernels need, from a fixed
   * list a loader can test: sse4.2 avx avx2 fma f16c avx512f avx512bw
   * avx512dq avx512vl avx512vbmi avx512bf16 (a loader that does not know a name
   * refuses the artifact, as it should). */
  const char *cpu_features;
  const optdsl_hyper *hypers;         /**< declaration order, then the step hypers */
  uint32_t num_states;                /**< entries of states */
  uint32_t num_reductions;            /**< entries of reductions */
  const optdsl_state *states;         /**< declaration order */
  const optdsl_reduction *reductions; /**< grouped by phase, ascending */
  int32_t num_phases;                 /**< passes over memory per step */
  uint32_t num_layouts;               /**< entries of layouts */
  const int32_t *num_uniforms; /**< one per phase */
  optdsl_init_fn init;                /**< initial state values */
  const optdsl_uniforms_fn *uniforms; /**< one per phase */
  optdsl_scalar_update_fn scalar_update; /**< new scalar states after a step */
  const optdsl_layout *layouts;          /**< the layouts compiled in */
  /** Best first; a loader runs the first whose cpu_features this CPU has. The
   * last is the baseline `cpu`, whose kernels `layouts` also lists. 0: the
   * kernels of `layouts` are the only ones, for `cpu`. */
  uint32_t num_variants;
  uint32_t reserved_variants;          /**< 0 */
  const optdsl_cpu_variant *variants;  /**< num_variants entries */
  uint32_t num_inputs;                 /**< entries of inputs */
  uint32_t uses_random;                /**< 1: the kernels read each tensor's key (random()) as stochastic rounding does */
  const optdsl_input *inputs;          /**< declaration order */
  const int32_t *phase_domains;        /**< num_phases OPTDSL_DOMAIN_* entries (ABI 5) */
  uint32_t num_axis_reductions;        /**< entries of axis_reductions (ABI 5) */
  uint32_t reserved_axis;              /**< 0 */
  const optdsl_axis_reduction *axis_reductions; /**< in phase order (ABI 5) */
  const int32_t *column_slots;         /**< num_phases entries: column scratch per chunk, in matrices x cols floats (ABI 5) */
} optdsl_artifact;

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* OPTDSL_ARTIFACT_ABI_H */
