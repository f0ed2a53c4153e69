// opt-split-phases: the flat update becomes one opt.phase per pass over
// memory (see Passes.td). Each phase's element region is rebuilt from what
// the phase must produce (its stores and reduction inputs), cloning their
// computation backwards from those roots; values earlier phases left in a
// buffer are reloaded rather than recomputed.
#include "optdsl/Transforms/Passes.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/IRMapping.h"
#include "llvm/ADT/StringMap.h"

#include <algorithm>
#include <functional>
#include <optional>
#include <map>
#include <set>

namespace optdsl {

#define GEN_PASS_DEF_SPLITPHASES
#include "optdsl/Transforms/Passes.h.inc"

namespace {

using namespace mlir;

/// A per-element buffer: a state's symbol, or null for the parameter.
using Buffer = FlatSymbolRefAttr;
struct BufferOrder {
  bool operator()(Buffer a, Buffer b) const { return a.getAsOpaquePointer() < b.getAsOpaquePointer(); }
};
template <typename T> using BufferMap = std::map<Buffer, T, BufferOrder>;

/// What a pass runs once for (a rule that reads tensors as matrices): each
/// element, or, between the passes over the elements, each row or each
/// column of each matrix, or each matrix (a reduction over the tensor of a
/// value per matrix).
enum class Domain { Elements, Rows, Cols, Matrices };

/// What values vary along, as sema's axes: a bit per batch, row, column.
using Axes = unsigned;
constexpr Axes kBatch = 1, kRow = 2, kCol = 4, kElement = kBatch | kRow | kCol;

Axes axesOfAxis(std::optional<StringRef> axis) {
  if (!axis)
    return kElement;
  return *axis == "rows" ? kBatch | kRow : *axis == "cols" ? kBatch | kCol : kBatch;
}

/// The domain that computes a value of these axes (a per-matrix value: the
/// pass over rows or columns that reduces it; callers pass what varies).
Domain domainOf(Axes axes) {
  if (axes == (kBatch | kRow))
    return Domain::Rows;
  if (axes == (kBatch | kCol))
    return Domain::Cols;
  if (axes == kBatch)
    return Domain::Matrices;
  return Domain::Elements;
}

/// Per flat value: what it varies along (0: uniform), from its leaves.
class AxesOf {
public:
  explicit AxesOf(opt::RuleOp rule) {
    for (opt::StateOp state : rule.getBody().getOps<opt::StateOp>())
      if (!state.getScalar())
        stateAxes_[state.getSymNameAttr().getValue()] = axesOfAxis(state.getAxis());
  }

  Axes ofState(Buffer buffer) const { return buffer ? stateAxes_.lookup(buffer.getValue()) : kElement; }

  Axes operator()(Value value) {
    if (auto it = memo_.find(value); it != memo_.end())
      return it->second;
    Axes axes = 0;
    Operation *op = value.getDefiningOp();
    if (!op || !value.getType().isF32()) {
      axes = 0; // uniform (f64, or a truth value of uniforms: i1 of them is handled below)
      if (op && value.getType().isInteger(1))
        for (Value operand : op->getOperands())
          axes |= (*this)(operand);
    } else if (isa<opt::ParamOp, opt::GradOp, opt::GetInputOp, opt::RandomOp>(op)) {
      axes = kElement;
    } else if (auto load = dyn_cast<opt::LoadStateOp>(op)) {
      axes = ofState(load.getStateAttr());
    } else if (auto reduce = dyn_cast<opt::ReduceOp>(op)) {
      // Along an axis: the argument's axes but the reduced one.
      Axes reduced = reduce.getKind().starts_with("row_") ? kCol : kRow;
      axes = (*this)(reduce.getInput()) & ~reduced;
    } else {
      for (Value operand : op->getOperands())
        axes |= (*this)(operand);
    }
    memo_[value] = axes;
    return axes;
  }

private:
  llvm::StringMap<Axes> stateAxes_;
  DenseMap<Value, Axes> memo_;
};

/// The f32 writes and reductions of the flat update, in program order.
struct FlatUpdate {
  struct Store {
    Buffer buffer;
    int64_t phase;
    Value value;
    Location loc;
  };
  std::vector<Store> stores;
  std::vector<opt::ReduceOp> reductions;

