// optrt::Optimizer owns the optimizer state of one rule for caller-owned
// parameter tensors, and runs the rule's compiled kernels (RuleKernels.h)
// over them. Tensors come in groups, each with its own hyper values (as
// torch.optim's param_groups). All elementwise state lives in one 64-byte
// aligned arena; scalar states are one double per tensor. A step is, per
// phase of the rule, one parallel pass over a chunk table that covers every
// tensor of every group, on a pool of persistent threads; reductions are
// combined in chunk order, so results are bitwise identical for any thread
// count. Every call checks its arguments before it changes anything: an
// exception leaves parameters, state and settings as they were.
//
// An Optimizer is not safe to use from two threads at once; a moved-from one
// may only be destroyed or assigned to.
#pragma once

#include "optrt/Communicator.h"
#include "optrt/MemoryReport.h"
#include "optrt/RuleKernels.h"
#include "optrt/Schedule.h"
#include "optrt/StepOptions.h"

#include <cstddef>
#include <cstdint>
#include <iosfwd>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace optrt {

/// How an Optimizer runs: threads, chunking, the layout, the small-tensor threshold, the seed, sharding.
struct OptimizerOptions {
  /// Threads of a step's parallel pass, the calling thread included;
  /// 0 means std::thread::hardware_concurrency().
  unsigned threads = 0;
  /// The most elements of one tensor that one task updates. Small enough to
  /// spread a large tensor over threads, large enough that per-chunk costs
  /// (a call, a partials slot) vanish.
  size_t chunkElements = 65536;
  /// The storage layout to run, in the written form of Layout.h; the rule
  /// must have been compiled for it.
  std::string layout = "f32";
  /// Tensors with fewer elements keep q8 states in f32 (bitsandbytes'
  /// min_8bit_size): they run the layout's small-tensor fallback
  /// (smallTensorLayout), compiled into every q8 layout's kernels. For q8
  /// layouts chunkElements must be a multiple of 256 (a block never spans
  /// two chunks).
  size_t smallTensorElements = 4096;
  /// Seed of stochastic rounding (layouts with rounding=stochastic) and of a
  /// rule's random(stream). Tensor t (0, 1, ... in addGroup order) at step s
  /// gets the key stochasticBits(seed, s, t) (Storage.h), passed to its
  /// kernels in the uniform slot after the rule's own; buffer b of its
  /// layout rounds element i with stochasticBitsFromKey(key ^ b * 0x9E3779B9,
  /// i), and random(k) draws uniformFromBits(stochasticBitsFromKey(key ^
  /// randomStreamSalt(k), i)). Nothing depends on threads or chunks:
  /// results are reproducible for any thread count.
  uint32_t seed = 0;
  /// Shards the state across the ranks of this communicator (ZeRO stage 1,
  /// docs/sharding.md): every rank passes the same rule, options and groups
  /// and holds every param, but keeps and steps only its own part of each
  /// group (cut at chunk boundaries), and each step ends by gathering the
  /// updated params. Params after any number of steps are bitwise those of
  /// one process, for any number of ranks. Null: one process owns everything.
  /// An engine of host memory (MPI); one of device memory (NCCL) is refused
  /// by name.
  std::shared_ptr<Communicator> communicator;
  /// With a communicator: what step's gradients are on each rank.
  ShardedGradients gradients = ShardedGradients::Average;
};

/// Owns the optimizer state of one rule and steps it (see the file comment).
class Optimizer {
public:
  /// Throws std::invalid_argument when kernels is null or inconsistent
  /// (per-phase tables of the wrong length, null functions, reductions out of
  /// phase order, duplicate names), when it was not compiled for
  /// options.layout, or when options.chunkElements is 0. Sharded, every rank
  /// throws when any rank does, or when the ranks' rules or options differ.
  explicit Optimizer(std::shared_ptr<const RuleKernels> kernels, OptimizerOptions options = {});
  ~Optimizer();
  /// Moves the optimizer; the moved-from one may only be destroyed or assigned to.
  Optimizer(Optimizer &&) noexcept;
  /// Moves the optimizer; the moved-from one may only be destroyed or assigned to.
  Optimizer &operator=(Optimizer &&) noexcept;

