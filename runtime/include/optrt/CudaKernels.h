// The CUDA form of one rule, as the runtime sees it: device code per GPU
// architecture (PTX text, and a cubin where ptxas was at hand), the entry
// names of its kernels, and the facts a launch needs. Nothing here depends
// on CUDA, MLIR or LLVM; the rule's description (hypers, states, reductions,
// phases) and its host init function stay in RuleKernels.
//
// Device ABI (every kernel is 1-D; pointers are device pointers, i64 is
// int64_t). The runtime owns these tables in one device allocation:
//   tensors:    int64 [T][4]  {group, firstChunk, endChunk, numElements}
//   chunks:     int64 [C][3]  {tensor, begin, end}   (element range of the tensor)
//   buffers:    void* [T][buffersPerTensor]  the layout's buffers (optrt::layoutBuffers:
//               param, grad, master, elementwise states, q8 absmax; a rule that
//               reads matrices: then Dims and its states per row, column or
//               matrix), each at the tensor's element 0
//   counter:    double steps completed, the u32 stochastic-rounding seed, the
//               u32 skip flag (set by stepoptions when a gradient is not finite,
//               cleared by advance), then double[G] each group's steps completed
//   hypers:     double[G][numHypers]                  per group
//   scalars:    double[T][numScalarStates]
//   reductions: double[T][max(1, numReductions)]
//   uniforms:   float [T][uniformStride]
//   step:       CudaStepRecord (below): the training step's options, the
//               dynamic loss scaler and the step's result
//   stats:      double[C]  each chunk's sum of squares of its gradient
//   partials:   double[C][partialStride]  a rule that sums columns: the last slot
//               of chunk c's row holds a pointer to its column partials, float
//               [column sums][matrices the chunk touches][cols], which the
//               runtime writes when the chunk is made
// One step, on one stream, with nothing read back to the host (so a whole
// step can be captured in a CUDA graph):
//   gradstats(chunks, C, buffers, stats)                      when the step reads the
//   stepoptions(C, stats, step, hypers, G, counter)           gradients first (one block)
//   for p in phases:
//     uniforms[p](T, tensors, hypers, counter, scalars, reductions, uniforms)
//     element[p](chunks, C, buffers, uniforms, partials, counter)   blockSize threads
//     finish[p](T, tensors, partials, reductions, chunks, buffers, counter)
//                                                             if p has reductions or column sums
//   scalars(T, tensors, hypers, counter, scalars, reductions) if the rule has scalar states
//   advance(counter, G)                                       one thread
// gradstats is an element kernel over one run's chunks (its own buffers
// table and range of stats); stepoptions adds the stats in a fixed order,
// decides, writes grad_scale and grad_clip into every group's hypers, the
// skip flag and the step's result, and updates the dynamic loss scale. Every
// kernel after it does nothing while the skip flag is set; advance clears it.
// uniforms and scalars take one thread per tensor: launch them with
// blockSize threads and ceil(T / blockSize) blocks. finish[p] takes a block
// per tensor (T blocks; it loops if given fewer).
// element[p] takes a block per chunk, in a grid-stride loop over chunks, and
// must be launched with exactly blockSize threads (its block reduction is
// compiled for that size). A layout with q8 states needs every chunk's begin
// to be a multiple of 256 (a q8 block never spans two chunks). The
// uniforms and scalars kernels pass a tensor's group's step (a group added
// later starts at 1), the per-tensor key takes the optimizer's. A rule that
// reads tensors as matrices (RuleKernels::phaseDomains) needs chunks of
// whole rows; element[p] of a pass over rows, columns or matrices does a
// tensor's whole work on its first chunk (begin 0; its other chunks'
// partials are the identity), and finish[p] first adds each column's chunk
// partials in chunk order into its scratch state. Kernels use step = the
// tensor's group's counter + 1. With stochastic rounding, uniforms[p] also
// writes the tensor's key (optrt::stochasticBits(seed, counter + 1, t)) as a
// u32 after the phase's own uniform values.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace optrt {

/// Device code for one GPU architecture.
struct CudaImage {
  std::string arch;       ///< "sm_80", "sm_90": the oldest GPU it runs on
  std::string ptx;        ///< always present; the driver JITs it where no cubin fits
  int ptxVersion = 0;     ///< PTX ISA version times 10 (78 = 7.8), for "driver too old"
  std::string cubin;      ///< ptxas output for exactly `arch`; empty when ptxas was absent
};

/// The device code of one rule in one layout, with the entry names and launch facts of the device ABI above.
struct CudaKernels {
  std::string rule; ///< the rule's name
  /// The storage layout the kernels read and write (canonical text of
  /// optrt/Layout.h); their buffers are optrt::layoutBuffers of it.
  std::string layout = "f32";
  /// Hypers folded into the code when it was built, with their values: the
  /// host description (RuleKernels) must say the same.
  std::vector<std::pair<std::string, double>> fixedHypers;
  std::vector<CudaImage> images; ///< ascending arch
  // Entry names, per phase (finish[p] is empty when phase p has no reduction).
  std::vector<std::string> uniformsEntries; ///< per phase: computes the uniform values of every tensor
  std::vector<std::string> elementEntries; ///< per phase: the element kernel over the chunk table
  std::vector<std::string> finishEntries; ///< per phase: combines the chunks' partials; empty where the phase has no reduction
  std::string scalarsEntry;      ///< empty when the rule has no scalar state
  std::string advanceEntry; ///< advances the device's step counter
  /// Each chunk's sum of squares of its gradient; stepoptions turns them into
  /// the step's decisions (both empty for a rule without the step hypers
  /// grad_scale and grad_clip, which then takes no step options).
  std::string gradStatsEntry;
  std::string stepOptionsEntry; ///< see gradStatsEntry
  // Launch facts and strides of the tables above, fixed when the code was built.
  int blockSize = 256; ///< threads per block every kernel is compiled for
  int buffersPerTensor = 2; ///< buffers per tensor in the buffers table
  int uniformStride = 1; ///< f32 slots per tensor in the uniforms table
  int partialStride = 1; ///< f64 slots per chunk in the partials table
};

/// The step segment of the tables (the device ABI above): what a step does
/// around the rule, read and written by the stepoptions kernel. Plain data,
/// the same bytes on host and device.
struct CudaStepRecord {
  // Set by the host, uploaded when they change:
  double lossScale = 1.0;       ///< the scale the gradients carry, unless dynamic
  double maxGradNorm = 0.0;     ///< clip by global norm to it; 0: no clipping
  double clipValue = 1e300;     ///< grad_clip's value (kGradClipDefault: none)
  double dynamic = 0.0;         ///< 1: the scale is `scale` below, updated by the step
  double growthFactor = 2.0;    ///< the dynamic scaler's settings (LossScalerOptions)
  double backoffFactor = 0.5;   ///< see growthFactor
  double growthInterval = 2000; ///< see growthFactor
  // The dynamic loss scaler (torch GradScaler's scale and growth tracker),
  // kept on the device: the trainer multiplies its loss by `scale`.
  float scale = 65536.0f;     ///< the scale of the next backward pass
  int32_t growthTracker = 0;  ///< clean steps since the scale last changed
  // Written by stepoptions for the caller (StepResult's fields):
  double gradNorm = 0.0;        ///< global L2 norm of the unscaled gradients
  double clipCoefficient = 1.0; ///< the factor norm clipping applied
  double skipped = 0.0;         ///< 1 when a gradient was not finite
  double scaleUsed = 1.0;       ///< the loss scale this step divided out
};

} // namespace optrt
