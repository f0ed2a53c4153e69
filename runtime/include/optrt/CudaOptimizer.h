// optrt::CudaOptimizer: the GPU counterpart of optrt::Optimizer. It owns the
// optimizer state of one rule in device memory for caller-owned device
// tensors, and runs the rule's CUDA kernels (CudaKernels.h) on a stream the
// caller gives.
//
// Why a class of its own rather than a device backend of optrt::Optimizer:
// the two share the rule description, the chunk table, the groups and hyper
// checks, the layouts' buffers and the state stream (RuleLayout, ChunkTable,
// GroupTable.h, LayoutBuffers.h, StateStream.h), but almost nothing of a step: here memory is
// device memory, a step is asynchronous on a stream, state reads copy to the
// host, and pointers are checked against a CUDA context. One interface over
// both would make every call answer "which memory is this?".
//
// The driver is loaded at run time (libcuda.so.1, dlopen): a program built
// with this class runs on machines without a GPU and gets a named CudaError
// (CudaErrc::NoDriver / NoDevice) when it tries to make one.
//
// A step is a fixed sequence of kernel launches whose arguments never change
// between steps (the step number, hypers, scalar states and reductions live
// in device memory), and it reads nothing back to the host: it can be
// captured in a CUDA graph and replayed (torch's `capturable`), provided
// nothing needs uploading during the captured step, i.e. the gradient
// pointers and step options are those of the previous step and no setHyper
// came in between. Loss scaling, the non-finite skip and clipping are
// decided on the device too (CudaStepOptions). stepCount() reads the
// device's counters, so it counts replays and leaves out skipped steps.
//
// With a communicator (CudaOptimizerOptions::communicator) the optimizer is
// sharded across ranks as optrt::Optimizer is (ZeRO stage 1,
// docs/sharding.md "On the GPU"); its steps then agree with the other ranks
// on the host first and are not capturable.
//
// Every call checks its arguments before it changes anything or launches
// anything: an exception leaves parameters, state and settings as they were.
// Not safe to use from two threads at once.
#pragma once

#include "optrt/Communicator.h"
#include "optrt/CudaError.h"
#include "optrt/CudaKernels.h"
#include "optrt/LossScaler.h"
#include "optrt/MemoryReport.h"
#include "optrt/RuleKernels.h"
#include "optrt/StepOptions.h"

#include <cstddef>
#include <cstdint>
#include <istream>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

