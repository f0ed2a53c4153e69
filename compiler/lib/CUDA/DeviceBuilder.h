// The small builders every CUDA kernel of the device ABI
// (runtime/include/optrt/CudaKernels.h) is written with: constants, LLVM
// pointer arithmetic with explicit alignment, thread and block indices, a
// kernel's entry with its skipped-step guard, and the block's fixed-tree
// reduction. Shared by the rule's kernels (DeviceKernels.cpp) and the
// training step's kernels (StepKernels.cpp).
#pragma once

#include "optdsl/CUDAKernelGen.h"
#include "optrt/RuleKernels.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/IR/Builders.h"

#include <string>

namespace optdsl::cuda {

inline constexpr int64_t kTensorRecord = 4; // {group, firstChunk, endChunk, numElements}
inline constexpr int64_t kChunkRecord = 3;  // {tensor, begin, end}
inline constexpr unsigned kGlobalAddressSpace = 1;
inline constexpr unsigned kSharedAddressSpace = 3;
/// The f64[blockSize] shared scratch of blockReduce, defined once per module.
inline constexpr const char *kSharedName = "optdsl_block_scratch";
/// The counter segment (CudaKernels.h): {steps: f64, seed: u32, skip: u32},
/// then each group's steps. The skip flag is the u32 at index 3.
inline constexpr int64_t kSkipFlagWord = 3;
inline constexpr int64_t kGroupCounters = 2; // f64 index of group 0's steps

class DeviceBuilder {
public:
  DeviceBuilder(mlir::MLIRContext *context, mlir::Location loc) : b_(context), loc_(loc) {}

protected:
  mlir::Type f32() { return b_.getF32Type(); }
  mlir::Type f64() { return b_.getF64Type(); }
  mlir::Type i32() { return b_.getI32Type(); }
  mlir::Type i64() { return b_.getI64Type(); }
  mlir::Type ptr() { return mlir::LLVM::LLVMPointerType::get(b_.getContext()); }

  mlir::Value constI64(int64_t v) { return b_.create<mlir::arith::ConstantOp>(loc_, b_.getI64IntegerAttr(v)); }
  mlir::Value constI32(int32_t v) { return b_.create<mlir::arith::ConstantOp>(loc_, b_.getI32IntegerAttr(v)); }
  mlir::Value constF64(double v) { return b_.create<mlir::arith::ConstantOp>(loc_, b_.getF64FloatAttr(v)); }
  mlir::Value constF32(float v) { return b_.create<mlir::arith::ConstantOp>(loc_, b_.getF32FloatAttr(v)); }
  mlir::Value gep(mlir::Value base, mlir::Value index, mlir::Type element) {
    return b_.create<mlir::LLVM::GEPOp>(loc_, ptr(), element, base, mlir::ValueRange{index});
  }
  mlir::Value gep(mlir::Value base, int64_t index, mlir::Type element) { return gep(base, constI64(index), element); }
  // Alignment spelled out: without it, LLVM's default data layout (which the
  // gpu.module is translated with) aligns i64 to 4 and splits the access.
  static unsigned alignOf(mlir::Type type) { return type.isF32() || type.isInteger(32) ? 4 : 8; }
  mlir::Value load(mlir::Type type, mlir::Value address) {
    return b_.create<mlir::LLVM::LoadOp>(loc_, type, address, alignOf(type));
  }
  void store(mlir::Value value, mlir::Value address) {
    b_.create<mlir::LLVM::StoreOp>(loc_, value, address, alignOf(value.getType()));
  }
  mlir::Value mul(mlir::Value a, mlir::Value c) { return b_.create<mlir::arith::MulIOp>(loc_, a, c); }
  mlir::Value add(mlir::Value a, mlir::Value c) { return b_.create<mlir::arith::AddIOp>(loc_, a, c); }
  mlir::Value toI64(mlir::Value index) { return b_.create<mlir::arith::IndexCastOp>(loc_, i64(), index); }
  mlir::Value threadId() { return toI64(b_.create<mlir::gpu::ThreadIdOp>(loc_, mlir::gpu::Dimension::x)); }
  mlir::Value blockId() { return toI64(b_.create<mlir::gpu::BlockIdOp>(loc_, mlir::gpu::Dimension::x)); }
  mlir::Value gridDim() { return toI64(b_.create<mlir::gpu::GridDimOp>(loc_, mlir::gpu::Dimension::x)); }
  mlir::Value globalThread() { return add(mul(blockId(), constI64(kCudaBlockSize)), threadId()); }
  mlir::Value isThread(mlir::Value tid, int64_t which) {
    return b_.create<mlir::arith::CmpIOp>(loc_, mlir::arith::CmpIPredicate::eq, tid, constI64(which));
  }

  /// A kernel of the device ABI, its gpu.return already in place: the
  /// insertion point is before it, in the entry block.
  mlir::gpu::GPUFuncOp startKernel(const std::string &name, mlir::TypeRange inputs) {
    auto kernel = b_.create<mlir::gpu::GPUFuncOp>(loc_, name, b_.getFunctionType(inputs, {}));
    kernel->setAttr(mlir::gpu::GPUDialect::getKernelFuncAttrName(), b_.getUnitAttr());
    kernel.setKnownBlockSizeAttr(b_.getDenseI32ArrayAttr({kCudaBlockSize, 1, 1}));
    b_.setInsertionPointToStart(&kernel.getBody().front());
    auto ret = b_.create<mlir::gpu::ReturnOp>(loc_);
    b_.setInsertionPoint(ret);
    return kernel;
  }

