// Lowers a rule in the explicit opt form (one opt.phase per pass over
// memory, uniform work hoisted: see OptOps.td) to the runtime's functions:
// each phase's uniform region becomes a host function, its element region a
// 16-wide loop with a scalar tail (through codegen::emitElementBody), the
// operations after the phases the scalar-state update.
#include "optdsl/KernelGen.h"

#include "optdsl/Codegen/PhaseBody.h"

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
#include "llvm/ADT/StringMap.h"

#include <limits>
#include <map>
#include <optional>

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

class KernelBuilder {
public:
  KernelBuilder(ModuleOp optModule, KernelSignature &signature)
      : optModule_(optModule), signature_(signature), builder_(optModule.getContext()) {}

  OwningOpRef<ModuleOp> run() {
    if (failed(analyse()))
      return nullptr;
    OwningOpRef<ModuleOp> module = ModuleOp::create(rule_.getLoc());
    builder_.setInsertionPointToEnd(module->getBody());
    buildInit();
    for (auto [index, phase] : llvm::enumerate(phases_)) {
      int p = static_cast<int>(index);
      buildUniforms(p, phase);
      if (failed(buildKernel(p, phase)))
        return nullptr;
      signature_.numUniforms.push_back(static_cast<int>(phase.getElementBody().getNumArguments()));
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
    rule_ = *rules.begin();
    buffers_.emplace(rule_);
    signature_.rule = rule_.getSymName().str();
    for (Operation &op : rule_.getBody().front()) {
      if (auto hyper = dyn_cast<opt::HyperOp>(op)) {
        hyperIndex_[hyper.getSymName()] = static_cast<int>(signature_.hypers.size());
        signature_.hypers.push_back(
            {hyper.getSymName().str(), hyper.getDefaultValue().convertToDouble(), hyper.getFixed()});
      } else if (auto state = dyn_cast<opt::StateOp>(op)) {
        if (state.getScalar())
          scalarIndex_[state.getSymName()] = static_cast<int>(scalarIndex_.size());
        signature_.states.push_back({state.getSymName().str(), state.getScalar()});
      } else if (auto update = dyn_cast<opt::UpdateOp>(op)) {
        update_ = update;
      }
    }
    if (!update_)
      return rule_.emitError("rule has no opt.update");
    for (opt::PhaseOp phase : update_.getBody().front().getOps<opt::PhaseOp>()) {
      for (auto [k, kind] : llvm::enumerate(phase.getReduce())) {
        reductionIndex_[phase.getResult(k)] = static_cast<int>(signature_.reductions.size());
        signature_.reductions.push_back({reductionKind(cast<StringAttr>(kind).getValue()),
                                         static_cast<int>(phases_.size())});
      }
      phases_.push_back(phase);
    }
    if (phases_.empty())
      return update_.emitError("the update has no opt.phase; run the opt-kernel-prep pipeline first");
    signature_.numPhases = static_cast<int>(phases_.size());
    return success();
  }

  func::FuncOp startFunction(const std::string &name, TypeRange inputs) {
    auto function = builder_.create<func::FuncOp>(rule_.getLoc(), name, builder_.getFunctionType(inputs, {}));
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

  /// The host's view of uniform values: where hypers, `step`, start-of-step
  /// scalar states and finished reductions come from.
  struct HostInputs {
    Value hypers, step, scalars, reductions;
  };

  /// Clones the uniform computation of `value` (scalar f64/f32/i1 ops) at
  /// the builder's insertion point, reading its leaves from `inputs`.
  Value uniform(Value value, IRMapping &mapping, const HostInputs &inputs) {
    if (Value mapped = mapping.lookupOrNull(value))
      return mapped;
    Operation *op = value.getDefiningOp();
    Location loc = value.getLoc();
    Value result;
    if (auto hyper = dyn_cast<opt::GetHyperOp>(op)) {
      result = loadAt(loc, f64(), inputs.hypers, hyperIndex_.lookup(hyper.getHyper()));
    } else if (isa<opt::StepOp>(op)) {
      result = inputs.step;
    } else if (auto load = dyn_cast<opt::LoadStateOp>(op)) {
      result = loadAt(loc, f64(), inputs.scalars, scalarIndex_.lookup(load.getState()));
    } else if (isa<opt::PhaseOp>(op)) {
      result = loadAt(loc, f64(), inputs.reductions, reductionIndex_.lookup(value));
    } else {
      for (Value operand : op->getOperands())
        uniform(operand, mapping, inputs);
      result = builder_.clone(*op, mapping)->getResult(cast<OpResult>(value).getResultNumber());
    }
    mapping.map(value, result);
    return result;
  }

  void buildInit() {
    OpBuilder::InsertionGuard guard(builder_);
    func::FuncOp function = startFunction(initFunctionName(signature_.rule), {ptr(), ptr(), ptr()});
    HostInputs inputs{function.getArgument(0), Value(), Value(), Value()};
    Value elementwiseInit = function.getArgument(1), scalarInit = function.getArgument(2);
    int elementwise = 0;
    for (opt::StateOp state : rule_.getBody().getOps<opt::StateOp>()) {
      Location loc = state.getLoc();
      Value value;
      if (state.getInit().empty()) {
        value = builder_.create<arith::ConstantOp>(loc, builder_.getF64FloatAttr(0));
      } else {
        IRMapping mapping;
        auto yield = cast<opt::YieldOp>(state.getInit().front().getTerminator());
        value = uniform(yield.getValues().front(), mapping, inputs);
      }
      if (state.getScalar())
        storeAt(loc, value, scalarInit, scalarIndex_.lookup(state.getSymName()));
      else
        storeAt(loc, builder_.create<arith::TruncFOp>(loc, f32(), value), elementwiseInit, elementwise++);
    }
    builder_.create<func::ReturnOp>(rule_.getLoc());
  }

  /// The phase's uniform region on the host; its yielded values go to the
  /// kernel as f32 (truth values as 0/1).
  void buildUniforms(int p, opt::PhaseOp phase) {
    OpBuilder::InsertionGuard guard(builder_);
    func::FuncOp function = startFunction(uniformsFunctionName(signature_.rule, p),
                                          {ptr(), f64(), ptr(), ptr(), ptr()});
    HostInputs inputs{function.getArgument(0), function.getArgument(1), function.getArgument(2),
                      function.getArgument(3)};
    IRMapping mapping;
    Block &body = phase.getUniformBody();
    for (auto [argument, input] : llvm::zip(body.getArguments(), phase.getInputs()))
      mapping.map(argument, uniform(input, mapping, inputs));
    for (auto [k, yielded] : llvm::enumerate(body.getTerminator()->getOperands())) {
      Location loc = yielded.getLoc();
      Value value = uniform(yielded, mapping, inputs);
      if (value.getType().isInteger(1))
        value = builder_.create<arith::UIToFPOp>(loc, f32(), value);
      storeAt(loc, value, function.getArgument(4), static_cast<int64_t>(k));
    }
    builder_.create<func::ReturnOp>(rule_.getLoc());
  }

  /// The update's operations after the phases: the last write of each
  /// scalar state is its new value.
  void buildScalarUpdate() {
    OpBuilder::InsertionGuard guard(builder_);
    func::FuncOp function = startFunction(scalarUpdateFunctionName(signature_.rule),
                                          {ptr(), f64(), ptr(), ptr(), ptr()});
    HostInputs inputs{function.getArgument(0), function.getArgument(1), function.getArgument(2),
                      function.getArgument(3)};
    std::vector<Value> last(scalarIndex_.size());
    for (opt::StoreStateOp store : update_.getBody().front().getOps<opt::StoreStateOp>())
      last[scalarIndex_.lookup(store.getState())] = store.getValue();
    IRMapping mapping;
    Location loc = rule_.getLoc();
    for (size_t j = 0; j < last.size(); ++j) {
      Value value = last[j] ? uniform(last[j], mapping, inputs) : loadAt(loc, f64(), inputs.scalars, j);
      storeAt(loc, value, function.getArgument(4), static_cast<int64_t>(j));
    }
    builder_.create<func::ReturnOp>(loc);
  }

  /// How the CPU kernel reads and writes: raw pointers per buffer, indexed
  /// by the loop's induction variable; uniform slots loaded once, ahead of
  /// both loops.
  codegen::ElementAccess access(Value index, int64_t width) {
    codegen::ElementAccess access;
    access.load = [=, this](OpBuilder &builder, Location loc, int buffer) -> Value {
      Value address = elementPointer(loc, bufferBase_.at(buffer), index, f32());
      return builder.create<LLVM::LoadOp>(loc, codegen::laneType(f32(), width), address, /*alignment=*/4);
    };
    access.store = [=, this](OpBuilder &builder, Location loc, int buffer, Value value) {
      Value address = elementPointer(loc, bufferBase_.at(buffer), index, f32());
      builder.create<LLVM::StoreOp>(loc, value, address, /*alignment=*/4);
    };
    access.uniform = [this](OpBuilder &, Location loc, int slot, Type type) { return prologueUniform(slot, type, loc); };
    return access;
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

  Value accumulate(Location loc, optrt::ReductionKind kind, Value accumulator, Value input, int64_t width) {
    Value wide = builder_.create<arith::ExtFOp>(loc, codegen::laneType(f64(), width), input);
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
  FailureOr<std::vector<Value>> loop(Location loc, opt::PhaseOp phase, Value lower, Value upper, int64_t width,
                                     const std::vector<optrt::ReductionKind> &kinds, std::vector<Value> initial) {
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
    FailureOr<SmallVector<Value>> inputs =
        codegen::emitElementBody(builder_, phase, *buffers_, width, access(forOp.getInductionVar(), width));
    if (failed(inputs))
      return failure();
    std::vector<Value> next;
    for (size_t r = 0; r < kinds.size(); ++r)
      next.push_back(accumulate(loc, kinds[r], forOp.getRegionIterArgs()[r], (*inputs)[r], width));
    builder_.create<scf::YieldOp>(loc, next);
    if (implicitYield)
      implicitYield->erase();
    return std::vector<Value>(forOp.getResults().begin(), forOp.getResults().end());
  }

  LogicalResult buildKernel(int p, opt::PhaseOp phase) {
    std::vector<optrt::ReductionKind> kinds;
    for (Attribute kind : phase.getReduce())
      kinds.push_back(reductionKind(cast<StringAttr>(kind).getValue()));

    OpBuilder::InsertionGuard guard(builder_);
    func::FuncOp function = startFunction(kernelFunctionName(signature_.rule, p), {ptr(), ptr(), ptr(), i64(), i64()});
    Location loc = rule_.getLoc();
    Value buffers = function.getArgument(0), partials = function.getArgument(2);
    Value begin = function.getArgument(3), end = function.getArgument(4);
    uniformsArg_ = function.getArgument(1);
    uniformLoads_.clear();
    bufferBase_.clear();
    for (int b = 0; b < buffers_->size(); ++b)
      bufferBase_[b] = loadAt(loc, ptr(), buffers, b);
    // Uniform loads are inserted before this marker, ahead of both loops.
    prologueEnd_ = builder_.create<arith::ConstantOp>(loc, builder_.getI64IntegerAttr(kVectorWidth));
    Value count = builder_.create<arith::SubIOp>(loc, end, begin);
    Value remainder = builder_.create<arith::RemSIOp>(loc, count, prologueEnd_->getResult(0));
    Value vectorEnd = builder_.create<arith::SubIOp>(loc, end, remainder);

    std::vector<Value> initial;
    for (optrt::ReductionKind kind : kinds)
      initial.push_back(identity(loc, kind, kVectorWidth));
    FailureOr<std::vector<Value>> vectorAccumulators = loop(loc, phase, begin, vectorEnd, kVectorWidth, kinds, initial);
    if (failed(vectorAccumulators))
      return failure();
    std::vector<Value> folded;
    for (size_t r = 0; r < kinds.size(); ++r) {
      auto combining = kinds[r] == optrt::ReductionKind::Max ? vector::CombiningKind::MAXIMUMF
                                                             : vector::CombiningKind::ADD;
      folded.push_back(builder_.create<vector::ReductionOp>(loc, combining, (*vectorAccumulators)[r]));
    }
    // The scalar tail reads the same uniform values (already loaded).
    FailureOr<std::vector<Value>> tailAccumulators = loop(loc, phase, vectorEnd, end, 1, kinds, folded);
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
  opt::RuleOp rule_;
  opt::UpdateOp update_;
  std::vector<opt::PhaseOp> phases_;
  llvm::StringMap<int> hyperIndex_;
  llvm::StringMap<int> scalarIndex_;
  llvm::DenseMap<Value, int> reductionIndex_; // phase result → runtime reduction slot
  std::optional<codegen::BufferLayout> buffers_;
  // Per kernel being built:
  std::map<int, Value> bufferBase_;
  Value uniformsArg_;
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
