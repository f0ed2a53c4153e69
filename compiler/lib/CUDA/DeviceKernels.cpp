// Builds the gpu.module of a rule: the host kernels' uniform and
// scalar-update functions (f64) become device functions, each phase's
// element code is emitted again for the GPU, and gpu.func kernels implement
// the device ABI of runtime/include/optrt/CudaKernels.h. Everything a step
// needs (the step number, hypers, scalar states, reductions) is read from
// device memory, so a step is a fixed sequence of launches with fixed
// arguments: it can be captured in a CUDA graph and replayed.
//
// Element kernels: a block per chunk (grid-stride over the chunk table), its
// threads stride over the chunk's elements, so a warp's accesses are
// contiguous. The element code is the backend-neutral one
// (codegen::emitElementBody): at width 4 with 16-byte accesses
// (ld.global.v4.f32) where every buffer of the tensor is 16-byte aligned,
// at width 1 for the chunk's unaligned head and tail, and for tensors whose
// caller-owned param or grad is not 16-byte aligned.
//
// Reductions: each thread accumulates in f64 over its elements in order, the
// block combines the threads' values in a fixed tree in shared memory, and
// one partial per chunk lands in the partials table; finish[p] then combines
// a tensor's chunk partials the same way (threads over chunks, then the
// tree) and finishes mean and norm. Launch shape and block size are fixed,
// so the result is bitwise reproducible from run to run (though not equal to
// the CPU's, which sums in another order).
#include "optdsl/CUDAKernelGen.h"

#include "optdsl/Codegen/ElementLoop.h"
#include "optdsl/Codegen/PhaseBody.h"
#include "optdsl/Dialect/OptDialect.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/Builders.h"

#include <algorithm>
#include <limits>
#include <map>
#include <optional>

namespace optdsl {

using namespace mlir;

namespace {

constexpr int64_t kTensorRecord = 4; // {group, firstChunk, endChunk, numElements}
constexpr int64_t kChunkRecord = 3;  // {tensor, begin, end}
constexpr unsigned kGlobalAddressSpace = 1;
constexpr unsigned kSharedAddressSpace = 3;
constexpr int64_t kVectorLanes = 4; // 16 bytes of f32
constexpr const char *kSharedName = "optdsl_block_scratch";

std::string entryName(const std::string &rule, const std::string &what) {
  return "optdsl_" + rule + "_cuda_" + what;
}

class DeviceKernelBuilder {
public:
  DeviceKernelBuilder(ModuleOp optModule, ModuleOp host, const KernelSignature &signature,
                      optrt::CudaKernels &facts)
      : optModule_(optModule), host_(host), sig_(signature), facts_(facts), b_(host.getContext()),
        loc_(host.getLoc()) {}

  OwningOpRef<ModuleOp> run() {
    if (failed(findPhases()))
      return nullptr;
    computeFacts();
    OwningOpRef<ModuleOp> module = ModuleOp::create(loc_);
    (*module)->setAttr(gpu::GPUDialect::getContainerModuleAttrName(), b_.getUnitAttr());
    b_.setInsertionPointToEnd(module->getBody());
    auto gpuModule = b_.create<gpu::GPUModuleOp>(loc_, "optdsl_" + sig_.rule + "_cuda");
    b_.setInsertionPointToStart(gpuModule.getBody());
    // The host module's uniform and scalar-update functions (f64, one call
    // per tensor) become device functions. Not init (the runtime fills state
    // buffers with memset from the host init's values), nor the CPU element
    // kernels (the element code is emitted again below, for the GPU).
    for (auto function : host_.getOps<func::FuncOp>()) {
      StringRef name = function.getSymName();
      bool uniforms = name.starts_with("optdsl_" + sig_.rule + "_uniforms");
      if (!uniforms && name != scalarUpdateFunctionName(sig_.rule))
        continue;
      cast<func::FuncOp>(b_.clone(*function)).setPrivate();
    }
    b_.create<LLVM::GlobalOp>(loc_, LLVM::LLVMArrayType::get(f64(), kCudaBlockSize),
                              /*isConstant=*/false, LLVM::Linkage::Internal, kSharedName,
                              Attribute(), /*alignment=*/8, kSharedAddressSpace);
    for (int phase = 0; phase < sig_.numPhases; ++phase) {
      buildUniformsKernel(phase);
      if (failed(buildElementKernel(phase)))
        return nullptr;
      if (reductionEnd(phase) > reductionBegin(phase))
        buildFinishKernel(phase);
    }
    if (numScalars_ > 0)
      buildScalarsKernel();
    buildAdvanceKernel();
    return module;
  }

private:
  Type f32() { return b_.getF32Type(); }
  Type f64() { return b_.getF64Type(); }
  Type i64() { return b_.getI64Type(); }
  Type ptr() { return LLVM::LLVMPointerType::get(b_.getContext()); }