  /// The rest of the kernel runs only when the step was not skipped (the
  /// counter segment's skip flag, set by the stepoptions kernel when a
  /// gradient is not finite): the insertion point moves into that branch.
  /// Every thread reads the same flag, so the barriers inside stay uniform.
  void unlessStepSkipped(mlir::Value counter) {
    mlir::Value flag = load(i32(), gep(counter, kSkipFlagWord, i32()));
    mlir::Value run = b_.create<mlir::arith::CmpIOp>(loc_, mlir::arith::CmpIPredicate::eq, flag, constI32(0));
    auto ifOp = b_.create<mlir::scf::IfOp>(loc_, run, /*withElseRegion=*/false);
    b_.setInsertionPoint(ifOp.thenBlock()->getTerminator());
  }

  /// `count` elements of `element` on the thread's stack, allocated in the
  /// kernel's entry block (NVPTX takes no dynamic stack allocation, and SROA
  /// promotes only entry-block allocas to registers).
  mlir::Value entryAlloca(mlir::Type element, int64_t count) {
    mlir::OpBuilder::InsertionGuard guard(b_);
    b_.setInsertionPointToStart(&b_.getBlock()->getParent()->getParentOfType<mlir::gpu::GPUFuncOp>().getBody().front());
    return b_.create<mlir::LLVM::AllocaOp>(loc_, ptr(), element, constI64(count), alignOf(element));
  }

  /// One chunk of the chunk table as a block sees it.
  struct ChunkInLoop {
    mlir::Value c, tensor, begin, end;
    mlir::Value bufferRow; ///< the tensor's row of the buffers table
  };
  /// A grid-stride loop over the chunk table, a block per chunk; the
  /// insertion point moves into its body. Every thread of a block runs the
  /// same chunks, so barriers inside are reached by all of them.
  ChunkInLoop chunkLoop(mlir::Value chunks, mlir::Value numChunks, mlir::Value buffers, int64_t buffersPerTensor) {
    auto loop = b_.create<mlir::scf::ForOp>(loc_, blockId(), numChunks, gridDim());
    b_.setInsertionPoint(loop.getBody()->getTerminator());
    ChunkInLoop chunk;
    chunk.c = loop.getInductionVar();
    mlir::Value record = gep(chunks, mul(chunk.c, constI64(kChunkRecord)), i64());
    chunk.tensor = load(i64(), record);
    chunk.begin = load(i64(), gep(record, 1, i64()));
    chunk.end = load(i64(), gep(record, 2, i64()));
    chunk.bufferRow = gep(buffers, mul(chunk.tensor, constI64(buffersPerTensor)), ptr());
    return chunk;
  }

  /// Runs `body` in the thread only if `condition` holds.
  template <typename Body> void ifThen(mlir::Value condition, Body body) {
    auto ifOp = b_.create<mlir::scf::IfOp>(loc_, condition, /*withElseRegion=*/false);
    mlir::OpBuilder::InsertionGuard guard(b_);
    b_.setInsertionPoint(ifOp.thenBlock()->getTerminator());
    body();
  }

  /// Two partials of a reduction, combined as optrt::combinePartials does:
  /// sum/mean/norm add, max keeps the larger and lets NaN win.
  mlir::Value combine(optrt::ReductionKind kind, mlir::Value acc, mlir::Value partial) {
    using namespace mlir;
    if (kind != optrt::ReductionKind::Max)
      return b_.create<arith::AddFOp>(loc_, acc, partial);
    Value isNan = b_.create<arith::CmpFOp>(loc_, arith::CmpFPredicate::UNO, partial, partial);
    Value larger = b_.create<arith::CmpFOp>(loc_, arith::CmpFPredicate::OGT, partial, acc);
    Value take = b_.create<arith::OrIOp>(loc_, isNan, larger);
    return b_.create<arith::SelectOp>(loc_, take, partial, acc);
  }

  /// Combines every thread's `value` in a fixed tree in shared memory and
  /// calls `use` with the block's total on thread 0. All threads of the
  /// block must reach it (it has barriers).
  template <typename Use> void blockReduce(optrt::ReductionKind kind, mlir::Value value, mlir::Value tid, Use use) {
    using namespace mlir;
    Value shared =
        b_.create<LLVM::AddressOfOp>(loc_, LLVM::LLVMPointerType::get(b_.getContext(), kSharedAddressSpace), kSharedName);
    Value mine = b_.create<LLVM::GEPOp>(loc_, shared.getType(), f64(), shared, ValueRange{tid});
    store(value, mine);
    b_.create<gpu::BarrierOp>(loc_);
    for (int64_t half = kCudaBlockSize / 2; half > 0; half /= 2) {
      ifThen(b_.create<arith::CmpIOp>(loc_, arith::CmpIPredicate::slt, tid, constI64(half)), [&] {
        Value other = b_.create<LLVM::GEPOp>(loc_, shared.getType(), f64(), shared, ValueRange{add(tid, constI64(half))});
        store(combine(kind, load(f64(), mine), load(f64(), other)), mine);
      });
      b_.create<gpu::BarrierOp>(loc_);
    }
    ifThen(isThread(tid, 0), [&] { use(load(f64(), shared)); });
    // The next use overwrites the scratch.
    b_.create<gpu::BarrierOp>(loc_);
  }

  mlir::OpBuilder b_;
  mlir::Location loc_;
};

} // namespace optdsl::cuda