  explicit FlatUpdate(Block &body) {
    for (Operation &op : body) {
      if (auto store = dyn_cast<opt::StoreParamOp>(op))
        stores.push_back({Buffer(), static_cast<int64_t>(store.getPhase()), store.getValue(), store.getLoc()});
      else if (auto store = dyn_cast<opt::StoreStateOp>(op); store && store.getValue().getType().isF32())
        stores.push_back({store.getStateAttr(), static_cast<int64_t>(store.getPhase()), store.getValue(),
                          store.getLoc()});
      else if (auto reduce = dyn_cast<opt::ReduceOp>(op))
        reductions.push_back(reduce);
    }
  }

  /// Per buffer, the value of its last write in a phase before `phase`: what
  /// the buffer holds when `phase` begins.
  BufferMap<Value> heldAt(int64_t phase) const {
    BufferMap<Value> held;
    for (const Store &store : stores)
      if (store.phase < phase)
        held[store.buffer] = store.value;
    return held;
  }

  /// The last write to each buffer in `phase`, in program order: what the
  /// phase leaves in memory.
  std::vector<const Store *> writesOf(int64_t phase) const {
    BufferMap<const Store *> last;
    for (const Store &store : stores)
      if (store.phase == phase)
        last[store.buffer] = &store;
    std::vector<const Store *> writes;
    for (const Store &store : stores)
      if (store.phase == phase && last[store.buffer] == &store)
        writes.push_back(&store);
    return writes;
  }

  std::vector<opt::ReduceOp> reductionsOf(int64_t phase) const {
    std::vector<opt::ReduceOp> ours;
    for (opt::ReduceOp reduce : reductions)
      if (static_cast<int64_t>(reduce.getPhase()) == phase)
        ours.push_back(reduce);
    return ours;
  }

  /// Per buffer of `domain`, the value of its last write in `phase`.
  BufferMap<Value> lastWritesIn(int64_t phase, Domain domain, AxesOf &axes) const {
    BufferMap<Value> last;
    for (const Store *store : writesOf(phase))
      if (domainOf(axes.ofState(store->buffer)) == domain)
        last[store->buffer] = store->value;
    return last;
  }
};

/// Where each reduction runs. Sema gives a reduction the earliest phase its
/// argument allows; run there, it may make that phase read memory nothing
/// else of it reads (LAMB's norm(param) in the phase of its global clipping,
/// which reads only the gradients). So each reduction moves to the latest
/// phase before its first use that already reads everything its argument
/// reads and in which those start-of-step values are still in memory: no
/// pass reads more, and an earlier pass may be left with nothing to do
/// (which canonicalization removes).
class ReductionPlacer {
public:
  ReductionPlacer(FlatUpdate &flat, int64_t numPhases) : flat_(flat), numPhases_(numPhases) {}

  void run(AxesOf &axes) {
    for (opt::ReduceOp reduce : flat_.reductions) {
      // Rows' and columns' reductions run where their argument is computed.
      if (axes(reduce.getInput()) != kElement)
        continue;
      int64_t from = static_cast<int64_t>(reduce.getPhase());
      int64_t bound = firstUse(reduce);
      std::set<const void *> reads = readsOf(reduce.getInput());
      for (int64_t phase = bound - 1; phase > from; --phase) {
        std::set<const void *> there = readsOfPhase(phase, reduce), written = writtenBefore(phase);
        bool covered = std::includes(there.begin(), there.end(), reads.begin(), reads.end());
        bool intact = std::none_of(reads.begin(), reads.end(), [&](const void *key) { return written.count(key); });
        if (covered && intact) {
          reduce.setPhase(static_cast<uint64_t>(phase));
          break;
        }
      }
    }
  }

private:
  /// A key per memory stream: the state's or input's name, the param, the gradient.
  static const void *paramKey() { static char key; return &key; }
  static const void *gradKey() { static char key; return &key; }
  static const void *keyOf(Buffer buffer) { return buffer ? buffer.getAttr().getAsOpaquePointer() : paramKey(); }