  void computeFacts() {
    for (const optrt::StateInfo &state : sig_.states)
      (state.scalar ? numScalars_ : numElementwise_) += 1;
    numReductions_ = static_cast<int64_t>(sig_.reductions.size());
    int maxUniforms = 0;
    for (int n : sig_.numUniforms)
      maxUniforms = std::max(maxUniforms, n);
    int64_t maxPerPhase = 0;
    for (int phase = 0; phase < sig_.numPhases; ++phase)
      maxPerPhase = std::max(maxPerPhase, reductionEnd(phase) - reductionBegin(phase));
    facts_.rule = sig_.rule;
    facts_.fixedHypers.clear();
    for (const optrt::HyperInfo &hyper : sig_.hypers)
      if (hyper.fixed)
        facts_.fixedHypers.emplace_back(hyper.name, hyper.defaultValue);
    facts_.blockSize = kCudaBlockSize;
    facts_.buffersPerTensor = static_cast<int>(2 + numElementwise_);
    facts_.uniformStride = std::max(1, maxUniforms);
    facts_.partialStride = static_cast<int>(std::max<int64_t>(1, maxPerPhase));
    facts_.uniformsEntries.clear();
    facts_.elementEntries.clear();
    facts_.finishEntries.clear();
    for (int phase = 0; phase < sig_.numPhases; ++phase) {
      std::string p = std::to_string(phase);
      facts_.uniformsEntries.push_back(entryName(sig_.rule, "uniforms" + p));
      facts_.elementEntries.push_back(entryName(sig_.rule, "element" + p));
      facts_.finishEntries.push_back(reductionEnd(phase) > reductionBegin(phase)
                                         ? entryName(sig_.rule, "finish" + p)
                                         : std::string());
    }
    facts_.scalarsEntry = numScalars_ > 0 ? entryName(sig_.rule, "scalars") : std::string();
    facts_.advanceEntry = entryName(sig_.rule, "advance");
  }

  LogicalResult findPhases() {
    auto rules = optModule_.getOps<opt::RuleOp>();
    if (rules.empty())
      return optModule_.emitError("expected an opt.rule");
    opt::RuleOp rule = *rules.begin();
    buffers_.emplace(rule);
    for (opt::UpdateOp update : rule.getBody().front().getOps<opt::UpdateOp>())
      for (opt::PhaseOp phase : update.getBody().front().getOps<opt::PhaseOp>())
        phases_.push_back(phase);
    if (static_cast<int>(phases_.size()) != sig_.numPhases)
      return rule.emitError("the opt module has ") << phases_.size() << " phases, the host kernels "
                                                   << sig_.numPhases << "; run opt-kernel-prep first";
    return success();
  }

  // Reductions of phase p are [reductionBegin(p), reductionEnd(p)) (grouped
  // by phase in the signature).
  int64_t reductionBegin(int phase) const {
    int64_t n = 0;
    for (const optrt::ReductionInfo &r : sig_.reductions)
      n += r.phase < phase;
    return n;
  }
  int64_t reductionEnd(int phase) const { return reductionBegin(phase + 1); }

