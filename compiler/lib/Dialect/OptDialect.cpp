#include "optdsl/Dialect/OptDialect.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/OpImplementation.h"
#include "llvm/ADT/StringSwitch.h"

#include <cmath>

using namespace mlir;
using namespace optdsl::opt;

#include "optdsl/Dialect/OptOpsDialect.cpp.inc"

void OptDialect::initialize() {
  addOperations<
#define GET_OP_LIST
#include "optdsl/Dialect/OptOps.cpp.inc"
      >();
}

/// The declaration `name` refers to, if it is of kind T in the enclosing rule.
template <typename T> static T lookupInRule(Operation *user, FlatSymbolRefAttr name) {
  auto rule = user->getParentOfType<RuleOp>();
  return rule ? dyn_cast_or_null<T>(SymbolTable::lookupSymbolIn(rule, name)) : T();
}

LogicalResult GetHyperOp::verifySymbolUses(SymbolTableCollection &) {
  if (!lookupInRule<HyperOp>(*this, getHyperAttr()))
    return emitOpError("refers to '") << getHyper() << "', which is not a hyper of this rule";
  return success();
}

LogicalResult GetInputOp::verifySymbolUses(SymbolTableCollection &) {
  InputOp input = lookupInRule<InputOp>(*this, getInputAttr());
  if (!input)
    return emitOpError("refers to '") << getInput() << "', which is not an input of this rule";
  if (input.getOptional() != static_cast<bool>(getGiven()))
    return emitOpError("reads ") << (input.getOptional() ? "optional" : "required") << " input '" << getInput()
                                 << (input.getOptional() ? "' without" : "' with") << " a 'given' operand";
  return success();
}

static LogicalResult verifyStateUse(Operation *op, FlatSymbolRefAttr name, Type type) {
  StateOp state = lookupInRule<StateOp>(op, name);
  if (!state)
    return op->emitOpError("refers to '") << name.getValue() << "', which is not a state of this rule";
  Type expected = state.getScalar() ? Type(Float64Type::get(op->getContext()))
                                    : Type(Float32Type::get(op->getContext()));
  if (type != expected)
    return op->emitOpError("state '") << name.getValue() << "' holds " << expected << ", not "
                                      << type;
  return success();
}

LogicalResult LoadStateOp::verifySymbolUses(SymbolTableCollection &) {
  return verifyStateUse(*this, getStateAttr(), getType());
}

LogicalResult StoreStateOp::verifySymbolUses(SymbolTableCollection &) {
  return verifyStateUse(*this, getStateAttr(), getValue().getType());
}

static LogicalResult verifyReductionKind(Operation *op, StringRef kind) {
  // group_*: over every tensor of the parameter group (the runtime combines).
  StringRef perTensor = kind;
  perTensor.consume_front("group_");
  bool known = llvm::StringSwitch<bool>(perTensor).Cases("sum", "norm", "mean", "max", true).Default(false);
  if (!known)
    return op->emitOpError("unknown reduction '")
           << kind << "' (expected sum, norm, mean or max, or one of them after group_)";
  return success();
}

/// row_sum, row_mean, col_sum, col_mean: along one axis of each matrix.
static bool isAxisReduction(StringRef kind) {
  return llvm::StringSwitch<bool>(kind).Cases("row_sum", "row_mean", "col_sum", "col_mean", true).Default(false);
}

LogicalResult ReduceOp::verify() {
  if (!getInto())
    return getType().isF64() ? verifyReductionKind(*this, getKind())
                             : emitOpError("over the tensor yields f64, not ") << getType();
  if (!isAxisReduction(getKind()))
    return emitOpError("with 'into' reduces along an axis (row_sum, row_mean, col_sum, col_mean), not '")
           << getKind() << "'";
  if (!getType().isF32())
    return emitOpError("along an axis yields f32 (a value per row, column or matrix), not ") << getType();
  return success();
}

/// `into` is a scratch state with an axis.
static LogicalResult verifyScratchTarget(Operation *op, FlatSymbolRefAttr into) {
  StateOp state = lookupInRule<StateOp>(op, into);
  if (!state || !state.getScratch() || !state.getAxis())
    return op->emitOpError("reduces into '") << into.getValue() << "', which is not a scratch state with an axis";
  return success();
}

LogicalResult ReduceOp::verifySymbolUses(SymbolTableCollection &) {
  return getInto() ? verifyScratchTarget(*this, getIntoAttr()) : success();
}

LogicalResult AccumulateOp::verify() {
  if (!isAxisReduction(getKind()))
    return emitOpError("accumulates along an axis (row_sum, row_mean, col_sum, col_mean), not '") << getKind() << "'";
  return success();
}

