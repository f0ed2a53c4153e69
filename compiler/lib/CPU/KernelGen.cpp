// Splits an opt.update into the runtime's functions. The update is one SSA
// graph; each value is uniform (same for the whole tensor: hypers, step,
// scalar states, reductions, and what is computed from them only) or
// elementwise. Per phase, the element kernel recomputes the elementwise
// values it needs from its buffers and takes the uniform values it needs,
// rounded to f32, from the uniform function of that phase.
#include "optdsl/KernelGen.h"

#include "optdsl/Dialect/OptDialect.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/IRMapping.h"

#include "llvm/ADT/DenseMap.h"

#include <limits>
#include <map>

namespace optdsl {

using namespace mlir;

std::string initFunctionName(const std::string &rule) { return "optdsl_" + rule + "_init"; }
std::string uniformsFunctionName(const std::string &rule, int phase) {
  return "optdsl_" + rule + "_uniforms" + std::to_string(phase);
}
std::string kernelFunctionName(const std::string &rule, int phase) {
  return "optdsl_" + rule + "_kernel" + std::to_string(phase);
}
std::string scalarUpdateFunctionName(const std::string &rule) {
  return "optdsl_" + rule + "_scalar_update";
}

namespace {

optrt::ReductionKind reductionKind(StringRef kind) {
  if (kind == "sum") return optrt::ReductionKind::Sum;
  if (kind == "mean") return optrt::ReductionKind::Mean;
  if (kind == "norm") return optrt::ReductionKind::Norm;
  return optrt::ReductionKind::Max;
}

constexpr int kParamBuffer = 0;
constexpr int kGradBuffer = 1;

/// What the update reads and writes, by index in the runtime's arrays.
struct RuleFacts {
  opt::RuleOp rule;
  opt::UpdateOp update;
  std::map<std::string, int> hyperIndex;
  std::map<std::string, int> bufferOfState; // elementwise states: 2 + k
  std::map<std::string, int> scalarIndex;   // scalar states
  llvm::DenseSet<Value> elementwise;
  llvm::DenseMap<Operation *, int> reductionIndex;
  struct Store {
    int buffer;   // elementwise store, or -1
    int scalar;   // scalar-state store, or -1
    int64_t phase;
    Value value;
    Location loc;
  };
  std::vector<Store> stores; // program order
};

class KernelBuilder {
public:
  KernelBuilder(ModuleOp optModule, KernelSignature &signature)
      : optModule_(optModule), signature_(signature), builder_(optModule.getContext()) {}

  OwningOpRef<ModuleOp> run() {
    if (failed(analyse()))
      return nullptr;
    OwningOpRef<ModuleOp> module = ModuleOp::create(facts_.rule.getLoc());
    builder_.setInsertionPointToEnd(module->getBody());
    buildInit();
    for (int phase = 0; phase < signature_.numPhases; ++phase) {
      std::vector<Value> uniformInputs;
      if (failed(buildKernel(phase, uniformInputs)))
        return nullptr;
      buildUniforms(phase, uniformInputs);
      signature_.numUniforms.push_back(static_cast<int>(uniformInputs.size()));
    }
    buildScalarUpdate();
    return module;
  }

private:
  Type f32() { return builder_.getF32Type(); }
  Type f64() { return builder_.getF64Type(); }
  Type i64() { return builder_.getI64Type(); }
  Type ptr() { return LLVM::LLVMPointerType::get(builder_.getContext()); }

