// Lowers a rule in the explicit opt form (one opt.phase per pass over
// memory, uniform work hoisted: see OptOps.td) to the runtime's functions:
// each phase's uniform region becomes a host function, its element region a
// 16-wide loop with a scalar tail (through codegen::emitElementBody), the
// operations after the phases the scalar-state update.
#include "optdsl/KernelGen.h"

#include "optdsl/Codegen/ElementLoop.h"
#include "optdsl/Codegen/LayoutPlan.h"
#include "optdsl/Codegen/PhaseBody.h"
#include "optdsl/Codegen/StateSign.h"
#include "optdsl/Codegen/StorageArith.h"

#include "Q8BytePlanes.h"
#include "StorageCodegen.h"
#include "optrt/LayoutCheck.h"
#include "optrt/Storage.h"

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
#include <set>
#include <tuple>
#include <stdexcept>

namespace optdsl {

using namespace mlir;

std::string initFunctionName(const std::string &rule) { return "optdsl_" + rule + "_init"; }
std::string uniformsFunctionName(const std::string &rule, int phase) {
  return "optdsl_" + rule + "_uniforms" + std::to_string(phase);
}
std::string layoutSuffix(const std::string &layout) {
  if (layout == "f32")
    return "";
  std::string suffix = "_";
  for (char c : layout)
    suffix += (c == '=' || c == ',') ? '_' : c;
  return suffix;
}
std::string kernelFunctionName(const std::string &rule, int phase, const std::string &layout) {
  return "optdsl_" + rule + "_kernel" + std::to_string(phase) + layoutSuffix(layout);
}
std::string scalarUpdateFunctionName(const std::string &rule) {
  return "optdsl_" + rule + "_scalar_update";
}

namespace {

/// q8 elements per step of the byte-permute paths (cpu/Q8BytePlanes.h).
constexpr int64_t kBytePlaneWidth = 64;

class KernelBuilder {
public:
  KernelBuilder(ModuleOp optModule, KernelSignature &signature, CpuVectorIsa isa)
      : optModule_(optModule), signature_(signature), builder_(optModule.getContext()), isa_(isa) {}

  OwningOpRef<ModuleOp> run(const std::vector<std::string> &layouts) {
    if (failed(analyse()))
      return nullptr;
    planLayouts(layouts);
    OwningOpRef<ModuleOp> module = ModuleOp::create(rule_.getLoc());
    tables_.emplace(*module, isa_.avx512);
    builder_.setInsertionPointToEnd(module->getBody());
    buildInit();
    for (auto [index, phase] : llvm::enumerate(phases_)) {
      int p = static_cast<int>(index);
      buildUniforms(p, phase);
      for (const LayoutPlan &plan : plans_)
        if (failed(buildKernel(p, phase, plan)))
          return nullptr;
      signature_.numUniforms.push_back(static_cast<int>(phase.getElementBody().getNumArguments()));
    }
    buildScalarUpdate();
    return module;
  }

private:
  using LayoutPlan = codegen::LayoutPlan;