  /// The rule it runs (hypers, states, phases, layouts).
  const RuleKernels &rule() const;
  /// Threads of a step, the calling thread included.
  unsigned numThreads() const;
  /// The most elements one task updates (OptimizerOptions::chunkElements).
  size_t chunkElements() const;

  /// Adds a group of tensors: params[i] points at sizes[i] floats that the
  /// caller owns and keeps alive for the optimizer's lifetime. The group's
  /// hypers are the rule's defaults with hyperOverrides applied; its state is
  /// initialised by the rule's init with those hypers. Returns the group's
  /// index (0, 1, ...). Throws std::invalid_argument for an empty group,
  /// mismatched lengths, a null pointer, a zero size, params that overlap
  /// another tensor's, an unknown hyper name (the message lists the rule's
  /// hypers), a non-finite value, or a new value for a fixed hyper. Moves the
  /// state arena: spans from state() taken earlier are invalid afterwards.
  /// `shapes` (empty: every tensor 1-D) gives each tensor's dimensions, what
  /// a rule's `rank`, `rows` and `cols` read (its last two dimensions; a
  /// rank-1 tensor is one row); std::invalid_argument when their product is
  /// not the tensor's size.
  int addGroup(std::vector<float *> params, std::vector<size_t> sizes,
               std::map<std::string, double> hyperOverrides = {}, std::vector<std::vector<size_t>> shapes = {});
  /// addGroup for params stored in the layout's param dtype (bf16/f16 bit
  /// patterns for param=bf16/f16; f32 otherwise): sizes count elements. A
  /// master copy, when the layout has one, starts as the exact f32 value of
  /// each param. (A separate name: overloads on vector<float *> and
  /// vector<void *> would make every braced call ambiguous.) The float*
  /// addGroup throws std::invalid_argument on a layout whose params are not f32.
  int addGroupStored(std::vector<void *> params, std::vector<size_t> sizes,
                     std::map<std::string, double> hyperOverrides = {}, std::vector<std::vector<size_t>> shapes = {});

  /// Groups added so far.
  int numGroups() const;
  /// Tensors of one group; std::out_of_range for a bad group.
  size_t numTensors(int group) const;

  /// One step of every tensor of every group: gradsPerGroup[g][i] is the
  /// gradient of tensor i of group g (as many floats as the tensor; never
  /// written). `options` adds loss scaling, the non-finite skip and clipping
  /// (StepOptions.h); the result says whether the step was skipped and the
  /// gradients' norm. Scheduled hypers take their values first. Throws, before
  /// anything changes: std::logic_error before any addGroup;
  /// std::invalid_argument when the number of groups or of a group's
  /// gradients is wrong, a gradient is null, an option is out of its range,
  /// options need the step hypers and the rule lacks them (kernels built by
  /// hand or by an optc older than them), or a schedule gives a value outside
  /// its hyper's range.
  StepResult step(const std::vector<std::vector<const float *>> &gradsPerGroup, const StepOptions &options = {});
  /// step for gradients stored in the layout's grad dtype. The float* step
  /// throws std::invalid_argument on a layout whose grads are not f32.
  StepResult stepStored(const std::vector<std::vector<const void *>> &gradsPerGroup,
                        const StepOptions &options = {});
  /// Steps taken so far (skipped steps do not count).
  int64_t stepCount() const;
  /// Steps group `group` has taken: its next step passes stepCount(group) + 1
  /// to the kernels (a group added later starts at step 1, as torch's
  /// per-parameter step). std::out_of_range for a bad group.
  int64_t stepCount(int group) const;