  LogicalResult analyse() {
    auto rules = optModule_.getOps<opt::RuleOp>();
    if (std::distance(rules.begin(), rules.end()) != 1)
      return optModule_.emitError("expected exactly one opt.rule");
    facts_.rule = *rules.begin();
    signature_.rule = facts_.rule.getSymName().str();
    signature_.numPhases = static_cast<int>(facts_.rule.getNumPhases());
    for (Operation &op : facts_.rule.getBody().front()) {
      if (auto hyper = dyn_cast<opt::HyperOp>(op)) {
        facts_.hyperIndex[hyper.getSymName().str()] = static_cast<int>(signature_.hypers.size());
        signature_.hypers.push_back({hyper.getSymName().str(), hyper.getDefaultValue().convertToDouble(),
                                     hyper->hasAttr("fixed")});
      } else if (auto state = dyn_cast<opt::StateOp>(op)) {
        std::string name = state.getSymName().str();
        if (state.getScalar())
          facts_.scalarIndex[name] = static_cast<int>(facts_.scalarIndex.size());
        else
          facts_.bufferOfState[name] = 2 + static_cast<int>(facts_.bufferOfState.size());
        signature_.states.push_back({name, state.getScalar()});
      } else if (auto update = dyn_cast<opt::UpdateOp>(op)) {
        facts_.update = update;
      }
    }
    if (!facts_.update)
      return facts_.rule.emitError("rule has no opt.update");
    for (Operation &op : facts_.update.getBody().front()) {
      bool perElement = isa<opt::ParamOp, opt::GradOp>(op) ||
                        (isa<opt::LoadStateOp>(op) && op.getResult(0).getType().isF32());
      if (!isa<opt::ReduceOp>(op))
        for (Value operand : op.getOperands())
          perElement = perElement || facts_.elementwise.contains(operand);
      if (perElement)
        for (Value result : op.getResults())
          facts_.elementwise.insert(result);
      if (auto reduce = dyn_cast<opt::ReduceOp>(op)) {
        facts_.reductionIndex[reduce] = static_cast<int>(signature_.reductions.size());
        signature_.reductions.push_back(
            {reductionKind(reduce.getKind()), static_cast<int>(reduce.getPhase())});
      } else if (auto store = dyn_cast<opt::StoreParamOp>(op)) {
        facts_.stores.push_back({kParamBuffer, -1, static_cast<int64_t>(store.getPhase()),
                                 store.getValue(), store.getLoc()});
      } else if (auto store = dyn_cast<opt::StoreStateOp>(op)) {
        std::string name = store.getState().str();
        // Writing back the start-of-step value changes nothing; dropping the
        // store saves its memory traffic (what is left of `s = flag ? … : s`
        // once the flag is fixed).
        if (auto load = store.getValue().getDefiningOp<opt::LoadStateOp>();
            load && load.getState() == store.getState())
          continue;
        bool scalar = facts_.scalarIndex.count(name);
        facts_.stores.push_back({scalar ? -1 : facts_.bufferOfState[name],
                                 scalar ? facts_.scalarIndex[name] : -1,
                                 static_cast<int64_t>(store.getPhase()), store.getValue(),
                                 store.getLoc()});
      }
    }
    std::stable_sort(signature_.reductions.begin(), signature_.reductions.end(),
                     [](const auto &a, const auto &b) { return a.phase < b.phase; });
    // Keep reductionIndex consistent with the sorted order.
    std::vector<std::pair<Operation *, int>> byPhase(facts_.reductionIndex.begin(),
                                                     facts_.reductionIndex.end());
    std::stable_sort(byPhase.begin(), byPhase.end(), [](const auto &a, const auto &b) {
      auto phaseOf = [](Operation *op) { return cast<opt::ReduceOp>(op).getPhase(); };
      return phaseOf(a.first) != phaseOf(b.first) ? phaseOf(a.first) < phaseOf(b.first)
                                                  : a.second < b.second;
    });
    for (size_t i = 0; i < byPhase.size(); ++i)
      facts_.reductionIndex[byPhase[i].first] = static_cast<int>(i);
    return success();
  }

  func::FuncOp startFunction(const std::string &name, TypeRange inputs) {
    auto function = builder_.create<func::FuncOp>(facts_.rule.getLoc(), name,
                                                  builder_.getFunctionType(inputs, {}));
    builder_.setInsertionPointToStart(function.addEntryBlock());
    return function;
  }

  Value elementPointer(Location loc, Value base, Value index, Type element) {
    return builder_.create<LLVM::GEPOp>(loc, ptr(), element, base, ValueRange{index});
  }
  Value constantI64(Location loc, int64_t value) {
    return builder_.create<arith::ConstantOp>(loc, builder_.getI64IntegerAttr(value));
  }
  Value loadAt(Location loc, Type type, Value base, int64_t index) {
    return builder_.create<LLVM::LoadOp>(loc, type, elementPointer(loc, base, constantI64(loc, index), type));
  }
  void storeAt(Location loc, Value value, Value base, int64_t index) {
    builder_.create<LLVM::StoreOp>(loc, value, elementPointer(loc, base, constantI64(loc, index), value.getType()));
  }