  // --- small builders -------------------------------------------------------
  Value constI64(int64_t v) { return b_.create<arith::ConstantOp>(loc_, b_.getI64IntegerAttr(v)); }
  Value constF64(double v) { return b_.create<arith::ConstantOp>(loc_, b_.getF64FloatAttr(v)); }
  Value gep(Value base, Value index, Type element) {
    return b_.create<LLVM::GEPOp>(loc_, ptr(), element, base, ValueRange{index});
  }
  Value gep(Value base, int64_t index, Type element) { return gep(base, constI64(index), element); }
  // Alignment spelled out: without it, LLVM's default data layout (which the
  // gpu.module is translated with) aligns i64 to 4 and splits the access.
  static unsigned alignOf(Type type) { return type.isF32() ? 4 : 8; }
  Value load(Type type, Value address) { return b_.create<LLVM::LoadOp>(loc_, type, address, alignOf(type)); }
  void store(Value value, Value address) {
    b_.create<LLVM::StoreOp>(loc_, value, address, alignOf(value.getType()));
  }
  Value mul(Value a, Value c) { return b_.create<arith::MulIOp>(loc_, a, c); }
  Value add(Value a, Value c) { return b_.create<arith::AddIOp>(loc_, a, c); }
  Value toI64(Value index) { return b_.create<arith::IndexCastOp>(loc_, i64(), index); }
  Value threadId() { return toI64(b_.create<gpu::ThreadIdOp>(loc_, gpu::Dimension::x)); }
  Value blockId() { return toI64(b_.create<gpu::BlockIdOp>(loc_, gpu::Dimension::x)); }
  Value gridDim() { return toI64(b_.create<gpu::GridDimOp>(loc_, gpu::Dimension::x)); }
  Value globalThread() { return add(mul(blockId(), constI64(kCudaBlockSize)), threadId()); }

  gpu::GPUFuncOp startKernel(const std::string &name, TypeRange inputs) {
    auto kernel = b_.create<gpu::GPUFuncOp>(loc_, name, b_.getFunctionType(inputs, {}));
    kernel->setAttr(gpu::GPUDialect::getKernelFuncAttrName(), b_.getUnitAttr());
    kernel.setKnownBlockSizeAttr(b_.getDenseI32ArrayAttr({kCudaBlockSize, 1, 1}));
    b_.setInsertionPointToStart(&kernel.getBody().front());
    return kernel;
  }

  /// Runs `body` in the thread only if `condition` holds.
  template <typename Body> void ifThen(Value condition, Body body) {
    auto ifOp = b_.create<scf::IfOp>(loc_, condition, /*withElseRegion=*/false);
    OpBuilder::InsertionGuard guard(b_);
    b_.setInsertionPoint(ifOp.thenBlock()->getTerminator());
    body();
  }

  /// Two partials of a reduction, combined as optrt::combinePartials does:
  /// sum/mean/norm add, max keeps the larger and lets NaN win.
  Value combine(optrt::ReductionKind kind, Value acc, Value partial) {
    if (kind != optrt::ReductionKind::Max)
      return b_.create<arith::AddFOp>(loc_, acc, partial);
    Value isNan = b_.create<arith::CmpFOp>(loc_, arith::CmpFPredicate::UNO, partial, partial);
    Value larger = b_.create<arith::CmpFOp>(loc_, arith::CmpFPredicate::OGT, partial, acc);
    Value take = b_.create<arith::OrIOp>(loc_, isNan, larger);
    return b_.create<arith::SelectOp>(loc_, take, partial, acc);
  }

  /// {hypers of the tensor's group, step} for per-tensor kernels.
  std::pair<Value, Value> hypersAndStep(Value tensors, Value hypers, Value counter, Value t) {
    Value group = load(i64(), gep(tensors, mul(t, constI64(kTensorRecord)), i64()));
    Value groupHypers = gep(hypers, mul(group, constI64(static_cast<int64_t>(sig_.hypers.size()))), f64());
    Value step = b_.create<arith::AddFOp>(loc_, load(f64(), counter), constF64(1.0));
    return {groupHypers, step};
  }