  /// The streams `value` reads per element (start-of-step values; earlier
  /// reductions are uniforms, not reads).
  std::set<const void *> readsOf(Value value) const {
    std::set<const void *> keys;
    eachDefiningOp(value, [&](Operation *op) {
      if (isa<opt::ReduceOp>(op))
        return Walk::Skip;
      if (isa<opt::ParamOp>(op))
        keys.insert(paramKey());
      else if (isa<opt::GradOp>(op))
        keys.insert(gradKey());
      else if (auto input = dyn_cast<opt::GetInputOp>(op))
        keys.insert(input.getInputAttr().getAttr().getAsOpaquePointer());
      else if (auto load = dyn_cast<opt::LoadStateOp>(op); load && load.getType().isF32())
        keys.insert(keyOf(load.getStateAttr()));
      return Walk::Descend;
    });
    return keys;
  }

  /// What phase `phase` reads for its stores and its reductions but `except`.
  std::set<const void *> readsOfPhase(int64_t phase, opt::ReduceOp except) const {
    std::set<const void *> keys;
    for (const FlatUpdate::Store &store : flat_.stores)
      if (store.phase == phase) {
        std::set<const void *> more = readsOf(store.value);
        keys.insert(more.begin(), more.end());
      }
    for (opt::ReduceOp reduce : flat_.reductions)
      if (reduce != except && static_cast<int64_t>(reduce.getPhase()) == phase) {
        std::set<const void *> more = readsOf(reduce.getInput());
        keys.insert(more.begin(), more.end());
      }
    return keys;
  }

  std::set<const void *> writtenBefore(int64_t phase) const {
    std::set<const void *> keys;
    for (const FlatUpdate::Store &store : flat_.stores)
      if (store.phase < phase)
        keys.insert(keyOf(store.buffer));
    return keys;
  }

  /// The first phase that needs the result of `reduce`: the earliest store
  /// or reduction depending on it (the scalar updates after the phases:
  /// numPhases).
  int64_t firstUse(opt::ReduceOp reduce) const {
    int64_t first = numPhases_;
    for (const FlatUpdate::Store &store : flat_.stores)
      if (dependsOn(store.value, reduce))
        first = std::min(first, store.phase);
    for (opt::ReduceOp other : flat_.reductions)
      if (other != reduce && dependsOn(other.getInput(), reduce))
        first = std::min(first, static_cast<int64_t>(other.getPhase()));
    return first;
  }

  static bool dependsOn(Value value, opt::ReduceOp reduce) {
    bool found = false;
    eachDefiningOp(value, [&](Operation *op) {
      if (op == reduce.getOperation()) {
        found = true;
        return Walk::Stop;
      }
      // Another reduction's argument is in its own phase.
      return isa<opt::ReduceOp>(op) ? Walk::Skip : Walk::Descend;
    });
    return found;
  }

  enum class Walk { Descend, Skip, Stop };
  /// Calls visit once on each operation `root` is computed from, operands
  /// after their user, as long as it says Descend.
  template <typename Visit> static void eachDefiningOp(Value root, Visit visit) {
    std::vector<Value> work{root};
    DenseSet<Value> seen;
    while (!work.empty()) {
      Value v = work.back();
      work.pop_back();
      Operation *op = v.getDefiningOp();
      if (!seen.insert(v).second || !op)
        continue;
      Walk next = visit(op);
      if (next == Walk::Stop)
        return;
      if (next == Walk::Descend)
        work.insert(work.end(), op->operand_begin(), op->operand_end());
    }
  }