  /// Clones the uniform computation of `value` (scalar f64/f32/i1 ops) at the
  /// builder's insertion point; `leaf` provides hypers, step, scalar states
  /// and reduction results.
  Value uniform(Value value, IRMapping &mapping, const std::function<Value(Operation *)> &leaf) {
    if (Value mapped = mapping.lookupOrNull(value))
      return mapped;
    Operation *op = value.getDefiningOp();
    Value result;
    if (isa<opt::GetHyperOp, opt::StepOp, opt::LoadStateOp, opt::ReduceOp>(op)) {
      result = leaf(op);
    } else {
      for (Value operand : op->getOperands())
        uniform(operand, mapping, leaf);
      result = builder_.clone(*op, mapping)->getResult(0);
    }
    mapping.map(value, result);
    return result;
  }

  std::function<Value(Operation *)> hostLeaves(Value hypers, Value step, Value scalars, Value reductions) {
    return [=, this](Operation *op) -> Value {
      Location loc = op->getLoc();
      if (auto hyper = dyn_cast<opt::GetHyperOp>(op))
        return loadAt(loc, f64(), hypers, facts_.hyperIndex.at(hyper.getHyper().str()));
      if (isa<opt::StepOp>(op))
        return step;
      if (auto load = dyn_cast<opt::LoadStateOp>(op))
        return loadAt(loc, f64(), scalars, facts_.scalarIndex.at(load.getState().str()));
      return loadAt(loc, f64(), reductions, facts_.reductionIndex.lookup(op));
    };
  }

  void buildInit() {
    OpBuilder::InsertionGuard guard(builder_);
    func::FuncOp function = startFunction(initFunctionName(signature_.rule), {ptr(), ptr(), ptr()});
    Value hypers = function.getArgument(0), elementwiseInit = function.getArgument(1),
          scalarInit = function.getArgument(2);
    auto leaf = hostLeaves(hypers, Value(), Value(), Value());
    for (Operation &op : facts_.rule.getBody().front()) {
      auto state = dyn_cast<opt::StateOp>(op);
      if (!state)
        continue;
      Location loc = state.getLoc();
      std::string name = state.getSymName().str();
      Value value;
      if (state.getInit().empty()) {
        value = builder_.create<arith::ConstantOp>(loc, builder_.getF64FloatAttr(0));
      } else {
        IRMapping mapping;
        auto yield = cast<opt::YieldOp>(state.getInit().front().getTerminator());
        value = uniform(yield.getValue(), mapping, leaf);
      }
      if (state.getScalar()) {
        storeAt(loc, value, scalarInit, facts_.scalarIndex.at(name));
      } else {
        Value narrow = builder_.create<arith::TruncFOp>(loc, f32(), value);
        storeAt(loc, narrow, elementwiseInit, facts_.bufferOfState.at(name) - 2);
      }
    }
    builder_.create<func::ReturnOp>(facts_.rule.getLoc());
  }

  void buildUniforms(int phase, const std::vector<Value> &inputs) {
    OpBuilder::InsertionGuard guard(builder_);
    func::FuncOp function = startFunction(uniformsFunctionName(signature_.rule, phase),
                                          {ptr(), f64(), ptr(), ptr(), ptr()});
    auto leaf = hostLeaves(function.getArgument(0), function.getArgument(1),
                           function.getArgument(2), function.getArgument(3));
    IRMapping mapping;
    for (size_t k = 0; k < inputs.size(); ++k) {
      Location loc = inputs[k].getLoc();
      Value value = uniform(inputs[k], mapping, leaf);
      if (value.getType().isInteger(1))
        value = builder_.create<arith::UIToFPOp>(loc, f32(), value);
      else if (value.getType().isF64())
        value = builder_.create<arith::TruncFOp>(loc, f32(), value);
      storeAt(loc, value, function.getArgument(4), static_cast<int64_t>(k));
    }
    builder_.create<func::ReturnOp>(facts_.rule.getLoc());
  }

  void buildScalarUpdate() {
    OpBuilder::InsertionGuard guard(builder_);
    func::FuncOp function = startFunction(scalarUpdateFunctionName(signature_.rule),
                                          {ptr(), f64(), ptr(), ptr(), ptr()});
    Value scalars = function.getArgument(2), out = function.getArgument(4);
    auto leaf = hostLeaves(function.getArgument(0), function.getArgument(1), scalars,
                           function.getArgument(3));
    std::vector<Value> last(facts_.scalarIndex.size());
    for (const RuleFacts::Store &store : facts_.stores)
      if (store.scalar >= 0)
        last[store.scalar] = store.value;
    IRMapping mapping;
    for (size_t j = 0; j < last.size(); ++j) {
      Location loc = facts_.rule.getLoc();
      Value value = last[j] ? uniform(last[j], mapping, leaf) : loadAt(loc, f64(), scalars, j);
      storeAt(loc, value, out, static_cast<int64_t>(j));
    }
    builder_.create<func::ReturnOp>(facts_.rule.getLoc());
  }