  // --- kernels --------------------------------------------------------------
  void buildUniformsKernel(int phase) {
    OpBuilder::InsertionGuard guard(b_);
    auto kernel = startKernel(facts_.uniformsEntries[phase],
                              {i64(), ptr(), ptr(), ptr(), ptr(), ptr(), ptr()});
    Value numTensors = kernel.getArgument(0), tensors = kernel.getArgument(1),
          hypers = kernel.getArgument(2), counter = kernel.getArgument(3),
          scalars = kernel.getArgument(4), reductions = kernel.getArgument(5),
          uniforms = kernel.getArgument(6);
    Value t = globalThread();
    ifThen(b_.create<arith::CmpIOp>(loc_, arith::CmpIPredicate::slt, t, numTensors), [&] {
      auto [groupHypers, step] = hypersAndStep(tensors, hypers, counter, t);
      b_.create<func::CallOp>(
          loc_, uniformsFunctionName(sig_.rule, phase), TypeRange{},
          ValueRange{groupHypers, step, gep(scalars, mul(t, constI64(numScalars_)), f64()),
                     gep(reductions, mul(t, constI64(numReductions_)), f64()),
                     gep(uniforms, mul(t, constI64(facts_.uniformStride)), f32())});
    });
    b_.create<gpu::ReturnOp>(loc_);
  }

  /// Combines every thread's `value` in a fixed tree in shared memory and
  /// calls `use` with the block's total on thread 0. All threads of the
  /// block must reach it (it has barriers).
  template <typename Use> void blockReduce(optrt::ReductionKind kind, Value value, Value tid, Use use) {
    Value shared = b_.create<LLVM::AddressOfOp>(
        loc_, LLVM::LLVMPointerType::get(b_.getContext(), kSharedAddressSpace), kSharedName);
    Value mine = b_.create<LLVM::GEPOp>(loc_, shared.getType(), f64(), shared, ValueRange{tid});
    store(value, mine);
    b_.create<gpu::BarrierOp>(loc_);
    for (int64_t half = kCudaBlockSize / 2; half > 0; half /= 2) {
      ifThen(b_.create<arith::CmpIOp>(loc_, arith::CmpIPredicate::slt, tid, constI64(half)), [&] {
        Value other =
            b_.create<LLVM::GEPOp>(loc_, shared.getType(), f64(), shared, ValueRange{add(tid, constI64(half))});
        store(combine(kind, load(f64(), mine), load(f64(), other)), mine);
      });
      b_.create<gpu::BarrierOp>(loc_);
    }
    ifThen(b_.create<arith::CmpIOp>(loc_, arith::CmpIPredicate::eq, tid, constI64(0)),
           [&] { use(load(f64(), shared)); });
    // The next use overwrites the scratch.
    b_.create<gpu::BarrierOp>(loc_);
  }

  /// Reads and writes of the element code: buffer bases in the global
  /// address space (so PTX uses ld.global/st.global), 16-byte aligned
  /// accesses at width 4; uniform slots loaded once per chunk.
  codegen::ElementAccess access(Value index, int64_t width) {
    codegen::ElementAccess access;
    unsigned alignment = width == 4 ? 16 : 4;
    auto address = [=, this](OpBuilder &builder, Location loc, int buffer) -> Value {
      Value base = bufferBase_.at(buffer);
      return builder.create<LLVM::GEPOp>(loc, base.getType(), f32(), base, ValueRange{index});
    };
    access.load = [=, this](OpBuilder &builder, Location loc, int buffer) -> Value {
      auto load = builder.create<LLVM::LoadOp>(loc, codegen::laneType(f32(), width), address(builder, loc, buffer),
                                               alignment);
      // No kernel writes the gradient: the read-only data path may serve it.
      if (buffer == codegen::BufferLayout::kGrad)
        load.setInvariant(true);
      return load;
    };
    access.store = [=, this](OpBuilder &builder, Location loc, int buffer, Value value) {
      builder.create<LLVM::StoreOp>(loc, value, address(builder, loc, buffer), alignment);
    };
    access.uniform = [this](OpBuilder &, Location loc, int slot, Type type) {
      return chunkUniform(slot, type, loc);
    };
    return access;
  }