  FlatUpdate &flat_;
  int64_t numPhases_;
};

/// Fills the element region of one phase by cloning flat values into it.
class ElementCloner {
public:
  /// `flatIndex`: the phase of the flat update this pass belongs to;
  /// `held`: what the buffers hold when it starts; `available(reduce)`:
  /// whether a row or column reduction is done by then.
  ElementCloner(opt::PhaseOp phase, int64_t flatIndex, BufferMap<Value> held,
                const DenseMap<Operation *, Value> &reduced, std::function<bool(opt::ReduceOp)> available)
      : phase_(phase), index_(flatIndex), held_(std::move(held)), reduced_(reduced), available_(std::move(available)),
        builder_(OpBuilder::atBlockEnd(&phase.getElementBody())) {
    for (const auto &[buffer, value] : held_)
      heldIn_[value] = buffer;
  }

  OpBuilder &builder() { return builder_; }

  /// `value` (of the flat update) computed inside the element region.
  FailureOr<Value> clone(Value value) {
    if (Value mapped = mapping_.lookupOrNull(value))
      return mapped;
    Operation *op = value.getDefiningOp();
    Value result;
    if (auto held = heldIn_.find(value); held != heldIn_.end()) {
      result = builder_.create<opt::ReloadOp>(op->getLoc(), builder_.getF32Type(), held->second);
    } else if (auto reduce = dyn_cast<opt::ReduceOp>(op); reduce && reduce.getInto()) {
      // A row's or column's reduction: what an earlier pass left in its
      // scratch state.
      if (!available_(reduce))
        return reduce.emitOpError("is used in phase ")
               << index_ << " by a pass that runs before the one that computes it; name the value a state";
      result = builder_.create<opt::LoadStateOp>(op->getLoc(), builder_.getF32Type(), reduce.getIntoAttr());
    } else if (auto reduce = dyn_cast<opt::ReduceOp>(op)) {
      FailureOr<Value> input = earlierReduction(reduce);
      if (failed(input))
        return failure();
      result = *input;
    } else {
      if (failed(checkStartOfStep(op)))
        return failure();
      for (Value operand : op->getOperands())
        if (failed(clone(operand)))
          return failure();
      result = builder_.clone(*op, mapping_)->getResult(cast<OpResult>(value).getResultNumber());
    }
    mapping_.map(value, result);
    return result;
  }

private:
  /// An earlier phase's reduction becomes an input of this phase, passed
  /// through the uniform region to an element argument.
  FailureOr<Value> earlierReduction(opt::ReduceOp reduce) {
    Value outer = reduced_.lookup(reduce);
    if (!outer)
      return reduce.emitOpError("is used in phase ") << index_ << ", not after the phase that computes it";
    phase_->insertOperands(phase_->getNumOperands(), outer);
    Location loc = reduce.getLoc();
    Block &uniforms = phase_.getUniformBody();
    BlockArgument passed = uniforms.addArgument(outer.getType(), loc);
    Operation *yield = uniforms.getTerminator();
    yield->insertOperands(yield->getNumOperands(), passed);
    return phase_.getElementBody().addArgument(outer.getType(), loc);
  }

  /// A start-of-step read is only possible while no earlier phase wrote the
  /// buffer.
  LogicalResult checkStartOfStep(Operation *op) {
    Buffer buffer;
    std::string name = "param";
    if (auto load = dyn_cast<opt::LoadStateOp>(op); load && load.getType().isF32()) {
      buffer = load.getStateAttr();
      name = load.getState().str();
    } else if (!isa<opt::ParamOp>(op)) {
      return success();
    }
    if (!held_.count(buffer))
      return success();
    return op->emitError("the start-of-step value of '")
           << name << "' is needed in phase " << index_
           << ", after an earlier phase overwrote it; keep the value you need in a state";
  }