  /// One element kernel body, `width` elements at `index`.
  struct Lane {
    int64_t width;
    Value index;
    IRMapping mapping;
    std::map<int, Value> loaded; // buffer → its value at index
  };

  Type laneType(Type scalar, int64_t width) {
    return width == 1 ? scalar : VectorType::get({width}, scalar);
  }

  Value laneSplat(Location loc, Value scalar, int64_t width) {
    if (width == 1)
      return scalar;
    return builder_.create<vector::BroadcastOp>(loc, laneType(scalar.getType(), width), scalar);
  }

  Value loadBuffer(Lane &lane, int buffer, Location loc) {
    auto it = lane.loaded.find(buffer);
    if (it != lane.loaded.end())
      return it->second;
    Value address = elementPointer(loc, bufferBase_.at(buffer), lane.index, f32());
    Value value = builder_.create<LLVM::LoadOp>(loc, laneType(f32(), lane.width), address, /*alignment=*/4);
    lane.loaded[buffer] = value;
    return value;
  }

  FailureOr<Value> elementwise(Value value, Lane &lane, int phase) {
    if (Value mapped = lane.mapping.lookupOrNull(value))
      return mapped;
    Operation *op = value.getDefiningOp();
    Location loc = value.getLoc();
    Value result;
    auto reloaded = availableInBuffer_.find(value);
    if (reloaded != availableInBuffer_.end()) {
      result = loadBuffer(lane, reloaded->second, loc);
    } else if (!facts_.elementwise.contains(value)) {
      result = laneSplat(loc, uniformInputValue(value, loc), lane.width);
    } else if (isa<opt::ParamOp, opt::LoadStateOp>(op)) {
      int buffer = isa<opt::ParamOp>(op) ? kParamBuffer
                                         : facts_.bufferOfState.at(cast<opt::LoadStateOp>(op).getState().str());
      if (overwrittenBefore(buffer, phase))
        return op->emitError("the start-of-step value of '")
               << (buffer == kParamBuffer ? std::string("param") : cast<opt::LoadStateOp>(op).getState().str())
               << "' is needed in phase " << phase
               << ", after an earlier phase overwrote it; keep the value you need in a state";
      result = loadBuffer(lane, buffer, loc);
    } else if (isa<opt::GradOp>(op)) {
      result = loadBuffer(lane, kGradBuffer, loc);
    } else {
      for (Value operand : op->getOperands())
        if (failed(elementwise(operand, lane, phase)))
          return failure();
      Operation *clone = builder_.clone(*op, lane.mapping);
      for (OpResult r : clone->getResults())
        r.setType(laneType(r.getType(), lane.width));
      result = clone->getResult(0);
    }
    lane.mapping.map(value, result);
    return result;
  }

  /// A uniform value the kernel reads: a constant is materialised in the
  /// kernel, anything else comes from the uniform function (as f32).
  Value uniformInputValue(Value value, Location loc) {
    if (auto constant = value.getDefiningOp<arith::ConstantOp>()) {
      if (constant.getType().isF64())
        return builder_.create<arith::ConstantOp>(
            loc, builder_.getF32FloatAttr(cast<FloatAttr>(constant.getValue()).getValueAsDouble()));
      return builder_.create<arith::ConstantOp>(loc, constant.getValue());
    }
    auto [it, inserted] = uniformSlot_.try_emplace(value, static_cast<int>(uniformInputs_->size()));
    if (inserted)
      uniformInputs_->push_back(value);
    // Loaded in the kernel's prologue once; see prologueUniform.
    return prologueUniform(it->second, value.getType(), loc);
  }

  Value prologueUniform(int slot, Type type, Location loc) {
    auto it = uniformLoads_.find(slot);
    if (it != uniformLoads_.end())
      return it->second;
    OpBuilder::InsertionGuard guard(builder_);
    builder_.setInsertionPoint(prologueEnd_);
    Value value = loadAt(loc, f32(), uniformsArg_, slot);
    if (type.isInteger(1)) {
      Value zero = builder_.create<arith::ConstantOp>(loc, builder_.getF32FloatAttr(0));
      value = builder_.create<arith::CmpFOp>(loc, arith::CmpFPredicate::UNE, value, zero);
    }
    uniformLoads_[slot] = value;
    return value;
  }