  Value chunkUniform(int slot, Type type, Location loc) {
    auto it = uniformLoads_.find(slot);
    if (it != uniformLoads_.end())
      return it->second;
    OpBuilder::InsertionGuard guard(b_);
    b_.setInsertionPoint(prologueEnd_);
    auto value = b_.create<LLVM::LoadOp>(loc, f32(), gep(tensorUniforms_, slot, f32()), 4);
    // Written by the uniforms kernel before this one starts: read-only here.
    value.setInvariant(true);
    Value result = codegen::uniformAsType(b_, loc, value, type);
    uniformLoads_[slot] = result;
    return result;
  }

  /// for i in [lower, upper) step `stride`: the element code at `width`
  /// lanes at i; returns the reduction accumulators.
  FailureOr<std::vector<Value>> elementLoop(int phase, Value lower, Value upper, int64_t stride, int64_t width,
                                            const std::vector<optrt::ReductionKind> &kinds,
                                            std::vector<Value> initial) {
    return codegen::emitElementLoop(b_, loc_, phases_[phase], *buffers_, lower, upper, constI64(stride), width,
                                    kinds, initial, [&](Value index) { return access(index, width); });
  }

  LogicalResult buildElementKernel(int phase) {
    OpBuilder::InsertionGuard guard(b_);
    auto kernel = startKernel(facts_.elementEntries[phase], {ptr(), i64(), ptr(), ptr(), ptr()});
    Value chunks = kernel.getArgument(0), numChunks = kernel.getArgument(1),
          buffers = kernel.getArgument(2), uniforms = kernel.getArgument(3),
          partials = kernel.getArgument(4);
    std::vector<optrt::ReductionKind> kinds = codegen::phaseReductionKinds(phases_[phase]);
    int64_t count = static_cast<int64_t>(kinds.size());
    Value tid = threadId();
    // Every thread of a block runs the same chunk iterations, so the
    // barriers of the block reduction below are reached by all of them.
    auto chunkLoop = b_.create<scf::ForOp>(loc_, blockId(), numChunks, gridDim());
    b_.setInsertionPoint(chunkLoop.getBody()->getTerminator());
    Value c = chunkLoop.getInductionVar();
    Value record = gep(chunks, mul(c, constI64(kChunkRecord)), i64());
    Value tensor = load(i64(), record);
    Value begin = load(i64(), gep(record, 1, i64()));
    Value end = load(i64(), gep(record, 2, i64()));
    Value table = gep(buffers, mul(tensor, constI64(facts_.buffersPerTensor)), ptr());
    auto globalPtr = LLVM::LLVMPointerType::get(b_.getContext(), kGlobalAddressSpace);
    bufferBase_.clear();
    uniformLoads_.clear();
    Value misalignment = constI64(0);
    for (int buffer = 0; buffer < facts_.buffersPerTensor; ++buffer) {
      auto base = b_.create<LLVM::LoadOp>(loc_, ptr(), gep(table, buffer, ptr()), 8);
      base.setInvariant(true);
      Value bits = b_.create<LLVM::PtrToIntOp>(loc_, i64(), base);
      misalignment = b_.create<arith::OrIOp>(loc_, misalignment, bits);
      bufferBase_[buffer] = b_.create<LLVM::AddrSpaceCastOp>(loc_, globalPtr, base);
    }
    tensorUniforms_ = gep(uniforms, mul(tensor, constI64(facts_.uniformStride)), f32());
    // Uniform loads go before this marker, ahead of the element loops.
    prologueEnd_ = constI64(kVectorLanes).getDefiningOp();

    // Elements [vbegin, vend) go 4 at a time when every buffer of the tensor
    // is 16-byte aligned (element 4k is then too); the rest one at a time.
    Value aligned = b_.create<arith::CmpIOp>(
        loc_, arith::CmpIPredicate::eq,
        b_.create<arith::AndIOp>(loc_, misalignment, constI64(kVectorLanes * sizeof(float) - 1)), constI64(0));
    Value mask = constI64(-kVectorLanes);
    Value roundedUp = b_.create<arith::AndIOp>(loc_, add(begin, constI64(kVectorLanes - 1)), mask);
    Value vbegin = b_.create<arith::MinSIOp>(loc_, roundedUp, end);
    Value vend = b_.create<arith::MaxSIOp>(loc_, vbegin, b_.create<arith::AndIOp>(loc_, end, mask));
    vbegin = b_.create<arith::SelectOp>(loc_, aligned, vbegin, end);
    vend = b_.create<arith::SelectOp>(loc_, aligned, vend, end);

    std::vector<Value> scalarInit, vectorInit;
    for (optrt::ReductionKind kind : kinds) {
      scalarInit.push_back(codegen::reductionIdentity(b_, loc_, kind, 1));
      vectorInit.push_back(codegen::reductionIdentity(b_, loc_, kind, kVectorLanes));
    }
    FailureOr<std::vector<Value>> head =
        elementLoop(phase, add(begin, tid), vbegin, kCudaBlockSize, 1, kinds, scalarInit);
    if (failed(head))
      return failure();
    FailureOr<std::vector<Value>> body =
        elementLoop(phase, add(vbegin, mul(tid, constI64(kVectorLanes))), vend, kCudaBlockSize * kVectorLanes,
                    kVectorLanes, kinds, vectorInit);
    if (failed(body))
      return failure();
    std::vector<Value> afterBody;
    for (int64_t r = 0; r < count; ++r) {
      bool max = kinds[r] == optrt::ReductionKind::Max;
      Value folded = b_.create<vector::ReductionOp>(
          loc_, max ? vector::CombiningKind::MAXIMUMF : vector::CombiningKind::ADD, (*body)[r]);
      afterBody.push_back(max ? b_.create<arith::MaximumFOp>(loc_, (*head)[r], folded).getResult()
                              : b_.create<arith::AddFOp>(loc_, (*head)[r], folded).getResult());
    }
    FailureOr<std::vector<Value>> tail =
        elementLoop(phase, add(vend, tid), end, kCudaBlockSize, 1, kinds, afterBody);
    if (failed(tail))
      return failure();

    for (int64_t r = 0; r < count; ++r)
      blockReduce(kinds[r], (*tail)[r], tid, [&](Value total) {
        store(total, gep(partials, add(mul(c, constI64(facts_.partialStride)), constI64(r)), f64()));
      });
    b_.setInsertionPointAfter(chunkLoop);
    b_.create<gpu::ReturnOp>(loc_);
    return success();
  }