  /// Attaches `schedule` to hyper `name` of one group, or of every group when
  /// group is -1: before each step the hyper takes schedule(stepCount(g)).
  /// Throws std::invalid_argument for an unknown, fixed or step hyper, or when
  /// the schedule's next value is outside the hyper's range (later values are
  /// checked before each step); std::out_of_range for a bad group.
  void schedule(const std::string &name, Schedule schedule, int group = -1);
  /// Detaches the schedule of hyper `name` (it keeps its last value).
  void unschedule(const std::string &name, int group = -1);

  /// Sets a hyper for the following steps (LR schedules, warm-up) of one
  /// group, or of every group when group is -1. Throws std::invalid_argument
  /// for an unknown name, a non-finite value or a new value for a fixed hyper
  /// (folded into the kernels), a step hyper (grad_scale, grad_clip: set
  /// through StepOptions) or a hyper that follows a schedule,
  /// std::out_of_range for a bad group.
  void setHyper(const std::string &name, double value, int group = -1);
  /// The value hyper `name` has in `group` (a scheduled one: the value of the last step).
  double hyper(const std::string &name, int group) const;

  /// The elements [first, second) of tensor `tensor` of `group` whose state
  /// this rank keeps and steps: [0, size) without a communicator; sharded,
  /// this rank's part of the tensor (possibly empty). state, readState,
  /// writeState and master read and write these elements only.
  std::pair<size_t, size_t> ownedRange(int group, size_t tensor) const;

  /// The elementwise state `name` of one tensor (as many floats as the
  /// tensor; sharded, as its ownedRange; a state per row or column
  /// (`state v[rows];`): one float per row or column of each of the
  /// tensor's matrices), valid until the next addGroup. Throws std::invalid_argument
  /// for an unknown or scalar state, or one not stored as f32 for this tensor
  /// (use readState/writeState), std::out_of_range for bad indices.
  std::span<float> state(const std::string &name, int group, size_t tensor);
  /// A read-only view of the same state (errors as above).
  std::span<const float> state(const std::string &name, int group, size_t tensor) const;
  /// A decoded f32 copy of elementwise state `name` of one tensor, whatever
  /// its storage (f32, bf16, f16, q8). Errors as state().
  std::vector<float> readState(const std::string &name, int group, size_t tensor) const;
  /// Stores `values` (one per element) into state `name`, converting to its
  /// storage (bf16/f16 round to nearest even; q8 quantised block-wise).
  /// Throws std::invalid_argument also for a wrong length.
  void writeState(const std::string &name, int group, size_t tensor, std::span<const float> values);
  /// The f32 master copy of one tensor's params (with master=remainder,
  /// joined from the params and the remainders); throws
  /// std::invalid_argument when the layout has no master.
  std::vector<float> master(int group, size_t tensor) const;
  /// The storage layout tensor `tensor` of `group` runs (the optimizer's, or
  /// its small-tensor fallback), in written form.
  const std::string &tensorLayout(int group, size_t tensor) const;
  /// Bytes per parameter of param, grad, master and state over this
  /// optimizer's tensors (optrt::memoryReport with its small-tensor rule).
  /// Sharded, master and state count this rank's parts only.
  MemoryReport memoryReport() const;
  /// Sharded: master and state of every rank together (every element kept
  /// once, so the same as one process keeps), params and grads as one rank
  /// holds them. Needs no communication. Without a communicator,
  /// memoryReport().
  MemoryReport memoryReportAllRanks() const;

  /// The scalar state `name` of one tensor. Throws std::invalid_argument for
  /// an unknown or elementwise state, std::out_of_range for bad indices.
  double scalarState(const std::string &name, int group, size_t tensor) const;