namespace optrt {

/// A device address (CUdeviceptr).
using DevicePtr = std::uint64_t;
/// A CUstream; nullptr is the legacy default stream.
using CudaStream = void *;

/// The values of one of the rule's inputs for one CUDA step (StepInput's
/// device form).
struct CudaStepInput {
  std::string name; ///< as the rule declares it
  /// perGroup[g][i]: the input of tensor i of group g, a device pointer in
  /// the layout's grad dtype; perGroup[g] empty gives group g none this step.
  std::vector<std::vector<DevicePtr>> perGroup;
};

/// What a CUDA step does around the rule: StepOptions' device form. A step
/// that reads the gradients first (a loss scale, fixed or dynamic,
/// checkFinite or maxGradNorm) decides on the device (the stepoptions
/// kernel, optrt/CudaKernels.h): a non-finite gradient skips the step there,
/// with nothing written and the step counters unchanged, and the host learns
/// it only when it asks (lastStepResult), so the step stays capturable.
struct CudaStepOptions {
  /// The factor the gradients carry; finite and positive. A value other
  /// than 1 implies checkFinite. Ignored with dynamicLossScale.
  double lossScale = 1.0;
  /// The gradients carry the optimizer's device-resident loss scale
  /// (lossScaleAddress(), torch GradScaler's semantics: setLossScaler); the
  /// step divides it out, skips on a non-finite gradient, and updates it for
  /// the next step on the device (backoff after a skip, growth after
  /// growthInterval clean steps). Implies checkFinite.
  bool dynamicLossScale = false;
  /// Read the gradients first and skip the step when any element is Inf or NaN.
  bool checkFinite = false;
  /// Clip by the global L2 norm of every gradient (after unscaling), as
  /// torch.nn.utils.clip_grad_norm_. Finite and positive. Implies checkFinite.
  std::optional<double> maxGradNorm;
  /// Clip each element to [-clipValue, clipValue] after unscaling and norm
  /// clipping (in the kernels: no read of its own). Finite and positive.
  std::optional<double> clipValue;
  /// Values of the rule's inputs (the step(grads, stream, inputs) overload).
  std::vector<CudaStepInput> inputs;
};

/// How a CudaOptimizer runs: device, chunking, layout, small-tensor threshold, seed.
struct CudaOptimizerOptions {
  /// -1: the CUDA context current on the calling thread, or device 0's
  /// primary context when none is current. N >= 0: device N's primary context.
  int device = -1;
  /// The most elements of one tensor that one block updates per chunk.
  /// Small, so that the chunks of a step spread evenly over the resident
  /// blocks (a block's last chunk is the step's tail: with 64K-element
  /// chunks GPT-2 small has ~1.8 chunks per block of an H100, and blocks
  /// with 2 set the time; with 4K ~29, so at most one chunk in 29 is lost).
  size_t chunkElements = 4096;
  /// The storage layout (written as in optrt/Layout.h), as
  /// OptimizerOptions::layout: its CUDA kernels (and, for q8 states, those of
  /// its small-tensor fallback) must have been built. Params and gradients
  /// are the caller's device buffers in the layout's dtypes.
  std::string layout = "f32";
  /// Tensors under this many elements keep q8 states in f32, as on the CPU.
  size_t smallTensorElements = 4096;
  /// Stochastic rounding's seed (OptimizerOptions::seed): the same seed gives
  /// the CPU optimizer's bits.
  uint32_t seed = 0;
  /// Shards the state across the ranks of this communicator (ZeRO stage 1,
  /// docs/sharding.md), as OptimizerOptions::communicator: every rank
  /// passes the same rule, options and groups and holds every param, keeps
  /// and steps only its part of each group (cut between chunks), and each
  /// step ends by gathering the updated params. The NCCL engine moves device
  /// memory on the step's stream; an engine of host memory (MPI) moves it
  /// through host buffers, synchronising the stream around each collective.
  /// A sharded step agrees on its arguments with the other ranks first (on
  /// the host), so it cannot be captured in a CUDA graph. Not yet sharded:
  /// rules that read matrices, rules with inputs, and checkpoints (named
  /// errors). Null: one process owns everything.
  std::shared_ptr<Communicator> communicator;
  /// With a communicator: what the step's gradients are on each rank.
  ShardedGradients gradients = ShardedGradients::Average;
};

/// optrt::Optimizer on a GPU: the same groups, layouts, state and checkpoints in device memory, a step as a fixed sequence of launches (capturable in a CUDA graph).
class CudaOptimizer {
public:
  /// `host` describes the rule and provides its init function; `device` is
  /// its CUDA code, built from the same rule with the same fixed hypers.
  /// Throws std::invalid_argument for null or inconsistent kernels (checked
  /// first, without touching the driver), then CudaError: NoDriver, NoDevice,
  /// NoBinaryForGpu (no image for this GPU's architecture), DriverTooOld
  /// (the driver cannot JIT the PTX), DriverCall.
  CudaOptimizer(std::shared_ptr<const RuleKernels> host, std::shared_ptr<const CudaKernels> device,
                CudaOptimizerOptions options = {});
  /// As above with the CUDA kernels of several layouts: the optimizer takes
  /// those of options.layout and of its small-tensor fallback, and throws
  /// std::invalid_argument naming the layout (and listing the ones given)
  /// when one is missing. The host kernels must carry the same layouts.
  CudaOptimizer(std::shared_ptr<const RuleKernels> host, std::vector<std::shared_ptr<const CudaKernels>> device,
                CudaOptimizerOptions options = {});
  /// The CUDA kernels an artifact built with the CUDA target carries
  /// (LayoutKernels::cuda of each layout). Throws std::invalid_argument
  /// naming the rule when it has none (build it with optc --cuda or
  /// optdsl_add_rule(... TARGETS cpu cuda)) or the layout when it lacks
  /// options.layout's, then as above.
  explicit CudaOptimizer(std::shared_ptr<const RuleKernels> artifact, CudaOptimizerOptions options = {});
  ~CudaOptimizer();
  /// Moves the optimizer; the moved-from one may only be destroyed or assigned to.
  CudaOptimizer(CudaOptimizer &&) noexcept;
  /// Moves the optimizer; the moved-from one may only be destroyed or assigned to.
  CudaOptimizer &operator=(CudaOptimizer &&) noexcept;