  /// A block per tensor (grid-stride over tensors): its threads combine the
  /// tensor's chunk partials, thread j chunks j, j + 256, ... in order, then
  /// the block's tree; thread 0 finishes (mean divides by the element count,
  /// norm takes the square root). A thread per tensor would walk a large
  /// tensor's thousands of chunks alone, one load latency each.
  void buildFinishKernel(int phase) {
    OpBuilder::InsertionGuard guard(b_);
    auto kernel = startKernel(facts_.finishEntries[phase], {i64(), ptr(), ptr(), ptr()});
    Value numTensors = kernel.getArgument(0), tensors = kernel.getArgument(1),
          partials = kernel.getArgument(2), reductions = kernel.getArgument(3);
    Value tid = threadId();
    auto tensorLoop = b_.create<scf::ForOp>(loc_, blockId(), numTensors, gridDim());
    b_.setInsertionPoint(tensorLoop.getBody()->getTerminator());
    Value t = tensorLoop.getInductionVar();
    Value record = gep(tensors, mul(t, constI64(kTensorRecord)), i64());
    Value firstChunk = load(i64(), gep(record, 1, i64()));
    Value endChunk = load(i64(), gep(record, 2, i64()));
    Value size = load(i64(), gep(record, 3, i64()));
    Value pStride = constI64(facts_.partialStride);
    int64_t first = reductionBegin(phase), last = reductionEnd(phase);
    for (int64_t r = first; r < last; ++r) {
      optrt::ReductionKind kind = sig_.reductions[r].kind;
      Value local = constI64(r - first);
      auto loop = b_.create<scf::ForOp>(loc_, add(firstChunk, tid), endChunk, constI64(kCudaBlockSize),
                                        ValueRange{codegen::reductionIdentity(b_, loc_, kind, 1)});
      {
        OpBuilder::InsertionGuard inner(b_);
        b_.setInsertionPointToEnd(loop.getBody());
        Value partial = load(f64(), gep(partials, add(mul(loop.getInductionVar(), pStride), local), f64()));
        b_.create<scf::YieldOp>(loc_, combine(kind, loop.getRegionIterArgs()[0], partial));
      }
      blockReduce(kind, loop.getResult(0), tid, [&](Value total) {
        if (kind == optrt::ReductionKind::Mean)
          total = b_.create<arith::DivFOp>(loc_, total, b_.create<arith::SIToFPOp>(loc_, f64(), size));
        else if (kind == optrt::ReductionKind::Norm)
          total = b_.create<math::SqrtOp>(loc_, total);
        store(total, gep(reductions, add(mul(t, constI64(numReductions_)), constI64(r)), f64()));
      });
    }
    b_.setInsertionPointAfter(tensorLoop);
    b_.create<gpu::ReturnOp>(loc_);
  }