  void planLayouts(const std::vector<std::string> &written) {
    std::vector<bool> nonNegative = codegen::provedNonNegative(rule_);
    auto add = [&](const optrt::Layout &layout) {
      std::string name = layout.str();
      for (const LayoutPlan &plan : plans_)
        if (plan.name == name)
          return;
      LayoutPlan plan = codegen::planLayout(layout, signature_.states, nonNegative, *buffers_);
      signature_.layouts.push_back({plan.name, plan.buffers});
      plans_.push_back(std::move(plan));
    };
    for (const std::string &text : written) {
      optrt::Layout layout = optrt::Layout::parse(text);
      optrt::validateLayout(layout, signature_.states, "rule '" + signature_.rule + "'");
      add(layout);
      // Tensors under the small-tensor threshold keep q8 states in f32: their
      // kernels come with the layout (ABI v1: an ordinary layout entry).
      if (optrt::hasQ8States(layout, signature_.states))
        add(optrt::smallTensorLayout(layout));
    }
    if (plans_.empty())
      throw std::invalid_argument("no layout to build");
  }

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
        signature_.hypers.push_back({hyper.getSymName().str(), hyper.getDefaultValue().convertToDouble(),
                                     hyper.getFixed(), opt::hyperRange(hyper)});
      } else if (auto state = dyn_cast<opt::StateOp>(op)) {
        if (state.getScalar())
          scalarIndex_[state.getSymName()] = static_cast<int>(scalarIndex_.size());
        stateIndex_[state.getSymName()] = static_cast<int>(signature_.states.size());
        signature_.states.push_back({state.getSymName().str(), state.getScalar(), stateSpan(state.getAxis()),
                                     state.getScratch()});
      } else if (auto input = dyn_cast<opt::InputOp>(op)) {
        signature_.inputs.push_back({input.getSymName().str(), input.getOptional()});

      } else if (auto update = dyn_cast<opt::UpdateOp>(op)) {
        update_ = update;
      }
    }
    if (!update_)
      return rule_.emitError("rule has no opt.update");
    update_.walk([&](opt::RandomOp) { signature_.usesRandom = true; });
    for (opt::PhaseOp phase : update_.getBody().front().getOps<opt::PhaseOp>()) {
      for (auto [k, kind] : llvm::enumerate(phase.getReduce())) {
        reductionIndex_[phase.getResult(k)] = static_cast<int>(signature_.reductions.size());
        llvm::StringRef name = cast<StringAttr>(kind).getValue();
        signature_.reductions.push_back(
            {codegen::reductionKind(name), static_cast<int>(phases_.size()), name.starts_with("group_")});
      }
      for (opt::AccumulateOp accumulate : codegen::phaseAccumulations(phase))
        signature_.axisReductions.push_back({static_cast<int>(phases_.size()), stateIndex_.lookup(accumulate.getInto()),
                                             accumulate.getKind().starts_with("row_"),
                                             accumulate.getKind().ends_with("_mean")});
      int columnSums = 0;
      for (opt::AccumulateOp accumulate : codegen::phaseAccumulations(phase))
        columnSums += !accumulate.getKind().starts_with("row_") && !phase.getDomain();
      signature_.columnSlots.push_back(columnSums + static_cast<int>(planColumns(phase).frontier.size()));
      signature_.phaseDomains.push_back(!phase.getDomain()             ? optrt::PhaseDomain::Elements
                                        : *phase.getDomain() == "rows"     ? optrt::PhaseDomain::Rows
                                        : *phase.getDomain() == "cols"     ? optrt::PhaseDomain::Cols
                                                                           : optrt::PhaseDomain::Matrices);
      phases_.push_back(phase);
    }
    if (phases_.empty())
      return update_.emitError("the update has no opt.phase; run the opt-kernel-prep pipeline first");
    signature_.numPhases = static_cast<int>(phases_.size());
    return success();
  }

  static optrt::StateSpan stateSpan(std::optional<StringRef> axis) {
    if (!axis)
      return optrt::StateSpan::Elements;
    return *axis == "rows" ? optrt::StateSpan::Rows
           : *axis == "cols" ? optrt::StateSpan::Cols
                             : optrt::StateSpan::Matrices;
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
  /// by the loop's induction variable, converted from and to the layout's
  /// storage (StorageCodegen.h); uniform slots loaded once, ahead of the
  /// loops. A q8 state is read from the block's codes and absmax (with byte
  /// permutes: from the scratch the block was decoded into), and written to
  /// the block's f32 scratch (quantised when the block is done), its finite
  /// magnitudes folded into the block's absmax as they go.
  codegen::ElementAccess access(Value index, int64_t width) {
    codegen::ElementAccess access;
    access.load = [=, this](OpBuilder &builder, Location loc, int buffer) -> Value {
      const LayoutPlan &plan = *plan_;
      if (StringRef axis = buffers_->axis(buffer); !axis.empty())
        return loadAxis(builder, loc, buffer, axis, width);
      if (buffer == codegen::BufferLayout::kParam && plan.master >= 0) {
        if (plan.buffers[plan.master].dtype == optrt::Dtype::Remainder)
          return cpu::loadJoinedMaster(builder, loc, bufferBase_.at(plan.storage[buffer]), bufferBase_.at(plan.master),
                                       index, width);
        return cpu::loadAsF32(builder, loc, bufferBase_.at(plan.master), index, width, optrt::Dtype::F32);
      }
      optrt::Dtype dtype = plan.dtype[buffer];
      Value base = bufferBase_.at(plan.storage[buffer]);
      if (codegen::isQ8(dtype) && blockDecoded_)
        return cpu::loadAsF32(builder, loc, scratch_.at(buffer), builder.create<arith::SubIOp>(loc, index, blockStart_),
                              width, optrt::Dtype::F32);
      if (codegen::isQ8(dtype))
        return cpu::dequantizeQ8(builder, loc, *tables_, plan.dtype[buffer] == optrt::Dtype::Q8Signed, base, index, width,
                                 blockAbsmax_.at(buffer));
      return cpu::loadAsF32(builder, loc, base, index, width, dtype);
    };
    access.store = [=, this](OpBuilder &builder, Location loc, int buffer, Value value) {
      const LayoutPlan &plan = *plan_;
      if (StringRef axis = buffers_->axis(buffer); !axis.empty()) {
        // Only the passes over rows or columns write these, one at a time.
        cpu::storeFromF32(builder, loc, bufferBase_.at(plan.storage[buffer]), axisIndex(axis), value,
                          optrt::Dtype::F32);
        return;
      }
      optrt::Dtype dtype = plan.dtype[buffer];
      if (buffer == codegen::BufferLayout::kParam && plan.master >= 0) {
        if (plan.buffers[plan.master].dtype == optrt::Dtype::Remainder) {
          cpu::storeSplitMaster(builder, loc, bufferBase_.at(plan.storage[buffer]), bufferBase_.at(plan.master), index,
                                value);
          return;
        }
        cpu::storeFromF32(builder, loc, bufferBase_.at(plan.master), index, value, optrt::Dtype::F32);
      }
      if (!codegen::isQ8(dtype)) {
        Value random;
        if (plan.stochastic && (dtype == optrt::Dtype::BF16 || dtype == optrt::Dtype::F16)) {
          // Per buffer b of the layout its own stream: the tensor's key
          // xor b * 0x9E3779B9, so a param and its states never share bits.
          Value key = builder.create<arith::XOrIOp>(
              loc, stochasticKey_,
              builder.create<arith::ConstantOp>(loc, builder.getI32IntegerAttr(codegen::stochasticSalt(plan.storage[buffer]))));
          random = codegen::stochasticBits(builder, loc, key, index, width);
        }
        cpu::storeFromF32(builder, loc, bufferBase_.at(plan.storage[buffer]), index, value, dtype, random,
                          isa_.avx512bf16);
        return;
      }
      Value offset = builder.create<arith::SubIOp>(loc, index, blockStart_);
      cpu::storeFromF32(builder, loc, scratch_.at(buffer), offset, value, optrt::Dtype::F32);
      Value accumulator = width == 1 ? tailMax_.at(buffer) : vectorMax_.at(buffer);
      Value before = builder.create<LLVM::LoadOp>(loc, value.getType(), accumulator, 4);
      Value magnitude = codegen::finiteMagnitude(builder, loc, value);
      Value larger = builder.create<arith::CmpFOp>(loc, arith::CmpFPredicate::OGT, magnitude, before);
      builder.create<LLVM::StoreOp>(loc, builder.create<arith::SelectOp>(loc, larger, magnitude, before), accumulator, 4);
    };
    access.uniform = [this](OpBuilder &, Location loc, int slot, Type type) { return prologueUniform(slot, type, loc); };
    access.random = [=, this](OpBuilder &builder, Location loc, int64_t stream) {
      return codegen::randomUniform(builder, loc, stochasticKey_, stream, index, width);
    };
    return access;
  }

  /// Where a matrix rule's element code is: the tensor's row (over all its
  /// matrices), column (matrix * cols + column) and matrix, for the values
  /// of states and reductions spanning them.
  struct MatrixPosition {
    Value row, column, matrix;
  };

  Value axisIndex(StringRef axis) const {
    return axis == "rows" ? position_.row : axis == "cols" ? position_.column : position_.matrix;
  }

  /// A value per row, column or matrix at the current element(s): columns
  /// are consecutive, so `width` of them are one vector load; a row's or a
  /// matrix's value is the same for every lane.
  Value loadAxis(OpBuilder &builder, Location loc, int buffer, StringRef axis, int64_t width) {
    Value base = bufferBase_.at(plan_->storage[buffer]);
    if (axis == "cols" || width == 1)
      return cpu::loadAsF32(builder, loc, base, axisIndex(axis), axis == "cols" ? width : 1, optrt::Dtype::F32);
    Value one = cpu::loadAsF32(builder, loc, base, axisIndex(axis), 1, optrt::Dtype::F32);
    return builder.create<vector::BroadcastOp>(loc, codegen::laneType(f32(), width), one);
  }

  Value prologueUniform(int slot, Type type, Location loc) {
    auto it = uniformLoads_.find(slot);
    if (it != uniformLoads_.end())
      return it->second;
    OpBuilder::InsertionGuard guard(builder_);
    builder_.setInsertionPoint(prologueEnd_);
    Value value = codegen::uniformAsType(builder_, loc, loadAt(loc, f32(), uniformsArg_, slot), type);
    uniformLoads_[slot] = value;
    return value;
  }

  /// A loop over [lower, upper) in steps of `width`, accumulating reductions.
  FailureOr<std::vector<Value>> loop(Location loc, opt::PhaseOp phase, Value lower, Value upper, int64_t width,
                                     const std::vector<optrt::ReductionKind> &kinds, std::vector<Value> initial) {
    return codegen::emitElementLoop(builder_, loc, phase, *buffers_, lower, upper, constantI64(loc, width), width,
                                    kinds, initial, [&](Value index) { return access(index, width); });
  }

  LogicalResult buildKernel(int p, opt::PhaseOp phase, const LayoutPlan &plan) {
    std::vector<optrt::ReductionKind> kinds = codegen::phaseReductionKinds(phase);

    OpBuilder::InsertionGuard guard(builder_);
    func::FuncOp function =
        startFunction(kernelFunctionName(signature_.rule, p, plan.name), {ptr(), ptr(), ptr(), i64(), i64()});
    Location loc = rule_.getLoc();
    Value buffers = function.getArgument(0), partials = function.getArgument(2);
    Value begin = function.getArgument(3), end = function.getArgument(4);
    plan_ = &plan;
    uniformsArg_ = function.getArgument(1);
    uniformLoads_.clear();
    bufferBase_.clear();
    for (int b = 0; b < static_cast<int>(plan.buffers.size()); ++b)
      bufferBase_[b] = loadAt(loc, ptr(), buffers, b);
    // The per-tensor key of stochastic rounding and random(): the u32 the
    // runtime stores in the uniform slot right after the rule's own
    // (bit-cast into the f32 array).
    if (plan.stochastic || signature_.usesRandom)
      stochasticKey_ = loadAt(loc, builder_.getI32Type(), uniformsArg_,
                              static_cast<int64_t>(phase.getElementBody().getNumArguments()));
    // Uniform loads are inserted before this marker, ahead of both loops.
    prologueEnd_ = builder_.create<arith::ConstantOp>(loc, builder_.getI64IntegerAttr(kVectorWidth));

    std::vector<Value> accumulators;
    if (buffers_->matrixShaped()) {
      FailureOr<std::vector<Value>> result = signature_.phaseDomains[p] == optrt::PhaseDomain::Elements
                                                 ? matrixElementLoops(loc, phase, kinds, begin, end, partials)
                                                 : axisLoops(loc, phase, signature_.phaseDomains[p], begin, end);
      if (failed(result))
        return failure();
      accumulators = *result;
    } else if (plan.blockwise()) {
      FailureOr<std::vector<Value>> result = blockwiseLoops(loc, phase, plan, kinds, begin, end);
      if (failed(result))
        return failure();
      accumulators = *result;
    } else {
      std::vector<Value> initial;
      for (optrt::ReductionKind kind : kinds)
        initial.push_back(codegen::reductionIdentity(builder_, loc, kind, kVectorWidth));
      Value count = builder_.create<arith::SubIOp>(loc, end, begin);
      Value remainder = builder_.create<arith::RemSIOp>(loc, count, prologueEnd_->getResult(0));
      Value vectorEnd = builder_.create<arith::SubIOp>(loc, end, remainder);
      FailureOr<std::vector<Value>> vectorAccumulators = loop(loc, phase, begin, vectorEnd, kVectorWidth, kinds, initial);
      if (failed(vectorAccumulators))
        return failure();
      std::vector<Value> folded = fold(loc, kinds, *vectorAccumulators);
      // The scalar tail reads the same uniform values (already loaded).
      FailureOr<std::vector<Value>> tailAccumulators = loop(loc, phase, vectorEnd, end, 1, kinds, folded);
      if (failed(tailAccumulators))
        return failure();
      accumulators = *tailAccumulators;
    }
    for (size_t r = 0; r < kinds.size(); ++r)
      storeAt(loc, accumulators[r], partials, static_cast<int64_t>(r));
    builder_.create<func::ReturnOp>(loc);
    return success();
  }

  Value divide(Location loc, Value a, Value b) { return builder_.create<arith::DivSIOp>(loc, a, b); }
  Value multiply(Location loc, Value a, Value b) { return builder_.create<arith::MulIOp>(loc, a, b); }
  Value add(Location loc, Value a, Value b) { return builder_.create<arith::AddIOp>(loc, a, b); }
  Value subtract(Location loc, Value a, Value b) { return builder_.create<arith::SubIOp>(loc, a, b); }

  /// The kernel of a pass over the elements of a rule that reads tensors as
  /// matrices: [begin, end) is whole rows (RuleKernels.h). Per row, a
  /// 16-wide loop over its columns and a scalar tail; a row's sums are
  /// carried in f64 lanes and stored when the row is done, a column's are
  /// added (f32) into the chunk's column partials, which the runtime
  /// combines in chunk order. Reductions over the tensor run through every
  /// row, as in the flat kernels.
  FailureOr<std::vector<Value>> matrixElementLoops(Location loc, opt::PhaseOp phase,
                                                   const std::vector<optrt::ReductionKind> &kinds, Value begin,
                                                   Value end, Value partials) {
    SmallVector<opt::AccumulateOp> accumulations = codegen::phaseAccumulations(phase);
    if (plan_->blockwise()) {
      allocateBlockScratch(loc, *plan_);
      blockDecoded_ = false;
    }
    Value dims = bufferBase_.at(plan_->dims);
    Value rows = loadAt(loc, i64(), dims, 1), cols = loadAt(loc, i64(), dims, 2);
    Value zero = constantI64(loc, 0), one = constantI64(loc, 1), width = constantI64(loc, kVectorWidth);
    Value firstRow = divide(loc, begin, cols), endRow = divide(loc, end, cols);
    Value firstMatrix = divide(loc, firstRow, rows);

    // The chunk's column partials: one region of (matrices touched) x cols
    // floats per column reduction, zeroed first.
    std::vector<int> columnSlot(accumulations.size(), -1);
    int numColumnSums = 0;
    for (auto [a, accumulation] : llvm::enumerate(accumulations))
      if (!accumulation.getKind().starts_with("row_"))
        columnSlot[a] = numColumnSums++;
    ColumnPlan columnPlan = planColumns(phase);
    Value columnPartials, regionFloats;
    if (numColumnSums > 0 || !columnPlan.frontier.empty()) {
      columnPartials = loadAt(loc, ptr(), partials, static_cast<int64_t>(kinds.size()));
      Value lastMatrix = divide(loc, subtract(loc, endRow, one), rows);
      regionFloats = multiply(loc, add(loc, subtract(loc, lastMatrix, firstMatrix), one), cols);
      columnInvariants(loc, phase, columnPlan, firstMatrix, add(loc, lastMatrix, one), cols, columnPartials,
                       regionFloats, numColumnSums);
    }
    if (numColumnSums > 0) {
      Value total = multiply(loc, regionFloats, constantI64(loc, numColumnSums));
      auto clear = builder_.create<scf::ForOp>(loc, zero, total, one);
      OpBuilder::InsertionGuard guard(builder_);
      codegen::LoopBody body(builder_, clear);
      Value zeroF32 = builder_.create<arith::ConstantOp>(loc, builder_.getF32FloatAttr(0));
      builder_.create<LLVM::StoreOp>(loc, zeroF32, elementPointer(loc, columnPartials, clear.getInductionVar(), f32()));
      body.yield(loc, {});
    }

    std::vector<Value> initial;
    for (optrt::ReductionKind kind : kinds)
      initial.push_back(codegen::reductionIdentity(builder_, loc, kind, kVectorWidth));
    for (optrt::ReductionKind kind : kinds)
      initial.push_back(codegen::reductionIdentity(builder_, loc, kind, 1));
    auto rowLoop = builder_.create<scf::ForOp>(loc, firstRow, endRow, one, initial);
    {
      OpBuilder::InsertionGuard guard(builder_);
      codegen::LoopBody body(builder_, rowLoop);
      Value row = rowLoop.getInductionVar();
      Value matrix = divide(loc, row, rows);
      Value rowStart = multiply(loc, row, cols);
      Value matrixColumns = multiply(loc, matrix, cols);
      Value partialOffset = multiply(loc, subtract(loc, matrix, firstMatrix), cols);
      size_t numKinds = kinds.size();
      ValueRange carried = rowLoop.getRegionIterArgs();

      // What is the same along the row, once per row.
      position_ = {row, Value(), matrix};
      DenseMap<Value, Value> perRow = rowInvariants(loc, phase, rowStart);
      // One loop over the row's columns at `lanes` lanes, carrying the
      // tensor's reductions and the row's sums. With a gap, the columns are
      // [from, gapBegin) then [gapEnd, to - gapBegin + gapEnd): one loop (one
      // copy of the element code) for a scalar head and tail.
      auto columnLoop = [&](Value from, Value to, int64_t lanes, ValueRange tensorInitial, ValueRange rowInitial,
                            Value gapBegin = Value(), Value gapEnd = Value())
          -> FailureOr<std::pair<std::vector<Value>, std::vector<Value>>> {
        std::vector<Value> loopInitial(tensorInitial.begin(), tensorInitial.end());
        loopInitial.insert(loopInitial.end(), rowInitial.begin(), rowInitial.end());
        auto loop = builder_.create<scf::ForOp>(loc, from, to, lanes == 1 ? one : width, loopInitial);
        OpBuilder::InsertionGuard inner(builder_);
        codegen::LoopBody loopBody(builder_, loop);
        Value column = loop.getInductionVar();
        if (gapBegin)
          column = builder_.create<arith::SelectOp>(
              loc, builder_.create<arith::CmpIOp>(loc, arith::CmpIPredicate::slt, column, gapBegin), column,
              add(loc, column, subtract(loc, gapEnd, gapBegin)));
        position_ = {row, add(loc, matrixColumns, column), matrix};
        // Values per row broadcast; values per column from the scratch the
        // chunk computed them into.
        DenseMap<Value, Value> known;
        for (const auto &[value, scalar] : perRow)
          known[value] = lanes == 1 ? scalar
                                    : builder_.create<vector::BroadcastOp>(
                                          loc, codegen::laneType(scalar.getType(), lanes), scalar).getResult();
        for (auto [k, value] : llvm::enumerate(columnPlan.frontier)) {
          Value at = add(loc, multiply(loc, regionFloats, constantI64(loc, numColumnSums + static_cast<int64_t>(k))),
                         add(loc, partialOffset, column));
          known[value] = cpu::loadAsF32(builder_, loc, columnPartials, at, lanes, optrt::Dtype::F32);
        }
        SmallVector<Value> accumulated;
        FailureOr<SmallVector<Value>> inputs = codegen::emitElementBody(
            builder_, phase, *buffers_, lanes, access(add(loc, rowStart, column), lanes), &accumulated, &known);
        if (failed(inputs))
          return failure();
        std::vector<Value> next;
        ValueRange iter = loop.getRegionIterArgs();
        for (size_t r = 0; r < numKinds; ++r)
          next.push_back(codegen::accumulateReduction(builder_, loc, kinds[r], iter[r], (*inputs)[r], lanes));
        size_t rowSum = numKinds;
        for (auto [a, accumulation] : llvm::enumerate(accumulations)) {
          if (columnSlot[a] < 0) {
            next.push_back(codegen::accumulateReduction(builder_, loc, optrt::ReductionKind::Sum, iter[rowSum++],
                                                        accumulated[a], lanes));
            continue;
          }
          Value at = add(loc, multiply(loc, regionFloats, constantI64(loc, columnSlot[a])),
                         add(loc, partialOffset, column));
          Value before = cpu::loadAsF32(builder_, loc, columnPartials, at, lanes, optrt::Dtype::F32);
          Value after = builder_.create<arith::AddFOp>(loc, before, accumulated[a]);
          cpu::storeFromF32(builder_, loc, columnPartials, at, after, optrt::Dtype::F32);
        }
        loopBody.yield(loc, next);
        std::vector<Value> results(loop.getResults().begin(), loop.getResults().end());
        return std::make_pair(std::vector<Value>(results.begin(), results.begin() + numKinds),
                              std::vector<Value>(results.begin() + numKinds, results.end()));
      };
      std::vector<Value> rowIdentity[2];
      for (opt::AccumulateOp accumulation : accumulations)
        if (accumulation.getKind().starts_with("row_"))
          for (int64_t lanes : {kVectorWidth, int64_t{1}})
            rowIdentity[lanes == 1].push_back(
                codegen::reductionIdentity(builder_, loc, optrt::ReductionKind::Sum, lanes));
      size_t numRowSums = rowIdentity[0].size();
      // The sums a row's columns carry: the tensor's reductions and the
      // row's, 16 lanes and scalar.
      struct Sums {
        std::vector<Value> tensorLanes, tensorScalar, rowLanes, rowScalar;
        std::vector<Value> flat() const {
          std::vector<Value> all = tensorLanes;
          for (const std::vector<Value> *part : {&tensorScalar, &rowLanes, &rowScalar})
            all.insert(all.end(), part->begin(), part->end());
          return all;
        }
      };
      auto unflatten = [&](ValueRange all) {
        auto part = [&](size_t begin, size_t n) {
          return std::vector<Value>(all.begin() + begin, all.begin() + begin + n);
        };
        return Sums{part(0, numKinds), part(numKinds, numKinds), part(2 * numKinds, numRowSums),
                    part(2 * numKinds + numRowSums, numRowSums)};
      };
      // Columns [from, to) of the row: a 16-wide loop from the first element
      // whose index in the tensor is a multiple of 16, then one scalar loop
      // over the head before it and the tail after it. Lanes follow the
      // index mod 16, so a row cut at multiples of 16 (q8 blocks, below)
      // sums in the same order as whole.
      auto rowPiece = [&](Value from, Value to, const Sums &in) -> FailureOr<Sums> {
        Value mask = constantI64(loc, -kVectorWidth);
        auto roundDown = [&](Value index) { return builder_.create<arith::AndIOp>(loc, index, mask).getResult(); };
        Value firstAligned = roundDown(add(loc, add(loc, rowStart, from), constantI64(loc, kVectorWidth - 1)));
        Value alignedFrom = builder_.create<arith::MinSIOp>(loc, subtract(loc, firstAligned, rowStart), to);
        Value alignedTo = builder_.create<arith::MaxSIOp>(
            loc, alignedFrom, subtract(loc, roundDown(add(loc, rowStart, to)), rowStart));
        auto lanes = columnLoop(alignedFrom, alignedTo, kVectorWidth, in.tensorLanes, in.rowLanes);
        if (failed(lanes))
          return failure();
        Value scalarEnd = subtract(loc, to, subtract(loc, alignedTo, alignedFrom));
        auto ends = columnLoop(from, scalarEnd, 1, in.tensorScalar, in.rowScalar, alignedFrom, alignedTo);
        if (failed(ends))
          return failure();
        return Sums{lanes->first, ends->first, lanes->second, ends->second};
      };
      Sums start{std::vector<Value>(carried.begin(), carried.begin() + numKinds),
                 std::vector<Value>(carried.begin() + numKinds, carried.end()), rowIdentity[0], rowIdentity[1]};
      FailureOr<Sums> rowSums = failure();
      if (!plan_->blockwise()) {
        rowSums = rowPiece(zero, cols, start);
        if (failed(rowSums))
          return failure();
      } else {
        // q8 states: the row in pieces, one per q8 block it meets (a piece
        // reads its block's absmax; the new values go to the block's
        // scratch); a block is quantised when the piece that ends it is done
        // (chunks begin on block boundaries: RuleKernels.h).
        Value block = constantI64(loc, optrt::kQ8BlockElements);
        Value rowEnd = add(loc, rowStart, cols);
        auto pieces = builder_.create<scf::ForOp>(loc, divide(loc, rowStart, block),
                                                  add(loc, divide(loc, subtract(loc, rowEnd, one), block), one), one,
                                                  start.flat());
        OpBuilder::InsertionGuard inner(builder_);
        codegen::LoopBody pieceBody(builder_, pieces);
        Value blockIndex = pieces.getInductionVar();
        blockStart_ = multiply(loc, blockIndex, block);
        Value blockEnd = builder_.create<arith::MinSIOp>(loc, add(loc, blockStart_, block), end);
        Value from = subtract(loc, builder_.create<arith::MaxSIOp>(loc, rowStart, blockStart_), rowStart);
        Value to = subtract(loc, builder_.create<arith::MinSIOp>(loc, rowEnd, add(loc, blockStart_, block)), rowStart);
        auto startsBlock = builder_.create<scf::IfOp>(
            loc, builder_.create<arith::CmpIOp>(loc, arith::CmpIPredicate::eq, add(loc, rowStart, from), blockStart_),
            /*withElseRegion=*/false);
        {
          OpBuilder::InsertionGuard branch(builder_);
          builder_.setInsertionPoint(startsBlock.thenBlock()->getTerminator());
          startBlockMaxima(loc, *plan_);
        }
        loadBlockAbsmax(loc, *plan_, blockIndex);
        FailureOr<Sums> piece = rowPiece(from, to, unflatten(pieces.getRegionIterArgs()));
        if (failed(piece))
          return failure();
        auto endsBlock = builder_.create<scf::IfOp>(
            loc, builder_.create<arith::CmpIOp>(loc, arith::CmpIPredicate::eq, add(loc, rowStart, to), blockEnd),
            /*withElseRegion=*/false);
        {
          OpBuilder::InsertionGuard branch(builder_);
          builder_.setInsertionPoint(endsBlock.thenBlock()->getTerminator());
          Value count = subtract(loc, blockEnd, blockStart_);
          finishBlock(loc, *plan_, writtenStates(phase), blockIndex, count,
                      builder_.create<arith::RemSIOp>(loc, count, width));
        }
        pieceBody.yield(loc, piece->flat());
        rowSums = unflatten(pieces.getResults());
      }
      // The row's sums: lanes, then the tail; a mean over the row's columns.
      size_t rowSum = 0;
      for (opt::AccumulateOp accumulation : accumulations) {
        if (!accumulation.getKind().starts_with("row_"))
          continue;
        Value lanes = builder_.create<vector::ReductionOp>(loc, vector::CombiningKind::ADD, rowSums->rowLanes[rowSum]);
        Value sum = builder_.create<arith::AddFOp>(loc, lanes, rowSums->rowScalar[rowSum]);
        ++rowSum;
        if (accumulation.getKind().ends_with("_mean"))
          sum = builder_.create<arith::DivFOp>(loc, sum, builder_.create<arith::SIToFPOp>(loc, f64(), cols));
        Value target = bufferBase_.at(plan_->storage[buffers_->state(accumulation.getInto())]);
        builder_.create<LLVM::StoreOp>(loc, builder_.create<arith::TruncFOp>(loc, f32(), sum),
                                       elementPointer(loc, target, row, f32()));
      }
      std::vector<Value> next = rowSums->tensorLanes;
      next.insert(next.end(), rowSums->tensorScalar.begin(), rowSums->tensorScalar.end());
      body.yield(loc, next);
    }
    std::vector<Value> results(rowLoop.getResults().begin(), rowLoop.getResults().end());
    std::vector<Value> folded = fold(loc, kinds, std::vector<Value>(results.begin(), results.begin() + kinds.size()));
    std::vector<Value> accumulators;
    for (size_t r = 0; r < kinds.size(); ++r) {
      Value tail = results[kinds.size() + r];
      accumulators.push_back(kinds[r] == optrt::ReductionKind::Max
                                 ? Value(builder_.create<arith::MaximumFOp>(loc, folded[r], tail))
                                 : Value(builder_.create<arith::AddFOp>(loc, folded[r], tail)));
    }
    return accumulators;
  }

  /// The axis of the state an opt.load_state or opt.reload reads ("" for
  /// anything else, or a state per element).
  StringRef stateAxis(Operation &op) const {
    if (auto load = dyn_cast<opt::LoadStateOp>(op))
      return buffers_->axis(buffers_->state(load.getState()));
    if (auto reload = dyn_cast<opt::ReloadOp>(op); reload && reload.getState())
      return buffers_->axis(buffers_->state(*reload.getState()));
    return StringRef();
  }

  /// The element region's values the same along every element of a row
  /// (`axis` "rows") or of a column ("cols"): its arguments, and what is
  /// computed from them, constants and reads of states per `axis` or per
  /// matrix only.
  DenseSet<Value> invariantAlong(opt::PhaseOp phase, StringRef axis) const {
    Block &body = phase.getElementBody();
    DenseSet<Value> invariant(body.getArguments().begin(), body.getArguments().end());
    for (Operation &op : body.without_terminator()) {
      if (op.getNumResults() != 1)
        continue;
      StringRef read = stateAxis(op);
      bool pure = isa<arith::ArithDialect, math::MathDialect>(op.getDialect()) && op.getNumRegions() == 0;
      if (read == axis || read == "matrices" ||
          (read.empty() && pure && llvm::all_of(op.getOperands(), [&](Value v) { return invariant.contains(v); })))
        invariant.insert(op.getResult(0));
    }
    return invariant;
  }

  /// Emits the operations of `values` (invariantAlong's) at `lanes` lanes
  /// at the current position (position_), reading states through
  /// access(index, lanes); returns what each became.
  IRMapping emitInvariants(Location loc, opt::PhaseOp phase, const DenseSet<Value> &values, Value index,
                           int64_t lanes) {
    codegen::ElementAccess at = access(index, lanes);
    IRMapping lanesOf;
    Block &region = phase.getElementBody();
    for (BlockArgument argument : region.getArguments()) {
      Value uniform = prologueUniform(static_cast<int>(argument.getArgNumber()), argument.getType(), loc);
      lanesOf.map(argument, lanes == 1 ? uniform
                                       : builder_.create<vector::BroadcastOp>(
                                             loc, codegen::laneType(uniform.getType(), lanes), uniform).getResult());
    }
    for (Operation &op : region.without_terminator()) {
      if (op.getNumResults() != 1 || !values.contains(op.getResult(0)))
        continue;
      Value result = op.getResult(0);
      if (auto load = dyn_cast<opt::LoadStateOp>(op)) {
        lanesOf.map(result, at.load(builder_, op.getLoc(), buffers_->state(load.getState())));
      } else if (auto reload = dyn_cast<opt::ReloadOp>(op)) {
        lanesOf.map(result, at.load(builder_, op.getLoc(), buffers_->state(*reload.getState())));
      } else if (auto constant = dyn_cast<arith::ConstantOp>(op); constant && lanes > 1) {
        auto type = VectorType::get({lanes}, constant.getType());
        lanesOf.map(result,
                    builder_.create<arith::ConstantOp>(op.getLoc(), DenseElementsAttr::get(type, constant.getValue())));
      } else {
        Operation *clone = builder_.clone(op, lanesOf);
        clone->getResult(0).setType(codegen::laneType(result.getType(), lanes));
      }
    }
    return lanesOf;
  }

  /// The element region's values that are the same along a row, as scalars
  /// computed at the current row (position_): a matrix rule's factors per
  /// row cost a division or a square root per row, not per element.
  /// (Arguments and constants the body maps itself.)
  DenseMap<Value, Value> rowInvariants(Location loc, opt::PhaseOp phase, Value rowStart) {
    DenseSet<Value> invariant = invariantAlong(phase, "rows");
    IRMapping scalar = emitInvariants(loc, phase, invariant, rowStart, 1);
    DenseMap<Value, Value> known;
    for (Operation &op : phase.getElementBody().without_terminator())
      if (op.getNumResults() == 1 && invariant.contains(op.getResult(0)) && !isa<arith::ConstantOp>(op))
        known[op.getResult(0)] = scalar.lookup(op.getResult(0));
    return known;
  }

  /// The values of a matrix rule's element region that are the same down
  /// each column but differ between columns (computed from uniforms,
  /// constants and values per column or matrix, reading some value per
  /// column): `invariant` every such value (and the ones per matrix and
  /// uniform they use), `frontier` those the rest of the region reads, which
  /// the kernel computes once per column of each matrix into its column
  /// scratch (f32 only; a truth value is recomputed from them).
  struct ColumnPlan {
    DenseSet<Value> invariant;
    SmallVector<Value> frontier;
  };
  ColumnPlan planColumns(opt::PhaseOp phase) const {
    ColumnPlan plan;
    if (!buffers_->matrixShaped() || phase.getDomain())
      return plan;
    plan.invariant = invariantAlong(phase, "cols");
    DenseSet<Value> readsColumns;
    for (Operation &op : phase.getElementBody().without_terminator()) {
      if (op.getNumResults() != 1 || !plan.invariant.contains(op.getResult(0)))
        continue;
      if (stateAxis(op) == "cols" ||
          llvm::any_of(op.getOperands(), [&](Value v) { return readsColumns.contains(v); }))
        readsColumns.insert(op.getResult(0));
      if (!readsColumns.contains(op.getResult(0)) || !stateAxis(op).empty() || !op.getResult(0).getType().isF32())
        continue;
      bool usedOutside = llvm::any_of(op.getResult(0).getUsers(), [&](Operation *user) {
        return user->getNumResults() != 1 || !plan.invariant.contains(user->getResult(0));
      });
      if (usedOutside)
        plan.frontier.push_back(op.getResult(0));
    }
    return plan;
  }

  /// Computes plan.frontier for each column of matrices [firstMatrix,
  /// endMatrix) into the chunk's column scratch, after its column sums: 16
  /// columns at a time, then the row's tail one by one.
  void columnInvariants(Location loc, opt::PhaseOp phase, const ColumnPlan &plan, Value firstMatrix, Value endMatrix,
                        Value cols, Value scratch, Value regionFloats, int numColumnSums) {
    if (plan.frontier.empty())
      return;
    Value zero = constantI64(loc, 0), one = constantI64(loc, 1), width = constantI64(loc, kVectorWidth);
    auto matrixLoop = builder_.create<scf::ForOp>(loc, firstMatrix, endMatrix, one);
    OpBuilder::InsertionGuard guard(builder_);
    codegen::LoopBody matrixBody(builder_, matrixLoop);
    Value matrix = matrixLoop.getInductionVar();
    Value vectorEnd = subtract(loc, cols, builder_.create<arith::RemSIOp>(loc, cols, width));
    auto columns = [&](Value from, Value to, int64_t lanes) {
      auto loop = builder_.create<scf::ForOp>(loc, from, to, lanes == 1 ? one : width);
      OpBuilder::InsertionGuard inner(builder_);
      codegen::LoopBody body(builder_, loop);
      Value column = loop.getInductionVar();
      position_ = {Value(), add(loc, multiply(loc, matrix, cols), column), matrix};
      IRMapping lanesOf = emitInvariants(loc, phase, plan.invariant, position_.column, lanes);
      Value offset = add(loc, multiply(loc, subtract(loc, matrix, firstMatrix), cols), column);
      for (auto [k, value] : llvm::enumerate(plan.frontier)) {
        Value slot = add(loc, multiply(loc, regionFloats, constantI64(loc, numColumnSums + static_cast<int64_t>(k))),
                         offset);
        cpu::storeFromF32(builder_, loc, scratch, slot, lanesOf.lookup(value), optrt::Dtype::F32);
      }
      body.yield(loc, {});
    };
    columns(zero, vectorEnd, kVectorWidth);
    columns(vectorEnd, cols, 1);
    matrixBody.yield(loc, {});
  }

  /// The kernel of a pass over each row (or column, or matrix) of each
  /// matrix, between the passes over the elements: [begin, end) is whole
  /// matrices' rows (columns; matrices). Scalar code; a reduction over each matrix's rows (or
  /// columns) is summed in f64 in order and stored per matrix.
  FailureOr<std::vector<Value>> axisLoops(Location loc, opt::PhaseOp phase, optrt::PhaseDomain domain, Value begin,
                                          Value end) {
    SmallVector<opt::AccumulateOp> accumulations = codegen::phaseAccumulations(phase);
    std::vector<optrt::ReductionKind> kinds = codegen::phaseReductionKinds(phase);
    bool overRows = domain == optrt::PhaseDomain::Rows, overMatrices = domain == optrt::PhaseDomain::Matrices;
    Value dims = bufferBase_.at(plan_->dims);
    Value perMatrix = overMatrices ? constantI64(loc, 1) : loadAt(loc, i64(), dims, overRows ? 1 : 2);
    Value zero = constantI64(loc, 0), one = constantI64(loc, 1);
    // Reductions over the tensor: a value per row stands for the row's
    // `cols` elements (per column: `rows`), so its sum (of squares, for a
    // norm) counts that many times; a maximum does not.
    std::vector<Value> tensorInitial;
    for (optrt::ReductionKind kind : kinds)
      tensorInitial.push_back(codegen::reductionIdentity(builder_, loc, kind, 1));
    auto matrixLoop = builder_.create<scf::ForOp>(loc, divide(loc, begin, perMatrix), divide(loc, end, perMatrix), one,
                                                  tensorInitial);
    std::vector<Value> tensorSums;
    {
    OpBuilder::InsertionGuard guard(builder_);
    codegen::LoopBody body(builder_, matrixLoop);
    Value matrix = matrixLoop.getInductionVar();
    std::vector<Value> initial;
    for (size_t a = 0; a < accumulations.size(); ++a)
      initial.push_back(codegen::reductionIdentity(builder_, loc, optrt::ReductionKind::Sum, 1));
    ValueRange carried = matrixLoop.getRegionIterArgs();
    initial.insert(initial.end(), carried.begin(), carried.end());
    auto loop = builder_.create<scf::ForOp>(loc, zero, perMatrix, one, initial);
    {
      OpBuilder::InsertionGuard inner(builder_);
      codegen::LoopBody loopBody(builder_, loop);
      Value at = add(loc, multiply(loc, matrix, perMatrix), loop.getInductionVar());
      position_ = overRows ? MatrixPosition{at, Value(), matrix} : MatrixPosition{Value(), at, matrix};
      SmallVector<Value> accumulated;
      FailureOr<SmallVector<Value>> inputs =
          codegen::emitElementBody(builder_, phase, *buffers_, 1, access(at, 1), &accumulated);
      if (failed(inputs))
        return failure();
      std::vector<Value> next;
      ValueRange iter = loop.getRegionIterArgs();
      for (size_t a = 0; a < accumulations.size(); ++a)
        next.push_back(codegen::accumulateReduction(builder_, loc, optrt::ReductionKind::Sum, iter[a], accumulated[a], 1));
      for (size_t r = 0; r < kinds.size(); ++r)
        next.push_back(codegen::accumulateReduction(builder_, loc, kinds[r], iter[accumulations.size() + r],
                                                    (*inputs)[r], 1));
      loopBody.yield(loc, next);
    }
    for (auto [a, accumulation] : llvm::enumerate(accumulations)) {
      Value sum = loop.getResult(a);
      if (accumulation.getKind().ends_with("_mean"))
        sum = builder_.create<arith::DivFOp>(loc, sum, builder_.create<arith::SIToFPOp>(loc, f64(), perMatrix));
      Value target = bufferBase_.at(plan_->storage[buffers_->state(accumulation.getInto())]);
      builder_.create<LLVM::StoreOp>(loc, builder_.create<arith::TruncFOp>(loc, f32(), sum),
                                     elementPointer(loc, target, matrix, f32()));
    }
    body.yield(loc, ValueRange(loop.getResults()).drop_front(accumulations.size()));
    }
    // How many elements each value stands for: the other axis's length (a
    // matrix's: rows x cols).
    Value count = overMatrices ? multiply(loc, loadAt(loc, i64(), dims, 1), loadAt(loc, i64(), dims, 2))
                               : loadAt(loc, i64(), dims, overRows ? 2 : 1);
    Value weight = builder_.create<arith::SIToFPOp>(loc, f64(), count);
    for (auto [r, kind] : llvm::enumerate(kinds)) {
      Value total = matrixLoop.getResult(r);
      tensorSums.push_back(kind == optrt::ReductionKind::Max ? total
                                                             : builder_.create<arith::MulFOp>(loc, total, weight).getResult());
    }
    return tensorSums;
  }

  std::vector<Value> fold(Location loc, const std::vector<optrt::ReductionKind> &kinds, const std::vector<Value> &vectors) {
    std::vector<Value> folded;
    for (size_t r = 0; r < kinds.size(); ++r) {
      auto combining = kinds[r] == optrt::ReductionKind::Max ? vector::CombiningKind::MAXIMUMF
                                                             : vector::CombiningKind::ADD;
      folded.push_back(builder_.create<vector::ReductionOp>(loc, combining, vectors[r]));
    }
    return folded;
  }

  /// The kernel of a layout with q8 states: one pass over [begin, end) in
  /// blocks of 256 elements (begin is a multiple of 256; the tensor's last
  /// block may be partial). Per block, each q8 state's absmax is read once
  /// (with byte permutes, each q8 state the phase reads is decoded into its
  /// scratch), the element code runs 16 lanes at a time (then a scalar tail, in the
  /// last block only) writing new q8-state values to a 256-float scratch and
  /// their block absmax to an accumulator, and then each q8 state this phase
  /// writes is quantised from the scratch and stored with its new absmax.
  /// Reductions: the vector and the scalar accumulators run through all
  /// blocks and are combined at the end.
  FailureOr<std::vector<Value>> blockwiseLoops(Location loc, opt::PhaseOp phase, const LayoutPlan &plan,
                                               const std::vector<optrt::ReductionKind> &kinds, Value begin,
                                               Value end) {
    constexpr int64_t block = optrt::kQ8BlockElements;
    std::set<int> written = writtenStates(phase), read;
    for (Operation &op : phase.getElementBody().without_terminator()) {
      if (auto load = dyn_cast<opt::LoadStateOp>(op); load && load.getType().isF32())
        read.insert(buffers_->state(load.getState()));
      if (auto reload = dyn_cast<opt::ReloadOp>(op); reload && reload.getState())
        read.insert(buffers_->state(*reload.getState()));
    }
    allocateBlockScratch(loc, plan);
    blockDecoded_ = isa_.avx512vbmi;
    std::vector<Value> initial;
    for (optrt::ReductionKind kind : kinds)
      initial.push_back(codegen::reductionIdentity(builder_, loc, kind, kVectorWidth));
    for (optrt::ReductionKind kind : kinds)
      initial.push_back(codegen::reductionIdentity(builder_, loc, kind, 1));
    size_t numKinds = kinds.size();

    auto blocks = builder_.create<scf::ForOp>(loc, begin, end, constantI64(loc, block), initial);
    OpBuilder::InsertionGuard guard(builder_);
    codegen::LoopBody body(builder_, blocks);
    blockStart_ = blocks.getInductionVar();
    Value blockEnd = builder_.create<arith::MinSIOp>(
        loc, builder_.create<arith::AddIOp>(loc, blockStart_, constantI64(loc, block)), end);
    Value blockIndex = builder_.create<arith::DivSIOp>(loc, blockStart_, constantI64(loc, block));
    loadBlockAbsmax(loc, plan, blockIndex);
    startBlockMaxima(loc, plan);
    Value count = builder_.create<arith::SubIOp>(loc, blockEnd, blockStart_);
    Value remainder = builder_.create<arith::RemSIOp>(loc, count, constantI64(loc, kVectorWidth));
    Value vectorEnd = builder_.create<arith::SubIOp>(loc, blockEnd, remainder);
    if (isa_.avx512vbmi)
      for (int buffer : read)
        if (plan.absmax.count(buffer))
          decodeBlock(loc, plan, buffer, count, remainder);
    auto carried = blocks.getRegionIterArgs();
    std::vector<Value> vectorIn(carried.begin(), carried.begin() + numKinds);
    std::vector<Value> tailIn(carried.begin() + numKinds, carried.end());
    FailureOr<std::vector<Value>> vectorOut = loop(loc, phase, blockStart_, vectorEnd, kVectorWidth, kinds, vectorIn);
    if (failed(vectorOut))
      return failure();
    FailureOr<std::vector<Value>> tailOut = loop(loc, phase, vectorEnd, blockEnd, 1, kinds, tailIn);
    if (failed(tailOut))
      return failure();
    finishBlock(loc, plan, written, blockIndex, count, remainder);
    std::vector<Value> next(vectorOut->begin(), vectorOut->end());
    next.insert(next.end(), tailOut->begin(), tailOut->end());
    body.yield(loc, next);
    builder_.setInsertionPointAfter(blocks);

    std::vector<Value> results(blocks.getResults().begin(), blocks.getResults().end());
    std::vector<Value> folded = fold(loc, kinds, std::vector<Value>(results.begin(), results.begin() + numKinds));
    std::vector<Value> combined;
    for (size_t r = 0; r < numKinds; ++r) {
      Value tail = results[numKinds + r];
      combined.push_back(kinds[r] == optrt::ReductionKind::Max
                             ? builder_.create<arith::MaximumFOp>(loc, folded[r], tail).getResult()
                             : builder_.create<arith::AddFOp>(loc, folded[r], tail).getResult());
    }
    return combined;
  }

  /// Per q8 state of the layout, the block's f32 scratch (the new values,
  /// quantised when the block is done) and the maxima of their magnitudes,
  /// 16 lanes and the scalar tail's, allocated once per kernel.
  void allocateBlockScratch(Location loc, const LayoutPlan &plan) {
    OpBuilder::InsertionGuard guard(builder_);
    builder_.setInsertionPoint(prologueEnd_);
    scratch_.clear();
    vectorMax_.clear();
    tailMax_.clear();
    Value one = constantI64(loc, 1);
    for (const auto &[buffer, absmax] : plan.absmax) {
      scratch_[buffer] =
          builder_.create<LLVM::AllocaOp>(loc, ptr(), f32(), constantI64(loc, optrt::kQ8BlockElements), 64);
      vectorMax_[buffer] = builder_.create<LLVM::AllocaOp>(loc, ptr(), codegen::laneType(f32(), kVectorWidth), one, 64);
      tailMax_[buffer] = builder_.create<LLVM::AllocaOp>(loc, ptr(), f32(), one, 4);
    }
  }
  /// Each q8 state's absmax of block `blockIndex`, for the element code's reads.
  void loadBlockAbsmax(Location loc, const LayoutPlan &plan, Value blockIndex) {
    blockAbsmax_.clear();
    for (const auto &[buffer, absmax] : plan.absmax)
      blockAbsmax_[buffer] = builder_.create<LLVM::LoadOp>(
          loc, f32(), elementPointer(loc, bufferBase_.at(absmax), blockIndex, f32()), 4);
  }
  /// A block begins: its new values' maxima start at 0.
  void startBlockMaxima(Location loc, const LayoutPlan &plan) {
    Value zeroVector = builder_.create<arith::ConstantOp>(
        loc, DenseElementsAttr::get(VectorType::get({kVectorWidth}, f32()), builder_.getF32FloatAttr(0)));
    Value zero = builder_.create<arith::ConstantOp>(loc, builder_.getF32FloatAttr(0));
    for (const auto &[buffer, absmax] : plan.absmax) {
      builder_.create<LLVM::StoreOp>(loc, zeroVector, vectorMax_.at(buffer), 64);
      builder_.create<LLVM::StoreOp>(loc, zero, tailMax_.at(buffer), 4);
    }
  }
  /// A block of `count` elements (`remainder` = count % 16) is done: each q8
  /// state in `written` gets the maximum of its new values' magnitudes as the
  /// block's absmax, and its codes quantised from the scratch.
  void finishBlock(Location loc, const LayoutPlan &plan, const std::set<int> &written, Value blockIndex, Value count,
                   Value remainder) {
    for (int buffer : written) {
      if (!plan.absmax.count(buffer))
        continue;
      Value lanesMax =
          builder_.create<LLVM::LoadOp>(loc, codegen::laneType(f32(), kVectorWidth), vectorMax_.at(buffer), 64);
      // The lanes are finite magnitudes (never NaN or -0), which order as
      // their bit patterns do: an unsigned integer max is the same value and
      // a 4-step shuffle tree, where maximumf's NaN handling makes LLVM emit a
      // serial chain of 15 compares and blends per block.
      auto lanesI32 = VectorType::get({kVectorWidth}, builder_.getI32Type());
      Value bitsMax = builder_.create<vector::ReductionOp>(
          loc, vector::CombiningKind::MAXUI, builder_.create<arith::BitcastOp>(loc, lanesI32, lanesMax));
      Value vectorMax = builder_.create<arith::BitcastOp>(loc, f32(), bitsMax);
      Value tailMax = builder_.create<LLVM::LoadOp>(loc, f32(), tailMax_.at(buffer), 4);
      Value absmax = builder_.create<arith::MaximumFOp>(loc, vectorMax, tailMax);
      quantiseBlock(loc, plan, buffer, absmax, count, remainder);
      builder_.create<LLVM::StoreOp>(loc, absmax,
                                     elementPointer(loc, bufferBase_.at(plan.absmax.at(buffer)), blockIndex, f32()), 4);
    }
  }
  /// The states a phase writes (buffers), as blockwise code finishes them.
  std::set<int> writtenStates(opt::PhaseOp phase) const {
    std::set<int> written;
    for (auto store : phase.getElementBody().getOps<opt::StoreStateOp>())
      written.insert(buffers_->state(store.getState()));
    return written;
  }

  /// With byte permutes (isa_.avx512vbmi): the block's values of q8 buffer
  /// `buffer` into its scratch, 64 at a time (then 16 and one at a time, in
  /// a partial block), where the element loop reads them and writes the new
  /// ones over them (a phase reads its states before it writes any).
  void decodeBlock(Location loc, const LayoutPlan &plan, int buffer, Value count, Value remainder) {
    bool isSigned = plan.dtype[buffer] == optrt::Dtype::Q8Signed;
    Value codes = bufferBase_.at(plan.storage[buffer]), absmax = blockAbsmax_.at(buffer);
    Value wideCount = builder_.create<arith::SubIOp>(
        loc, count, builder_.create<arith::RemSIOp>(loc, count, constantI64(loc, kBytePlaneWidth)));
    Value vectorCount = builder_.create<arith::SubIOp>(loc, count, remainder);
    eachStep(loc, constantI64(loc, 0), wideCount, kBytePlaneWidth, [&](Value j) {
      cpu::Lanes64 values = cpu::dequantizeQ8x64(builder_, loc, isSigned, codes,
                                                 builder_.create<arith::AddIOp>(loc, blockStart_, j), absmax);
      for (int k = 0; k < 4; ++k)
        cpu::storeFromF32(builder_, loc, scratch_.at(buffer),
                          builder_.create<arith::AddIOp>(loc, j, constantI64(loc, 16 * k)), values[k],
                          optrt::Dtype::F32);
    });
    for (auto [lower, upper, width] : {std::tuple{wideCount, vectorCount, kVectorWidth}, std::tuple{vectorCount, count, int64_t{1}}})
      eachStep(loc, lower, upper, width, [&, width = width](Value j) {
        Value element = builder_.create<arith::AddIOp>(loc, blockStart_, j);
        Value values = cpu::dequantizeQ8(builder_, loc, *tables_, isSigned, codes, element, width, absmax);
        cpu::storeFromF32(builder_, loc, scratch_.at(buffer), j, values, optrt::Dtype::F32);
      });
  }

  /// A loop over [lower, upper) in steps of `step`, `body` given the index.
  void eachStep(Location loc, Value lower, Value upper, int64_t step, llvm::function_ref<void(Value)> body) {
    auto forOp = builder_.create<scf::ForOp>(loc, lower, upper, constantI64(loc, step));
    OpBuilder::InsertionGuard guard(builder_);
    builder_.setInsertionPoint(forOp.getBody()->getTerminator());
    body(forOp.getInductionVar());
  }

  /// Codes of the block's new values of q8 buffer `buffer` from its scratch:
  /// with byte permutes 64 at a time first (cpu::quantizeQ8x64), then 16 at
  /// a time, then the partial block's tail.
  void quantiseBlock(Location loc, const LayoutPlan &plan, int buffer, Value absmax, Value count, Value remainder) {
    bool isSigned = plan.dtype[buffer] == optrt::Dtype::Q8Signed;
    Value codes = bufferBase_.at(plan.storage[buffer]);
    Value vectorCount = builder_.create<arith::SubIOp>(loc, count, remainder);
    Value wideCount = constantI64(loc, 0);
    if (isa_.avx512vbmi) {
      wideCount = builder_.create<arith::SubIOp>(
          loc, count, builder_.create<arith::RemSIOp>(loc, count, constantI64(loc, kBytePlaneWidth)));
      Value reciprocal = builder_.create<arith::DivFOp>(loc, builder_.create<arith::ConstantOp>(loc, builder_.getF32FloatAttr(1.0f)), absmax);
      // Outside [2^-126, 2^126] 1/absmax is Inf or subnormal: divide. Not
      // for absmax 0 (all-zero blocks are common): 1/0 = Inf, and x * Inf is
      // x / 0 for every x such a block holds (+-0 -> NaN, +-Inf, NaN).
      auto bound = [&](float v) { return builder_.create<arith::ConstantOp>(loc, builder_.getF32FloatAttr(v)); };
      Value tiny = builder_.create<arith::AndIOp>(
          loc, builder_.create<arith::CmpFOp>(loc, arith::CmpFPredicate::OGT, absmax, bound(0.0f)),
          builder_.create<arith::CmpFOp>(loc, arith::CmpFPredicate::OLT, absmax, bound(0x1p-126f)));
      Value divide = builder_.create<arith::OrIOp>(
          loc, tiny, builder_.create<arith::CmpFOp>(loc, arith::CmpFPredicate::UGT, absmax, bound(0x1p126f)));
      eachStep(loc, constantI64(loc, 0), wideCount, kBytePlaneWidth, [&](Value j) {
        cpu::Lanes64 x;
        for (int k = 0; k < 4; ++k)
          x[k] = cpu::loadAsF32(builder_, loc, scratch_.at(buffer),
                                builder_.create<arith::AddIOp>(loc, j, constantI64(loc, 16 * k)), kVectorWidth,
                                optrt::Dtype::F32);
        cpu::quantizeQ8x64(builder_, loc, isSigned, x, absmax, reciprocal, divide, codes,
                           builder_.create<arith::AddIOp>(loc, blockStart_, j));
      });
    }
    for (auto [lower, upper, width] : {std::tuple{wideCount, vectorCount, kVectorWidth}, std::tuple{vectorCount, count, int64_t{1}}})
      eachStep(loc, lower, upper, width, [&, width = width](Value j) {
        Value x = cpu::loadAsF32(builder_, loc, scratch_.at(buffer), j, width, optrt::Dtype::F32);
        Value code = cpu::quantizeQ8(builder_, loc, *tables_, isSigned, x, absmax);
        Value element = builder_.create<arith::AddIOp>(loc, blockStart_, j);
        builder_.create<LLVM::StoreOp>(loc, code, elementPointer(loc, codes, element, builder_.getIntegerType(8)), 1);
      });
  }

  ModuleOp optModule_;
  KernelSignature &signature_;
  OpBuilder builder_;
  opt::RuleOp rule_;
  opt::UpdateOp update_;
  std::vector<opt::PhaseOp> phases_;
  llvm::StringMap<int> hyperIndex_;
  llvm::StringMap<int> scalarIndex_;
  llvm::StringMap<int> stateIndex_; // StateInfo index
  MatrixPosition position_;         // while emitting a matrix rule's element code
  llvm::DenseMap<Value, int> reductionIndex_; // phase result → runtime reduction slot
  std::optional<codegen::BufferLayout> buffers_;
  std::vector<LayoutPlan> plans_;
  CpuVectorIsa isa_;
  std::optional<cpu::Q8Tables> tables_;
  // Per kernel being built:
  const LayoutPlan *plan_ = nullptr;
  std::map<int, Value> bufferBase_; // by the layout's buffer index
  // q8 states, by element-code buffer: per-kernel scratch and absmax
  // accumulators (allocas), and the current block's start and stored absmax.
  std::map<int, Value> scratch_, vectorMax_, tailMax_, blockAbsmax_;
  Value blockStart_;
  // q8 reads come from the block's scratch, decoded ahead with byte permutes
  // (the flat q8 kernels with AVX-512 VBMI), not from the codes.
  bool blockDecoded_ = false;
  Value stochasticKey_;
  Value uniformsArg_;
  std::map<int, Value> uniformLoads_;
  Operation *prologueEnd_ = nullptr;
};

} // namespace

OwningOpRef<ModuleOp> buildKernels(ModuleOp optModule, KernelSignature &signature,
                                   const std::vector<std::string> &layouts, CpuVectorIsa isa) {
  MLIRContext *context = optModule.getContext();
  context->loadDialect<func::FuncDialect, scf::SCFDialect, vector::VectorDialect,
                       LLVM::LLVMDialect, arith::ArithDialect, math::MathDialect>();
  return KernelBuilder(optModule, signature, isa).run(layouts);
}

} // namespace optdsl
