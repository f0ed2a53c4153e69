// Builds the gpu.module of a rule: the host kernels' per-phase functions
// become device functions, and gpu.func kernels implement the device ABI of
// runtime/include/optrt/CudaKernels.h around them. Everything a step needs
// (the step number, hypers, scalar states, reductions) is read from device
// memory, so a step is a fixed sequence of launches with fixed arguments: it
// can be captured in a CUDA graph and replayed.
//
// Element kernels: a block per chunk (grid-stride over the chunk table), its
// threads stride over the chunk's elements, so a warp's accesses are
// contiguous. Each element runs the phase's element function on [i, i + 1).
// This reuses KernelGen's element code unchanged until the backend-neutral
// per-element emitter exists; then the body is emitted at width 4 with
// 16-byte accesses and a scalar remainder.
//
// Reductions: each thread accumulates in f64 over its elements in order, the
// block combines the threads' values in a fixed tree in shared memory, and
// one partial per chunk lands in the partials table; finish[p] then combines
// a tensor's chunks in chunk order, as the CPU runtime does (Reduction.h).
// Launch shape and block size are fixed, so the result is bitwise
// reproducible from run to run.
#include "optdsl/CUDAKernelGen.h"

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

namespace optdsl {

using namespace mlir;

namespace {

constexpr int64_t kTensorRecord = 4; // {group, firstChunk, endChunk, numElements}
constexpr int64_t kChunkRecord = 3;  // {tensor, begin, end}
constexpr unsigned kSharedAddressSpace = 3;
constexpr const char *kSharedName = "optdsl_block_scratch";

std::string entryName(const std::string &rule, const std::string &what) {
  return "optdsl_" + rule + "_cuda_" + what;
}

class DeviceKernelBuilder {
public:
  DeviceKernelBuilder(ModuleOp host, const KernelSignature &signature, optrt::CudaKernels &facts)
      : host_(host), sig_(signature), facts_(facts), b_(host.getContext()), loc_(host.getLoc()) {}