LogicalResult AccumulateOp::verifySymbolUses(SymbolTableCollection &) {
  return verifyScratchTarget(*this, getIntoAttr());
}

/// Reads or writes one element's buffer: belongs in a phase's element
/// region (or, in the flat form, directly in the update).
static bool isPerElement(Operation *op) {
  if (isa<ParamOp, GradOp, GetInputOp, RandomOp, ReloadOp, StoreParamOp, ReduceOp, AccumulateOp>(op))
    return true;
  if (auto load = dyn_cast<LoadStateOp>(op))
    return load.getType().isF32();
  if (auto store = dyn_cast<StoreStateOp>(op))
    return store.getValue().getType().isF32();
  return false;
}

LogicalResult UpdateOp::verify() {
  Block &body = getBody().front();
  auto phases = body.getOps<PhaseOp>();
  if (phases.empty())
    return success();
  int64_t previous = -1;
  for (PhaseOp phase : phases) {
    if (static_cast<int64_t>(phase.getIndex()) <= previous)
      return phase.emitOpError("has index ") << phase.getIndex() << ", not after phase " << previous;
    previous = static_cast<int64_t>(phase.getIndex());
  }
  for (Operation &op : body)
    if (isPerElement(&op))
      return op.emitOpError("works per element, so it belongs in an opt.phase once the update has phases");
  return success();
}

LogicalResult PhaseOp::verify() {
  Block &uniforms = getUniformBody(), &elements = getElementBody();
  if (uniforms.getArgumentTypes() != getInputs().getTypes())
    return emitOpError("uniform region arguments must match the inputs");
  auto uniformYield = dyn_cast<YieldOp>(uniforms.getTerminator());
  auto elementYield = dyn_cast<YieldOp>(elements.getTerminator());
  if (!uniformYield || !elementYield)
    return emitOpError("regions must end in opt.yield");
  if (uniformYield.getValues().getTypes() != elements.getArgumentTypes())
    return uniformYield.emitOpError("yields ")
           << uniformYield.getValues().size() << " uniform values of types "
           << uniformYield.getValues().getTypes() << ", but the element region takes "
           << elements.getArgumentTypes();
  if (getResults().size() != getReduce().size())
    return emitOpError("has ") << getReduce().size() << " reductions but " << getResults().size()
                               << " results";
  for (Attribute kind : getReduce())
    if (failed(verifyReductionKind(*this, cast<StringAttr>(kind).getValue())))
      return failure();
  if (getDomain() && *getDomain() != "rows" && *getDomain() != "cols" && *getDomain() != "matrices")
    return emitOpError("runs per element, per row (\"rows\"), per column (\"cols\") or per matrix (\"matrices\"), not \"")
           << *getDomain() << "\"";
  if (elementYield.getValues().size() != getReduce().size() ||
      llvm::any_of(elementYield.getValues().getTypes(), [](Type t) { return !t.isF32(); }))
    return elementYield.emitOpError("must yield one f32 per reduction of the phase (")
           << getReduce().size() << ")";
  WalkResult uniformWalk = uniforms.walk([&](Operation *op) {
    if (!isPerElement(op) && !isa<StoreStateOp>(op))
      return WalkResult::advance();
    op->emitOpError("cannot run in the uniform region of a phase");
    return WalkResult::interrupt();
  });
  if (uniformWalk.wasInterrupted())
    return failure();
  WalkResult elementWalk = elements.walk([&](Operation *op) {
    if (isa<ReduceOp>(op)) {
      op->emitOpError("cannot run inside a phase: the phase's results are its reductions");
      return WalkResult::interrupt();
    }
    auto store = dyn_cast<StoreStateOp>(op);
    if (store && store.getValue().getType().isF64()) {
      op->emitOpError("stores a scalar state: scalar states are updated after the phases");
      return WalkResult::interrupt();
    }
    std::optional<uint64_t> phase;
    if (store)
      phase = store.getPhase();
    else if (auto storeParam = dyn_cast<StoreParamOp>(op))
      phase = storeParam.getPhase();
    if (phase && *phase != getIndex()) {
      op->emitOpError("is marked phase ") << *phase << " inside phase " << getIndex();
      return WalkResult::interrupt();
    }
    return WalkResult::advance();
  });
  return failure(elementWalk.wasInterrupted());
}

LogicalResult YieldOp::verify() {
  if (isa<StateOp>((*this)->getParentOp()) &&
      (getValues().size() != 1 || !getValues().front().getType().isF64()))
    return emitOpError("in a state's init region must yield one f64");
  return success();
}