  bool overwrittenBefore(int buffer, int phase) const {
    for (const RuleFacts::Store &store : facts_.stores)
      if (store.buffer == buffer && store.phase < phase)
        return true;
    return false;
  }

  /// Emits one iteration: returns the reductions' per-lane inputs (f32).
  FailureOr<std::vector<Value>> iteration(Lane &lane, int phase,
                                          const std::vector<std::pair<int, Value>> &stores,
                                          const std::vector<opt::ReduceOp> &reductions) {
    std::vector<Value> values;
    for (const auto &[buffer, value] : stores) {
      FailureOr<Value> computed = elementwise(value, lane, phase);
      if (failed(computed))
        return failure();
      values.push_back(*computed);
    }
    std::vector<Value> reductionInputs;
    for (opt::ReduceOp reduce : reductions) {
      FailureOr<Value> input = elementwise(reduce.getInput(), lane, phase);
      if (failed(input))
        return failure();
      reductionInputs.push_back(*input);
    }
    // Stores after every load of the iteration: a reload never sees this
    // phase's own writes.
    for (size_t s = 0; s < stores.size(); ++s) {
      Location loc = stores[s].second.getLoc();
      Value address = elementPointer(loc, bufferBase_.at(stores[s].first), lane.index, f32());
      builder_.create<LLVM::StoreOp>(loc, values[s], address, /*alignment=*/4);
    }
    return reductionInputs;
  }

  Value accumulate(Location loc, optrt::ReductionKind kind, Value accumulator, Value input, int64_t width) {
    Value wide = builder_.create<arith::ExtFOp>(loc, laneType(f64(), width), input);
    if (kind == optrt::ReductionKind::Max)
      return builder_.create<arith::MaximumFOp>(loc, accumulator, wide);
    if (kind == optrt::ReductionKind::Norm)
      wide = builder_.create<arith::MulFOp>(loc, wide, wide);
    return builder_.create<arith::AddFOp>(loc, accumulator, wide);
  }

  Value identity(Location loc, optrt::ReductionKind kind, int64_t width) {
    double value = kind == optrt::ReductionKind::Max ? -std::numeric_limits<double>::infinity() : 0.0;
    if (width == 1)
      return builder_.create<arith::ConstantOp>(loc, builder_.getF64FloatAttr(value));
    auto type = VectorType::get({width}, f64());
    return builder_.create<arith::ConstantOp>(loc, DenseElementsAttr::get(type, builder_.getF64FloatAttr(value)));
  }

  /// A loop over [lower, upper) in steps of `width`, accumulating reductions.
  FailureOr<std::vector<Value>> loop(Location loc, Value lower, Value upper, int64_t width, int phase,
                                     const std::vector<std::pair<int, Value>> &stores,
                                     const std::vector<opt::ReduceOp> &reductions,
                                     const std::vector<optrt::ReductionKind> &kinds,
                                     std::vector<Value> initial) {
    auto forOp = builder_.create<scf::ForOp>(loc, lower, upper, constantI64(loc, width), initial);
    OpBuilder::InsertionGuard guard(builder_);
    // Without iteration arguments the builder adds an empty scf.yield; it is
    // replaced by ours below.
    Block *body = forOp.getBody();
    Operation *implicitYield = body->mightHaveTerminator() ? body->getTerminator() : nullptr;
    if (implicitYield)
      builder_.setInsertionPoint(implicitYield);
    else
      builder_.setInsertionPointToEnd(body);
    Lane lane{width, forOp.getInductionVar(), {}, {}};
    FailureOr<std::vector<Value>> inputs = iteration(lane, phase, stores, reductions);
    if (failed(inputs))
      return failure();
    std::vector<Value> next;
    for (size_t r = 0; r < reductions.size(); ++r)
      next.push_back(accumulate(loc, kinds[r], forOp.getRegionIterArgs()[r], (*inputs)[r], width));
    builder_.create<scf::YieldOp>(loc, next);
    if (implicitYield)
      implicitYield->erase();
    return std::vector<Value>(forOp.getResults().begin(), forOp.getResults().end());
  }