  OwningOpRef<ModuleOp> run() {
    computeFacts();
    OwningOpRef<ModuleOp> module = ModuleOp::create(loc_);
    (*module)->setAttr(gpu::GPUDialect::getContainerModuleAttrName(), b_.getUnitAttr());
    b_.setInsertionPointToEnd(module->getBody());
    auto gpuModule = b_.create<gpu::GPUModuleOp>(loc_, "optdsl_" + sig_.rule + "_cuda");
    b_.setInsertionPointToStart(gpuModule.getBody());
    // The host module's functions, except init (the runtime fills state
    // buffers with memset from the host init's values).
    for (auto function : host_.getOps<func::FuncOp>()) {
      if (function.getSymName() == initFunctionName(sig_.rule))
        continue;
      auto clone = cast<func::FuncOp>(b_.clone(*function));
      clone.setPrivate();
      if (clone.getSymName().starts_with("optdsl_" + sig_.rule + "_kernel"))
        markPrologueInvariant(clone);
    }
    b_.create<LLVM::GlobalOp>(loc_, LLVM::LLVMArrayType::get(f64(), kCudaBlockSize),
                              /*isConstant=*/false, LLVM::Linkage::Internal, kSharedName,
                              Attribute(), /*alignment=*/8, kSharedAddressSpace);
    for (int phase = 0; phase < sig_.numPhases; ++phase) {
      buildUniformsKernel(phase);
      buildElementKernel(phase);
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

  /// The element function's prologue loads the tensor's buffer bases and
  /// uniform values (its arguments 0 and 1), which no kernel writes while it
  /// runs. Marked invariant, LLVM hoists them out of the element loop once
  /// the function is inlined, instead of reloading them for every element.
  static void markPrologueInvariant(func::FuncOp function) {
    Block &entry = function.getBody().front();
    for (Operation &op : entry) {
      auto load = dyn_cast<LLVM::LoadOp>(op);
      if (!load)
        continue;
      auto gep = load.getAddr().getDefiningOp<LLVM::GEPOp>();
      Value base = gep ? gep.getBase() : load.getAddr();
      if (base == entry.getArgument(0) || base == entry.getArgument(1))
        load.setInvariant(true);
    }
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

  Value identity(optrt::ReductionKind kind) {
    return constF64(kind == optrt::ReductionKind::Max ? -std::numeric_limits<double>::infinity()
                                                      : 0.0);
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

  void buildElementKernel(int phase) {
    OpBuilder::InsertionGuard guard(b_);
    auto kernel = startKernel(facts_.elementEntries[phase], {ptr(), i64(), ptr(), ptr(), ptr()});
    Value chunks = kernel.getArgument(0), numChunks = kernel.getArgument(1),
          buffers = kernel.getArgument(2), uniforms = kernel.getArgument(3),
          partials = kernel.getArgument(4);
    int64_t first = reductionBegin(phase), count = reductionEnd(phase) - first;
    std::vector<optrt::ReductionKind> kinds;
    for (int64_t r = 0; r < count; ++r)
      kinds.push_back(sig_.reductions[first + r].kind);
    // The element function's partials, one element's worth; promoted to
    // registers once the call is inlined.
    Value scratch = b_.create<LLVM::AllocaOp>(loc_, ptr(), f64(), constI64(std::max<int64_t>(1, count)), 8);
    Value tid = threadId();
    Value stride = constI64(kCudaBlockSize);
    // Every thread of a block runs the same chunk iterations, so the
    // barriers of the block reduction below are reached by all of them.
    auto chunkLoop = b_.create<scf::ForOp>(loc_, blockId(), numChunks, gridDim());
    b_.setInsertionPoint(chunkLoop.getBody()->getTerminator());
    Value c = chunkLoop.getInductionVar();
    Value record = gep(chunks, mul(c, constI64(kChunkRecord)), i64());
    Value tensor = load(i64(), record);
    Value begin = load(i64(), gep(record, 1, i64()));
    Value end = load(i64(), gep(record, 2, i64()));
    Value tensorBuffers = gep(buffers, mul(tensor, constI64(facts_.buffersPerTensor)), ptr());
    Value tensorUniforms = gep(uniforms, mul(tensor, constI64(facts_.uniformStride)), f32());
    std::vector<Value> initial;
    for (optrt::ReductionKind kind : kinds)
      initial.push_back(identity(kind));
    auto elementLoop = b_.create<scf::ForOp>(loc_, add(begin, tid), end, stride, initial);
    {
      OpBuilder::InsertionGuard inner(b_);
      Block *body = elementLoop.getBody();
      if (body->mightHaveTerminator())
        b_.setInsertionPoint(body->getTerminator());
      else
        b_.setInsertionPointToEnd(body);
      Value i = elementLoop.getInductionVar();
      b_.create<func::CallOp>(loc_, kernelFunctionName(sig_.rule, phase), TypeRange{},
                              ValueRange{tensorBuffers, tensorUniforms, scratch, i, add(i, constI64(1))});
      std::vector<Value> next;
      for (int64_t r = 0; r < count; ++r)
        next.push_back(combine(kinds[r], elementLoop.getRegionIterArgs()[r], load(f64(), gep(scratch, r, f64()))));
      if (count > 0) {
        if (body->mightHaveTerminator())
          body->getTerminator()->erase();
        b_.create<scf::YieldOp>(loc_, next);
      }
    }
    if (count > 0) {
      Value shared = b_.create<LLVM::AddressOfOp>(
          loc_, LLVM::LLVMPointerType::get(b_.getContext(), kSharedAddressSpace), kSharedName);
      Value mine = b_.create<LLVM::GEPOp>(loc_, shared.getType(), f64(), shared, ValueRange{tid});
      for (int64_t r = 0; r < count; ++r) {
        store(elementLoop.getResult(r), mine);
        b_.create<gpu::BarrierOp>(loc_);
        for (int64_t half = kCudaBlockSize / 2; half > 0; half /= 2) {
          ifThen(b_.create<arith::CmpIOp>(loc_, arith::CmpIPredicate::slt, tid, constI64(half)), [&] {
            Value other = b_.create<LLVM::GEPOp>(loc_, shared.getType(), f64(), shared,
                                                 ValueRange{add(tid, constI64(half))});
            store(combine(kinds[r], load(f64(), mine), load(f64(), other)), mine);
          });
          b_.create<gpu::BarrierOp>(loc_);
        }
        ifThen(b_.create<arith::CmpIOp>(loc_, arith::CmpIPredicate::eq, tid, constI64(0)), [&] {
          Value slot = gep(partials, add(mul(c, constI64(facts_.partialStride)), constI64(r)), f64());
          store(load(f64(), shared), slot);
        });
        // The next reduction (or chunk) overwrites the scratch.
        b_.create<gpu::BarrierOp>(loc_);
      }
    }
    b_.setInsertionPointAfter(chunkLoop);
    b_.create<gpu::ReturnOp>(loc_);
  }

  void buildFinishKernel(int phase) {
    OpBuilder::InsertionGuard guard(b_);
    auto kernel = startKernel(facts_.finishEntries[phase], {i64(), ptr(), ptr(), ptr()});
    Value numTensors = kernel.getArgument(0), tensors = kernel.getArgument(1),
          partials = kernel.getArgument(2), reductions = kernel.getArgument(3);
    Value t = globalThread();
    ifThen(b_.create<arith::CmpIOp>(loc_, arith::CmpIPredicate::slt, t, numTensors), [&] {
      Value record = gep(tensors, mul(t, constI64(kTensorRecord)), i64());
      Value firstChunk = load(i64(), gep(record, 1, i64()));
      Value endChunk = load(i64(), gep(record, 2, i64()));
      Value size = load(i64(), gep(record, 3, i64()));
      Value pStride = constI64(facts_.partialStride);
      int64_t first = reductionBegin(phase), last = reductionEnd(phase);
      for (int64_t r = first; r < last; ++r) {
        optrt::ReductionKind kind = sig_.reductions[r].kind;
        Value local = constI64(r - first);
        Value acc = load(f64(), gep(partials, add(mul(firstChunk, pStride), local), f64()));
        // Chunk order, as the CPU runtime combines.
        auto loop = b_.create<scf::ForOp>(loc_, add(firstChunk, constI64(1)), endChunk, constI64(1),
                                          ValueRange{acc});
        {
          OpBuilder::InsertionGuard inner(b_);
          Block *body = loop.getBody();
          if (body->mightHaveTerminator())
            body->getTerminator()->erase();
          b_.setInsertionPointToEnd(body);
          Value partial = load(f64(), gep(partials, add(mul(loop.getInductionVar(), pStride), local), f64()));
          b_.create<scf::YieldOp>(loc_, combine(kind, loop.getRegionIterArgs()[0], partial));
        }
        Value result = loop.getResult(0);
        if (kind == optrt::ReductionKind::Mean)
          result = b_.create<arith::DivFOp>(loc_, result, b_.create<arith::SIToFPOp>(loc_, f64(), size));
        else if (kind == optrt::ReductionKind::Norm)
          result = b_.create<math::SqrtOp>(loc_, result);
        store(result, gep(reductions, add(mul(t, constI64(numReductions_)), constI64(r)), f64()));
      }
    });
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

  ModuleOp host_;
  const KernelSignature &sig_;
  optrt::CudaKernels &facts_;
  OpBuilder b_;
  Location loc_;
  int64_t numElementwise_ = 0;
  int64_t numScalars_ = 0;
  int64_t numReductions_ = 0;
};

} // namespace

OwningOpRef<ModuleOp> buildCudaKernels(ModuleOp hostKernels, const KernelSignature &signature,
                                       optrt::CudaKernels &facts) {
  MLIRContext *context = hostKernels.getContext();
  context->loadDialect<gpu::GPUDialect, NVVM::NVVMDialect, func::FuncDialect, scf::SCFDialect,
                       LLVM::LLVMDialect, arith::ArithDialect, math::MathDialect,
                       vector::VectorDialect>();
  return DeviceKernelBuilder(hostKernels, signature, facts).run();
}

} // namespace optdsl