  /// The host description of the rule (hypers, states, phases).
  const RuleKernels &rule() const;
  /// "cubin sm_90" or "ptx sm_80 (JIT)": which image the driver runs.
  const std::string &imageInUse() const;

  /// Adds a group of device tensors (sizes[i] elements at params[i], stored
  /// in the layout's param dtype, in the optimizer's context, kept alive by
  /// the caller). Allocates the tensors' master copies (initialised to the
  /// params' exact values, or zero remainders) and states in the layout's
  /// storage. Synchronizes the context. Throws std::invalid_argument as optrt::Optimizer::addGroup
  /// does, CudaError BadPointer (not a device pointer, not aligned to its dtype,
  /// or its allocation ends before the tensor does), WrongContext, and
  /// OutOfMemory when the grown state arena or tables do not fit.
  int addGroup(std::vector<DevicePtr> params, std::vector<size_t> sizes,
               std::map<std::string, double> hyperOverrides = {}, std::vector<std::vector<size_t>> shapes = {});

  /// Groups added so far.
  int numGroups() const;
  /// Tensors of one group; std::out_of_range for a bad group.
  size_t numTensors(int group) const;

  /// Enqueues one step of every tensor on `stream`; returns without waiting.
  /// gradsPerGroup[g][i]: the device gradient of tensor i of group g, never
  /// written. Gradient pointers that differ from the previous step's are
  /// checked like params. Throws std::logic_error before any addGroup,
  /// std::invalid_argument for wrong counts or null pointers, CudaError.
  void step(const std::vector<std::vector<DevicePtr>> &gradsPerGroup, CudaStream stream = nullptr);
  /// The same step with values of the rule's inputs (`input NAME;`, as
  /// StepOptions::inputs on the CPU: device pointers in the grad dtype; an
  /// input left out, or given to no tensor of a group, reads 0 there, which
  /// only a rule that tests given(NAME) allows). Named errors, checked before
  /// anything is enqueued: an unknown input, one given twice, wrong counts,
  /// null or wrong-size pointers, a required input missing. A step whose
  /// inputs (pointers, or given() per group) differ from the previous one's
  /// uploads them first, as new gradient pointers do.
  void step(const std::vector<std::vector<DevicePtr>> &gradsPerGroup, CudaStream stream,
            const std::vector<CudaStepInput> &inputs);
  /// The step with loss scaling, the non-finite skip and clipping fused
  /// (CudaStepOptions; docs/training-step.md "CUDA"): one extra read of the
  /// gradients when it needs their norm or a finiteness check, and no
  /// transfer to the host. Named errors, checked before anything is
  /// enqueued: as Optimizer::step's for the options, as above for the rest.
  /// Changed options are uploaded before the step (as new gradient
  /// pointers are), so a captured step keeps the options it was captured with.
  void step(const std::vector<std::vector<DevicePtr>> &gradsPerGroup, CudaStream stream,
            const CudaStepOptions &options);
  /// What the last step did (Optimizer::step's StepResult: skipped, the
  /// gradients' norm before clipping, the clip coefficient), read from the
  /// device after everything enqueued so far has finished (synchronizes).
  /// A step that did not read the gradients says gradNorm NaN, not skipped.
  /// Sharded, communicationSeconds is the host's time in the step's
  /// collectives (with NCCL the time to enqueue them; staged through the
  /// host, the transfers too). std::logic_error before any step.
  StepResult lastStepResult() const;
  /// The device address of the last step's result: a CudaStepRecord
  /// (optrt/CudaKernels.h) whose fields gradNorm, clipCoefficient, skipped
  /// and scaleUsed the step writes, for a trainer that reads them on the
  /// device. Valid until the next addGroup.
  DevicePtr stepRecordAddress() const;