  /// Sharded (a communicator in the options), saveState(path) and
  /// loadState(path) are collective: see their comments; the stream forms,
  /// exportSafetensors and importSafetensors throw std::logic_error.
  ///
  /// Writes the step counts (the optimizer's and each group's), every
  /// group's hypers (not the step hypers) and every tensor's state (master
  /// copies, each state in its storage, q8 absmax, scalar states) with the
  /// rule's name and the layout it is stored in, as checksummed sections
  /// (docs/checkpoints.md). Params are the caller's. Throws
  /// std::runtime_error when writing fails.
  void saveState(std::ostream &out) const;
  /// saveState into the file `path`, atomically: a temporary file beside it
  /// is written, synced to disk and renamed over `path`, so a crash leaves the
  /// previous file intact. Throws std::runtime_error naming the path and the
  /// system's reason. Sharded, `path` is a folder (on a file system every
  /// rank sees): each rank writes its part as `rank-R-of-N.state` (the stream
  /// of its parts of the tensors), then rank 0 writes `manifest.json` saying
  /// which part each file holds (docs/checkpoints.md); every rank throws
  /// when any rank's write failed.
  void saveState(const std::string &path) const;
  /// Reads state written by saveState into this optimizer, which must run the
  /// same rule over the same groups of tensors of the same sizes in the same
  /// order; the groups' hypers and step counts become the saved ones. State
  /// saved under another layout throws std::invalid_argument naming both
  /// unless `convert` is true: then each buffer is decoded from its saved
  /// storage and re-encoded into this layout's (narrowing loses precision; a
  /// master this layout has but the file lacks keeps its value from addGroup;
  /// with master=remainder the caller restores the params it had when
  /// saving). A truncated, damaged (any checksum that does not match, any
  /// byte after the end) or foreign stream, another rule, other groups or
  /// tensors, or a saved hyper this rule lacks or refuses throw
  /// std::invalid_argument naming the problem and the section. The whole
  /// stream is read and checked before anything changes. Streams of
  /// versions 1 and 2 (before checksums) are still read.
  void loadState(std::istream &in, bool convert = false);
  /// loadState from the file `path`; a file that cannot be opened throws
  /// std::invalid_argument naming it and the system's reason. `path` may also
  /// be a sharded optimizer's folder, saved by any number of ranks: each
  /// part this optimizer keeps (all of it in one process) is read from the
  /// files that hold it. A sharded optimizer also loads one process's file,
  /// keeping its own parts. Sharded, every rank reads and checks what it
  /// needs, and nothing changes on any rank unless every rank succeeded.
  void loadState(const std::string &path, bool convert = false);

  /// The state as torch.optim names it, in a safetensors file
  /// (docs/checkpoints.md): per tensor i (addGroup order, as torch numbers a
  /// state_dict's params) `state.i.step` (F32 scalar, its group's step
  /// count), `state.i.NAME` for each state NAME (F32 [size], decoded from any storage) and
  /// scalar states (F64); the metadata holds the rule, the layout and
  /// `param_groups` (JSON: each group's hypers, `params`, `step`).
  /// tools/torch_optim_state.py converts it to and from torch's
  /// state_dict. Written atomically; throws std::runtime_error when writing
  /// fails.
  void exportSafetensors(const std::string &path) const;
  /// Reads such a file into this optimizer (same rule, groups and tensor
  /// sizes; any layout: values are encoded into this one's storage). The
  /// groups take the file's hypers and step counts. Throws
  /// std::invalid_argument naming the file and the problem (not safetensors,
  /// another rule, other groups, a missing or mis-sized state, a step that
  /// differs within a group, a hyper this rule lacks or refuses) before
  /// anything changes.
  void importSafetensors(const std::string &path);

  /// Bytes of optimizer state: the arena (padding included; master copies
  /// too) plus the scalar states.
  size_t stateBytes() const;
  /// Parameters (elements) of every tensor of every group.
  size_t numParams() const;
  /// stateBytes() / numParams(); 0 before any group.
  double stateBytesPerParam() const;

private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

} // namespace optrt