  opt::PhaseOp phase_;
  int64_t index_;
  BufferMap<Value> held_;
  DenseMap<Value, Buffer> heldIn_;
  const DenseMap<Operation *, Value> &reduced_;
  std::function<bool(opt::ReduceOp)> available_;
  OpBuilder builder_;
  IRMapping mapping_;
};

struct SplitPhasesPass : impl::SplitPhasesBase<SplitPhasesPass> {
  void runOnOperation() override {
    opt::RuleOp rule = getOperation();
    for (opt::UpdateOp update : rule.getBody().getOps<opt::UpdateOp>())
      if (failed(split(rule, update)))
        return signalPassFailure();
  }

  /// One pass of the explicit form: its domain, the flat phase it belongs
  /// to, what it writes and reduces.
  struct Pass {
    Domain domain;
    int64_t flatIndex;
    BufferMap<Value> held;
    std::vector<const FlatUpdate::Store *> writes;
    std::vector<opt::ReduceOp> reductions; // over the tensor (results) or along an axis (accumulated)
  };

  LogicalResult split(opt::RuleOp rule, opt::UpdateOp update) {
    Block &body = update.getBody().front();
    if (!body.getOps<opt::PhaseOp>().empty())
      return success(); // already split
    FlatUpdate flat(body);
    AxesOf axes(rule);
    ReductionPlacer(flat, static_cast<int64_t>(rule.getNumPhases())).run(axes);
    OpBuilder builder(update.getContext());
    builder.setInsertionPointToStart(&body);
    DenseMap<Operation *, Value> reduced; // flat opt.reduce over the tensor → its phase's result
    // A row's or column's reduction: the flat phase that computes it and
    // whether its argument is per element (done when that phase ends) or per
    // row or column (done before the phase's pass over the elements).
    auto available = [&](int64_t flatIndex, Domain domain) {
      return [&, flatIndex, domain](opt::ReduceOp reduce) {
        auto from = static_cast<int64_t>(reduce.getPhase());
        bool betweenPasses = axes(reduce.getInput()) != kElement;
        // Between the passes: done by the passes over rows and columns,
        // which run before the phase's pass over the matrices and elements.
        return from < flatIndex ||
               (from == flatIndex && betweenPasses && (domain == Domain::Elements || domain == Domain::Matrices));
      };
    };
    int64_t emitted = 0;
    for (int64_t index = 0; index < static_cast<int64_t>(rule.getNumPhases()); ++index) {
      // A flat phase runs its work per row and per column first (between the
      // passes), then its pass over the elements, which sees what they wrote.
      BufferMap<Value> held = flat.heldAt(index);
      std::vector<Pass> passes;
      for (Domain domain : {Domain::Rows, Domain::Cols, Domain::Matrices, Domain::Elements}) {
        Pass pass{domain, index, held, {}, {}};
        for (const FlatUpdate::Store *store : flat.writesOf(index))
          if (domainOf(axes.ofState(store->buffer)) == domain)
            pass.writes.push_back(store);
        for (opt::ReduceOp reduce : flat.reductionsOf(index))
          if (domainOf(axes(reduce.getInput())) == domain)
            pass.reductions.push_back(reduce);
        if (domain == Domain::Elements)
          for (Domain small : {Domain::Rows, Domain::Cols})
            for (const auto &[buffer, value] : flat.lastWritesIn(index, small, axes))
              pass.held[buffer] = value;
        if (domain == Domain::Elements || !pass.writes.empty() || !pass.reductions.empty())
          passes.push_back(std::move(pass));
      }
      for (const Pass &pass : passes) {
        FailureOr<opt::PhaseOp> built =
            buildPhase(builder, update.getLoc(), pass, emitted++, reduced, available(index, pass.domain));
        if (failed(built))
          return failure();
        builder.setInsertionPointAfter(*built);
      }
    }
    // What stays outside the phases is uniform: the scalar-state updates,
    // now reading the phases' results.
    for (opt::ReduceOp reduce : flat.reductions) {
      if (reduce.getInto())
        continue; // per row or column: read only by the phases
      reduce.replaceAllUsesWith(reduced.lookup(reduce));
      reduce.erase();
    }
    for (Operation &op : llvm::make_early_inc_range(llvm::reverse(body))) {
      auto state = dyn_cast<opt::StoreStateOp>(op);
      if (isa<opt::StoreParamOp>(op) || (state && state.getValue().getType().isF32()) ||
          (!isa<opt::PhaseOp>(op) && isOpTriviallyDead(&op)))
        op.erase();
    }
    return success();
  }