  /// Resets the device-resident dynamic loss scaler (CudaStepOptions::
  /// dynamicLossScale) to `options.initScale` with a growth tracker of
  /// `growthTracker` (to resume a run). Until called, GradScaler's defaults.
  /// Throws std::invalid_argument as DynamicLossScaler does, and for an
  /// interval or tracker beyond int32 (the device keeps them there) or a
  /// tracker not below the interval. Synchronizes.
  void setLossScaler(LossScalerOptions options = {}, int64_t growthTracker = 0);
  /// The dynamic loss scale the next backward pass multiplies the loss by,
  /// read from the device (synchronizes).
  float lossScale() const;
  /// The dynamic scaler's count of clean steps since its scale last changed
  /// (synchronizes).
  int64_t lossScaleGrowthTracker() const;
  /// The device address of that scale (one float32), for a trainer that
  /// scales its loss on the device, inside a captured graph too. Valid
  /// until the next addGroup. std::logic_error before any addGroup.
  DevicePtr lossScaleAddress() const;

  /// Steps completed on the device: skipped steps excluded, graph replays
  /// included. Synchronizes once the optimizer has parameters.
  int64_t stepCount() const;
  /// Steps group `group` has taken (as Optimizer::stepCount(group)): a group
  /// added later starts at step 1, on the device too. Synchronizes.
  /// std::out_of_range for a bad group.
  int64_t stepCount(int group) const;

  /// As optrt::Optimizer; the new value reaches the device with the next step.
  void setHyper(const std::string &name, double value, int group = -1);
  /// The value hyper `name` has in `group`.
  double hyper(const std::string &name, int group) const;
  /// The device address of hyper `name` of `group` (one double), for LR
  /// schedules inside a captured graph: write it on the device (a kernel, or
  /// a copy from pinned memory captured with the step) instead of calling
  /// setHyper. Valid until the next addGroup; a later setHyper of the same
  /// hyper overwrites it at the next step.
  DevicePtr hyperAddress(const std::string &name, int group) const;

  /// The elements [first, second) of tensor `tensor` of `group` whose state
  /// this rank keeps and steps (Optimizer::ownedRange): [0, size) without a
  /// communicator. readState, writeState and master address these elements.
  std::pair<size_t, size_t> ownedRange(int group, size_t tensor) const;

  /// Decoded f32 copies of state in any storage, taken after everything
  /// enqueued so far has finished (these synchronize the context), as
  /// Optimizer::readState. state() is the same as readState().
  std::vector<float> readState(const std::string &name, int group, size_t tensor) const;
  /// A copy of elementwise state `name` of one tensor (f32 layouts), synchronising.
  std::vector<float> state(const std::string &name, int group, size_t tensor) const;
  /// Scalar state `name` of one tensor, synchronising.
  double scalarState(const std::string &name, int group, size_t tensor) const;
  /// Encodes `values` (the tensor's size) into the state's storage, as
  /// Optimizer::writeState (q8: new absmax per block). Synchronizes.
  void writeState(const std::string &name, int group, size_t tensor, const std::vector<float> &values);
  /// The f32 master (joined from param and remainder for master=remainder);
  /// std::invalid_argument for a layout without one.
  std::vector<float> master(int group, size_t tensor) const;
  /// The layout the tensor runs: the optimizer's, or its small-tensor fallback.
  const std::string &tensorLayout(int group, size_t tensor) const;
  /// Bytes per parameter, as Optimizer::memoryReport (optrt::memoryReport
  /// with smallTensorElements); sharded, this rank's master and state bytes.
  /// std::logic_error before any addGroup.
  MemoryReport memoryReport() const;

  /// Optimizer::saveState/loadState on the device's state, in the same
  /// stream format: state saved by either optimizer loads into the other
  /// (same rule, tensors and layout, or `convert`). Both synchronize; the
  /// step count loaded is also the device's step counter. Sharded:
  /// std::logic_error (not yet).
  void saveState(std::ostream &out) const;
  /// Reads state saved by either optimizer (see Optimizer::loadState).
  void loadState(std::istream &in, bool convert = false);
  /// To and from a file, atomically, as Optimizer's.
  void saveState(const std::string &path) const;
  /// Reads state from a file (see Optimizer::loadState).
  void loadState(const std::string &path, bool convert = false);

  /// Device bytes of optimizer state: the arena (padding included) plus scalars.
  size_t stateBytes() const;
  /// Parameters (elements) of every tensor of every group.
  size_t numParams() const;

private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

} // namespace optrt