  void buildScalarsKernel() {
    OpBuilder::InsertionGuard guard(b_);
    auto kernel = startKernel(facts_.scalarsEntry, {i64(), ptr(), ptr(), ptr(), ptr(), ptr()});
    Value numTensors = kernel.getArgument(0), tensors = kernel.getArgument(1),
          hypers = kernel.getArgument(2), counter = kernel.getArgument(3),
          scalars = kernel.getArgument(4), reductions = kernel.getArgument(5);
    Value next = b_.create<LLVM::AllocaOp>(loc_, ptr(), f64(), constI64(numScalars_), 8);
    Value t = globalThread();
    ifThen(b_.create<arith::CmpIOp>(loc_, arith::CmpIPredicate::slt, t, numTensors), [&] {
      auto [groupHypers, step] = hypersAndStep(tensors, hypers, counter, t);
      Value mine = gep(scalars, mul(t, constI64(numScalars_)), f64());
      b_.create<func::CallOp>(loc_, scalarUpdateFunctionName(sig_.rule), TypeRange{},
                              ValueRange{groupHypers, step, mine,
                                         gep(reductions, mul(t, constI64(numReductions_)), f64()), next});
      // In place: the update read every start-of-step value first, and no
      // other thread touches this tensor's scalars.
      for (int64_t j = 0; j < numScalars_; ++j)
        store(load(f64(), gep(next, j, f64())), gep(mine, j, f64()));
    });
    b_.create<gpu::ReturnOp>(loc_);
  }

  void buildAdvanceKernel() {
    OpBuilder::InsertionGuard guard(b_);
    auto kernel = startKernel(facts_.advanceEntry, {ptr()});
    Value counter = kernel.getArgument(0);
    ifThen(b_.create<arith::CmpIOp>(loc_, arith::CmpIPredicate::eq, globalThread(), constI64(0)), [&] {
      store(b_.create<arith::AddFOp>(loc_, load(f64(), counter), constF64(1.0)), counter);
    });
    b_.create<gpu::ReturnOp>(loc_);
  }

  ModuleOp optModule_;
  ModuleOp host_;
  const KernelSignature &sig_;
  optrt::CudaKernels &facts_;
  OpBuilder b_;
  Location loc_;
  int64_t numElementwise_ = 0;
  int64_t numScalars_ = 0;
  int64_t numReductions_ = 0;
  std::optional<codegen::BufferLayout> buffers_;
  std::vector<opt::PhaseOp> phases_;
  // Per element kernel being built:
  std::map<int, Value> bufferBase_;
  std::map<int, Value> uniformLoads_;
  Value tensorUniforms_;
  Operation *prologueEnd_ = nullptr;
};

} // namespace

OwningOpRef<ModuleOp> buildCudaKernels(ModuleOp optModule, ModuleOp hostKernels,
                                       const KernelSignature &signature, optrt::CudaKernels &facts) {
  MLIRContext *context = hostKernels.getContext();
  context->loadDialect<gpu::GPUDialect, NVVM::NVVMDialect, func::FuncDialect, scf::SCFDialect,
                       LLVM::LLVMDialect, arith::ArithDialect, math::MathDialect,
                       vector::VectorDialect>();
  return DeviceKernelBuilder(optModule, hostKernels, signature, facts).run();
}

} // namespace optdsl
