// The compiled form of one rule, as the runtime sees it: plain C function
// pointers and a description of the rule. The compiler fills it in-process
// (JIT); loadArtifact fills it from a kernel artifact (.so) whose C ABI
// (artifact_abi.h) carries the same table. Nothing here depends on MLIR or
// LLVM.
//
// One step of one tensor, with P = numPhases:
//   for p in 0..P-1:
//     uniforms[p](hypers, step, scalars, reductions, u)   // host, per tensor
//     kernel[p](buffers, u, partials, begin, end)         // per chunk, of the layout
//     combine the chunks' partials of this phase, in chunk order, then finish
//     each reduction (sum: Σ, mean: Σ/n, norm: sqrt(Σ), max: max)
//   scalarUpdate(hypers, step, scalars, reductions, scalarsOut)
#pragma once

#include "optrt/HyperRange.h"
#include "optrt/Layout.h"

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace optrt {

/// Hypers the compiler adds to every rule after its own (docs/training-step.md):
/// the `grad` a rule reads is clamp(g * grad_scale, -grad_clip, grad_clip) of
/// the gradient g the trainer passes. The runtime sets them before each step
/// from the step's options (1 / loss scale times the clipping coefficient;
/// the value clip), never the user: setHyper refuses them. Their defaults
/// leave g unchanged bit for bit (grad_clip's default is finite as a double
/// and +inf as the kernels' f32 uniform).
inline constexpr std::string_view kGradScaleHyper = "grad_scale";
inline constexpr std::string_view kGradClipHyper = "grad_clip";
inline constexpr double kGradScaleDefault = 1.0;
inline constexpr double kGradClipDefault = 1e300;

/// The step hyper that tells a rule whether the trainer passed input `input`
/// this step (1) or not (0): "given(INPUT)", declared only for an input the
/// rule tests with given() (InputInfo::optional). Not an identifier, so it
/// never clashes with a rule's own hyper.
std::string givenHyper(std::string_view input);

inline bool isStepHyper(std::string_view name) {
  return name == kGradScaleHyper || name == kGradClipHyper ||
         (name.substr(0, 6) == "given(" && name.size() > 7 && name.back() == ')');
}

/// The hidden scalar states behind a rule's `rank`, `rows` and `cols`
/// ("shape(rank)", ...: not identifiers, so never a rule's own name): the
/// runtime sets them from each tensor's shape when its group is added
/// (Optimizer::addGroup's shapes; 1-D without) and after every load; they
/// are not saved as torch state.
inline constexpr std::string_view kShapeScalars[3] = {"shape(rank)", "shape(rows)", "shape(cols)"};

/// 0, 1 or 2 for the shape scalar `name` (rank, rows, cols), else -1.
inline int shapeDimension(std::string_view name) {
  for (int k = 0; k < 3; ++k)
    if (name == kShapeScalars[k])
      return k;
  return -1;
}

/// How a per-tensor reduction combines its elements.
enum class ReductionKind { Sum, Mean, Norm, Max }; ///< sum, mean, L2 norm, maximum

/// A hyper of a rule, as its kernels see it.
struct HyperInfo {
  std::string name; ///< the name the rule declares it with
  double defaultValue; ///< the value a new group gets
  /// Folded into the kernels when they were built: it cannot change.
  bool fixed = false;
  /// The values the rule allows; the kernels may rely on it.
  HyperRange range{};
};

/// What a state holds per tensor, read as a stack of matrices over its last
/// two dimensions (a rank-1 tensor: one row).
enum class StateSpan {
  Elements, ///< one value per element
  Rows,     ///< `state v[rows];`: one f32 per row of each matrix
  Cols,     ///< `state v[cols];`: one f32 per column of each matrix
  Matrices, ///< one f32 per matrix (only a scratch state: a column's mean of a value per row)
};

/// A state of a rule.
struct StateInfo {
  std::string name; ///< the name the rule declares it with
  bool scalar; ///< one f64 per tensor; otherwise one f32 per element (or per span)
  StateSpan span = StateSpan::Elements; ///< for a state that is not scalar
  /// Not the rule's own: where a row or column reduction leaves its result
  /// for later phases (AxisReductionInfo). Never saved or exported.
  bool scratch = false;
};

/// What one pass of a step runs once for (a rule that reads tensors as
/// matrices): each element (in whole rows: the runtime's chunks of such a
/// rule begin and end on row boundaries), or, between the passes over the
/// elements, each row or each column of each matrix, or each matrix (one
/// call per tensor: begin 0, end the number of rows, columns or matrices).
enum class PhaseDomain { Elements, Rows, Cols, Matrices };

/// A row or column reduction (row_sum, row_mean, col_sum, col_mean) a
/// phase accumulates into a scratch state.
struct AxisReductionInfo {
  int phase;        ///< the pass that accumulates it
  int state;        ///< RuleKernels::states index of its scratch state
  bool alongRows;   ///< row_*: each row over its columns; col_*: each column over its rows
  bool mean;        ///< divided by the count
};

/// A per-element input of a rule (`input NAME;`): a tensor the trainer
/// passes with the gradient, stored like the gradient (the layout's grad
/// dtype).
struct InputInfo {
  std::string name; ///< the name the rule declares it with
  /// The rule tests given(NAME): a step may leave it out (it then reads 0).
  /// A required input must come with every step.
  bool optional = false;
};

/// A per-tensor reduction of a rule.
struct ReductionInfo {
  ReductionKind kind; ///< how it combines
  int phase; ///< the pass that accumulates it; its result is usable from phase + 1
  /// Over every tensor of the parameter group: the tensors' combined
  /// partials are combined again in tensor order, and every tensor of the
  /// group gets the one result (mean: over the group's element count).
  bool groupWide = false;
};

/// hypers: one double per HyperInfo. scalars: one double per scalar state
/// (start-of-step values). reductions: one double per ReductionInfo (results
/// of earlier phases; later ones are unspecified). uniformsOut: the f32 values
/// kernel p reads (numUniforms[p] of them).
using UniformsFn = void (*)(const double *hypers, double step, const double *scalars,
                            const double *reductions, float *uniformsOut);

/// buffers: one pointer per BufferDesc of the layout, each already offset to
/// the tensor's first element (the f32 layout: param, grad, then the
/// elementwise states in StateInfo order). Processes elements [begin, end). partials: one double per
/// reduction of this phase (in ReductionInfo order), overwritten with this
/// range's partial: Σx for sum/mean, Σx² for norm, max x for max.
///
/// A rule with states spanning rows or columns (StateInfo::span) has, after
/// the inputs, a Dims buffer (int64_t matrices, rows, cols of the tensor)
/// and one f32 buffer per such state. Its kernels over the elements take
/// whole rows (with q8 states, beginning at a multiple of 256, so that a
/// chunk quantises whole q8 blocks); where they use column scratch (columnSlots), the partials
/// slot after the phase's reductions holds a pointer to float scratch of
/// (matrices the chunk touches) x cols floats per slot: first one per column
/// reduction (AxisReductionInfo, in order), which the kernel overwrites with
/// the chunk's column sums, then the kernel's own.
using KernelFn = void (*)(void *const *buffers, const float *uniforms, double *partials,
                          int64_t begin, int64_t end);

/// New values of the scalar states after a step.
using ScalarUpdateFn = void (*)(const double *hypers, double step, const double *scalars,
                                const double *reductions, double *scalarsOut);

/// Initial values: one float per elementwise state, one double per scalar state.
using InitFn = void (*)(const double *hypers, float *elementwiseInit, double *scalarInit);

struct CudaKernels; ///< optrt/CudaKernels.h

/// The kernels of one storage layout.
struct LayoutKernels {
  std::string name;                ///< canonical written form (Layout::str())
  std::vector<BufferDesc> buffers; ///< what a kernel's buffers argument holds
  std::vector<KernelFn> kernels;   ///< per phase
  /// The same layout's CUDA kernels, for optrt::CudaOptimizer; null when the
  /// rule was built without the CUDA target.
  std::shared_ptr<const CudaKernels> cuda;
};

/// The f32 layout's buffers for these states: param, grad, then each
/// elementwise state in order, then `numInputs` f32 inputs.
std::vector<BufferDesc> f32Buffers(const std::vector<StateInfo> &states, size_t numInputs = 0);

/// The buffers of a layout's kernels, in the ABI's order (artifact_abi.h):
/// param, grad, master (when the layout has one), then per elementwise state
/// its storage, then one f32 absmax buffer per q8 state, in state order,
/// then each of `numInputs` inputs in the grad's dtype, then (a rule that
/// readsMatrices) Dims and each state spanning rows, columns or matrices
/// (f32 in every layout), in state order.
/// nonNegative[s] (by StateInfo index; empty = none) says the compiler
/// proved state s never negative: its q8 storage uses the unsigned map.
/// The layout must have passed validateLayout for these states.
std::vector<BufferDesc> layoutBuffers(const Layout &layout, const std::vector<StateInfo> &states,
                                      const std::vector<bool> &nonNegative = {}, size_t numInputs = 0);

/// Whether `buffers` has the shape layoutBuffers gives `layout` (q8 of either
/// signedness, any absmax block).
bool buffersMatch(const std::vector<BufferDesc> &buffers, const Layout &layout,
                  const std::vector<StateInfo> &states, size_t numInputs = 0);

/// True when some state of `states` spans rows, columns or matrices: the
/// rule reads tensors as matrices (its buffers end with Dims and those states).
bool readsMatrices(const std::vector<StateInfo> &states);
/// True when some elementwise state of `states` is q8 under `layout`.
bool hasQ8States(const Layout &layout, const std::vector<StateInfo> &states);

/// The layout that tensors under the small-tensor threshold run instead of
/// `layout` (OptimizerOptions::smallTensorElements): every q8 state kept in
/// f32, as bitsandbytes does. A q8 layout's kernels are always compiled
/// together with this one, which is an ordinary layout entry of the artifact
/// (ABI v1 unchanged): the runtime finds it by its canonical name.
Layout smallTensorLayout(const Layout &layout);

/// The compiled form of a rule: its description and its kernels per layout (see the file comment).
struct RuleKernels {
  std::string name; ///< the rule's name
  std::vector<HyperInfo> hypers; ///< declaration order, then the step hypers
  std::vector<StateInfo> states;         ///< declaration order, scalar and elementwise mixed
  std::vector<ReductionInfo> reductions; ///< grouped by phase, ascending
  std::vector<InputInfo> inputs;         ///< declaration order
  /// Per phase (empty: every phase runs over the elements).
  std::vector<PhaseDomain> phaseDomains;
  /// In phase order, and in each phase in the order its kernel accumulates
  /// them. A column reduction in a pass over the elements: each chunk's
  /// kernel writes its columns' partial sums (see KernelFn), which the
  /// runtime adds in chunk order; every other one the kernel finishes.
  std::vector<AxisReductionInfo> axisReductions;
  /// Per phase over the elements (empty: none), the column scratch regions
  /// its kernels use: its column sums first, then values the same down each
  /// column that the kernel computes once per matrix (see KernelFn).
  std::vector<int> columnSlots;
  /// The rule draws random(stream): its kernels read each tensor's key in the
  /// uniform slot after the rule's own, as stochastic rounding does.
  bool usesRandom = false;
  int numPhases = 1; ///< passes over memory per step
  std::vector<int> numUniforms;          ///< per phase
  InitFn init = nullptr; ///< initial state values
  std::vector<UniformsFn> uniforms;      ///< per phase
  ScalarUpdateFn scalarUpdate = nullptr; ///< new scalar states after a step; null without scalar states
  std::vector<LayoutKernels> layouts;    ///< at least one
  /// The CPU the kernels were compiled for ("host" = this process's CPU).
  std::string cpu = "host";
};

} // namespace optrt