  FailureOr<opt::PhaseOp> buildPhase(OpBuilder &builder, Location loc, const Pass &pass, int64_t index,
                                     DenseMap<Operation *, Value> &reduced,
                                     std::function<bool(opt::ReduceOp)> available) {
    std::vector<opt::ReduceOp> overTensor, alongAxis;
    for (opt::ReduceOp reduce : pass.reductions)
      (reduce.getInto() ? alongAxis : overTensor).push_back(reduce);
    SmallVector<StringRef> kinds;
    for (opt::ReduceOp reduce : overTensor)
      kinds.push_back(reduce.getKind());
    SmallVector<Type> resultTypes(overTensor.size(), builder.getF64Type());
    StringAttr domain;
    if (pass.domain != Domain::Elements)
      domain = builder.getStringAttr(pass.domain == Domain::Rows   ? "rows"
                                     : pass.domain == Domain::Cols ? "cols"
                                                                   : "matrices");
    auto phase = builder.create<opt::PhaseOp>(loc, resultTypes, builder.getI64IntegerAttr(index), ValueRange(),
                                              builder.getStrArrayAttr(kinds), domain);
    // Until opt-hoist-uniforms runs, the uniform region only hands the
    // phase's inputs through.
    OpBuilder::atBlockEnd(builder.createBlock(&phase.getUniforms())).create<opt::YieldOp>(loc, ValueRange());
    builder.createBlock(&phase.getElements());

    ElementCloner elements(phase, pass.flatIndex, pass.held, reduced, std::move(available));
    SmallVector<std::pair<const FlatUpdate::Store *, Value>> writes;
    for (const FlatUpdate::Store *store : pass.writes) {
      FailureOr<Value> value = elements.clone(store->value);
      if (failed(value))
        return failure();
      writes.emplace_back(store, *value);
    }
    SmallVector<Value> reductionInputs, accumulated;
    for (opt::ReduceOp reduce : overTensor) {
      FailureOr<Value> input = elements.clone(reduce.getInput());
      if (failed(input))
        return failure();
      reductionInputs.push_back(*input);
    }
    for (opt::ReduceOp reduce : alongAxis) {
      FailureOr<Value> input = elements.clone(reduce.getInput());
      if (failed(input))
        return failure();
      accumulated.push_back(*input);
    }
    OpBuilder &inner = elements.builder();
    for (const auto &[store, value] : writes) {
      if (store->buffer)
        inner.create<opt::StoreStateOp>(store->loc, store->buffer, value, inner.getI64IntegerAttr(index));
      else
        inner.create<opt::StoreParamOp>(store->loc, value, inner.getI64IntegerAttr(index));
    }
    for (auto [reduce, value] : llvm::zip(alongAxis, accumulated))
      inner.create<opt::AccumulateOp>(reduce.getLoc(), reduce.getKindAttr(), value, reduce.getIntoAttr());
    inner.create<opt::YieldOp>(loc, reductionInputs);
    for (auto [k, reduce] : llvm::enumerate(overTensor))
      reduced[reduce] = phase.getResult(k);
    return phase;
  }
};

} // namespace
} // namespace optdsl