/// Whether `op` writes the buffer `state` (the parameter when null).
static bool writesBuffer(Operation *op, FlatSymbolRefAttr state) {
  if (auto store = dyn_cast<StoreStateOp>(op))
    return state && store.getStateAttr() == state;
  return !state && isa<StoreParamOp>(op);
}

/// The phase whose element region holds `op`, if any.
static PhaseOp elementPhaseOf(Operation *op) {
  auto phase = dyn_cast_or_null<PhaseOp>(op->getParentOp());
  return phase && op->getParentRegion() == &phase.getElements() ? phase : PhaseOp();
}

/// Whether a phase before `phase` writes the buffer `state` (the parameter
/// when null).
static bool earlierPhaseWrites(PhaseOp phase, FlatSymbolRefAttr state) {
  for (Operation *earlier = phase->getPrevNode(); earlier; earlier = earlier->getPrevNode()) {
    auto earlierPhase = dyn_cast<PhaseOp>(earlier);
    if (!earlierPhase)
      continue;
    WalkResult found = earlierPhase.getElements().walk([&](Operation *op) {
      return writesBuffer(op, state) ? WalkResult::interrupt() : WalkResult::advance();
    });
    if (found.wasInterrupted())
      return true;
  }
  return false;
}

/// A start-of-step read inside a phase is only possible while no earlier
/// phase wrote the buffer.
static LogicalResult verifyStartOfStepRead(Operation *op, FlatSymbolRefAttr state) {
  PhaseOp phase = elementPhaseOf(op);
  if (!phase || !earlierPhaseWrites(phase, state))
    return success();
  return op->emitOpError("reads the start-of-step value of '")
         << (state ? state.getValue() : StringRef("param"))
         << "', which an earlier phase overwrote (opt.reload reads what it stored)";
}

LogicalResult ParamOp::verify() { return verifyStartOfStepRead(*this, FlatSymbolRefAttr()); }

LogicalResult LoadStateOp::verify() {
  return getType().isF32() ? verifyStartOfStepRead(*this, getStateAttr()) : success();
}

LogicalResult ReloadOp::verify() {
  PhaseOp phase = elementPhaseOf(*this);
  if (!phase)
    return emitOpError("must be in the element region of an opt.phase");
  if (earlierPhaseWrites(phase, getStateAttr()))
    return success();
  return emitOpError("reloads '") << (getState() ? *getState() : StringRef("param"))
                                  << "', which no earlier phase stores";
}

LogicalResult ReloadOp::verifySymbolUses(SymbolTableCollection &) {
  if (!getStateAttr())
    return success();
  return verifyStateUse(*this, getStateAttr(), getType());
}

LogicalResult StoreStateOp::canonicalize(StoreStateOp store, PatternRewriter &rewriter) {
  Value value = store.getValue();
  bool ownValue = false;
  if (auto load = value.getDefiningOp<LoadStateOp>())
    ownValue = load.getStateAttr() == store.getStateAttr();
  else if (auto reload = value.getDefiningOp<ReloadOp>())
    ownValue = reload.getStateAttr() == store.getStateAttr();
  if (!ownValue)
    return failure();
  // An earlier store in the same block changed the state: writing the old
  // value back is then a real write.
  for (Operation *earlier = store->getPrevNode(); earlier; earlier = earlier->getPrevNode())
    if (writesBuffer(earlier, store.getStateAttr()))
      return failure();
  rewriter.eraseOp(store);
  return success();
}

LogicalResult StateOp::canonicalize(StateOp state, PatternRewriter &rewriter) {
  Operation *rule = state->getParentOp();
  if (!rule || !SymbolTable::symbolKnownUseEmpty(state.getSymNameAttr(), rule))
    return failure();
  rewriter.eraseOp(state);
  return success();
}

optrt::HyperRange optdsl::opt::hyperRange(HyperOp hyper) {
  optrt::HyperRange range;
  if (auto lower = hyper.getLowerAttr())
    range.lower = lower.getValueAsDouble();
  if (auto upper = hyper.getUpperAttr())
    range.upper = upper.getValueAsDouble();
  range.lowerOpen = hyper.getLowerOpen();
  range.upperOpen = hyper.getUpperOpen();
  return range;
}

void optdsl::opt::setHyperRange(HyperOp hyper, const optrt::HyperRange &range) {
  Builder builder(hyper.getContext());
  hyper.setLowerAttr(std::isinf(range.lower) ? FloatAttr() : builder.getF64FloatAttr(range.lower));
  hyper.setUpperAttr(std::isinf(range.upper) ? FloatAttr() : builder.getF64FloatAttr(range.upper));
  hyper.setLowerOpen(range.lowerOpen);
  hyper.setUpperOpen(range.upperOpen);
}

#define GET_OP_CLASSES
#include "optdsl/Dialect/OptOps.cpp.inc"