  LogicalResult buildKernel(int phase, std::vector<Value> &uniformInputs) {
    // What this phase writes: the last store to each buffer in this phase.
    std::map<int, Value> lastStore;
    for (const RuleFacts::Store &store : facts_.stores)
      if (store.buffer >= 0 && store.phase == phase)
        lastStore[store.buffer] = store.value;
    std::vector<std::pair<int, Value>> stores(lastStore.begin(), lastStore.end());
    // What earlier phases left in the buffers.
    availableInBuffer_.clear();
    for (const RuleFacts::Store &store : facts_.stores)
      if (store.buffer >= 0 && store.phase < phase)
        availableInBuffer_[store.value] = store.buffer;
    std::vector<opt::ReduceOp> reductions;
    std::vector<optrt::ReductionKind> kinds;
    facts_.update.walk([&](opt::ReduceOp reduce) {
      if (static_cast<int>(reduce.getPhase()) == phase)
        reductions.push_back(reduce);
    });
    std::sort(reductions.begin(), reductions.end(), [&](opt::ReduceOp a, opt::ReduceOp b) {
      return facts_.reductionIndex.lookup(a) < facts_.reductionIndex.lookup(b);
    });
    for (opt::ReduceOp reduce : reductions)
      kinds.push_back(reductionKind(reduce.getKind()));

    OpBuilder::InsertionGuard guard(builder_);
    func::FuncOp function = startFunction(kernelFunctionName(signature_.rule, phase),
                                          {ptr(), ptr(), ptr(), i64(), i64()});
    Location loc = facts_.rule.getLoc();
    Value buffers = function.getArgument(0), partials = function.getArgument(2);
    Value begin = function.getArgument(3), end = function.getArgument(4);
    uniformsArg_ = function.getArgument(1);
    uniformInputs_ = &uniformInputs;
    uniformSlot_.clear();
    uniformLoads_.clear();
    bufferBase_.clear();
    int numBuffers = 2 + static_cast<int>(facts_.bufferOfState.size());
    for (int b = 0; b < numBuffers; ++b)
      bufferBase_[b] = loadAt(loc, ptr(), buffers, b);
    // Uniform loads are inserted before this marker, ahead of both loops.
    prologueEnd_ = builder_.create<arith::ConstantOp>(loc, builder_.getI64IntegerAttr(kVectorWidth));
    Value count = builder_.create<arith::SubIOp>(loc, end, begin);
    Value remainder = builder_.create<arith::RemSIOp>(loc, count, prologueEnd_->getResult(0));
    Value vectorEnd = builder_.create<arith::SubIOp>(loc, end, remainder);

    std::vector<Value> initial;
    for (optrt::ReductionKind kind : kinds)
      initial.push_back(identity(loc, kind, kVectorWidth));
    FailureOr<std::vector<Value>> vectorAccumulators =
        loop(loc, begin, vectorEnd, kVectorWidth, phase, stores, reductions, kinds, initial);
    if (failed(vectorAccumulators))
      return failure();
    std::vector<Value> folded;
    for (size_t r = 0; r < kinds.size(); ++r) {
      auto combining = kinds[r] == optrt::ReductionKind::Max ? vector::CombiningKind::MAXIMUMF
                                                             : vector::CombiningKind::ADD;
      folded.push_back(builder_.create<vector::ReductionOp>(loc, combining, (*vectorAccumulators)[r]));
    }
    // The scalar tail reads the same uniform values (already loaded).
    FailureOr<std::vector<Value>> tailAccumulators =
        loop(loc, vectorEnd, end, 1, phase, stores, reductions, kinds, folded);
    if (failed(tailAccumulators))
      return failure();
    for (size_t r = 0; r < kinds.size(); ++r)
      storeAt(loc, (*tailAccumulators)[r], partials, static_cast<int64_t>(r));
    builder_.create<func::ReturnOp>(loc);
    return success();
  }

  ModuleOp optModule_;
  KernelSignature &signature_;
  OpBuilder builder_;
  RuleFacts facts_;
  // Per kernel being built:
  llvm::DenseMap<Value, int> availableInBuffer_;
  std::map<int, Value> bufferBase_;
  Value uniformsArg_;
  std::vector<Value> *uniformInputs_ = nullptr;
  llvm::DenseMap<Value, int> uniformSlot_;
  std::map<int, Value> uniformLoads_;
  Operation *prologueEnd_ = nullptr;
};

} // namespace

OwningOpRef<ModuleOp> buildKernels(ModuleOp optModule, KernelSignature &signature) {
  MLIRContext *context = optModule.getContext();
  context->loadDialect<func::FuncDialect, scf::SCFDialect, vector::VectorDialect,
                       LLVM::LLVMDialect, arith::ArithDialect, math::MathDialect>();
  return KernelBuilder(optModule, signature).run();
}

} // namespace optdsl
