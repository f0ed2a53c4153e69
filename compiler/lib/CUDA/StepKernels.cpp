// gradstats and stepoptions (StepKernels.h; the device ABI in
// runtime/include/optrt/CudaKernels.h).
//
// gradstats is the CPU runtime's gradient read (runtime/lib/step/GradNorm.cpp)
// on the GPU: per chunk the sum of squares of the stored gradient in f64.
// The square of an f32 (bf16, f16) value is exact in f64 and their sum
// cannot overflow, so that one sum is both the norm and the found-inf flag:
// finite exactly when every element is. Threads stride over the chunk, four
// elements at a time where the gradient is aligned for it; the block adds
// its threads' sums in a fixed tree. stepoptions adds the chunks' sums,
// thread j taking chunks j, j + 256, ... in order, then the same tree: the
// same grid every step, so the norm is bitwise reproducible (though not the
// CPU's, which adds in another order).
#include "StepKernels.h"

#include "DeviceBuilder.h"

#include "optdsl/Codegen/ElementLoop.h"
#include "optdsl/Codegen/StorageArith.h"
#include "optrt/CudaKernels.h"

#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"

#include <cstddef>
#include <limits>

namespace optdsl::cuda {

using namespace mlir;

namespace {

constexpr int64_t kLanes = 4;

/// The f64 index of a field of CudaStepRecord (every field used below sits
/// on an 8-byte boundary, or is the f32/i32 pair at `scale`).
constexpr int64_t word(size_t offset) { return static_cast<int64_t>(offset / sizeof(double)); }

class StepKernelBuilder : public DeviceBuilder {
public:
  StepKernelBuilder(OpBuilder &builder, Location loc, const StepKernelSpec &spec)
      : DeviceBuilder(builder.getContext(), loc), spec_(spec) {
    b_.setInsertionPoint(builder.getInsertionBlock(), builder.getInsertionPoint());
  }

  void build() {
    buildGradStats();
    buildStepOptions();
  }

private:
  Value cmpI(arith::CmpIPredicate predicate, Value a, Value c) {
    return b_.create<arith::CmpIOp>(loc_, predicate, a, c);
  }
  Value select(Value condition, Value a, Value c) { return b_.create<arith::SelectOp>(loc_, condition, a, c); }

  /// `width` gradient elements at `index`, as f32 lanes.
  Value loadGrad(Value base, Value index, int64_t width) {
    Type element = spec_.gradDtype == optrt::Dtype::F32 ? f32() : b_.getIntegerType(16);
    Value address = b_.create<LLVM::GEPOp>(loc_, base.getType(), element, base, ValueRange{index});
    unsigned alignment = static_cast<unsigned>(width * element.getIntOrFloatBitWidth() / 8);
    auto raw = b_.create<LLVM::LoadOp>(loc_, codegen::lanesOf(element, width), address, alignment);
    raw.setInvariant(true); // no kernel writes a gradient
    switch (spec_.gradDtype) {
    case optrt::Dtype::BF16:
      return codegen::widenBf16(b_, loc_, raw);
    case optrt::Dtype::F16:
      // Any NaN payload squares to NaN: the cheap conversion is enough.
      return codegen::widenF16(b_, loc_, raw, /*exactNan=*/false);
    default:
      return raw;
    }
  }

  /// sum += g[i]^2 (f64) for i in [lower, upper) step `stride`, `width` lanes.
  Value sumOfSquares(Value base, Value lower, Value upper, int64_t stride, int64_t width, Value initial) {
    auto loop = b_.create<scf::ForOp>(loc_, lower, upper, constI64(stride), ValueRange{initial});
    OpBuilder::InsertionGuard guard(b_);
    b_.setInsertionPointToEnd(loop.getBody());
    Value grad = loadGrad(base, loop.getInductionVar(), width);
    b_.create<scf::YieldOp>(loc_, codegen::accumulateReduction(b_, loc_, optrt::ReductionKind::Norm,
                                                               loop.getRegionIterArgs()[0], grad, width));
    return loop.getResult(0);
  }

  /// gradstats(chunks, C, buffers, stats): a block per chunk, grid-stride.
  void buildGradStats() {
    OpBuilder::InsertionGuard guard(b_);
    auto kernel = startKernel(spec_.gradStatsEntry, {ptr(), i64(), ptr(), ptr()});
    Value chunks = kernel.getArgument(0), numChunks = kernel.getArgument(1), buffers = kernel.getArgument(2),
          stats = kernel.getArgument(3);
    Value tid = threadId();
    auto [c, tensor, begin, end, row] = chunkLoop(chunks, numChunks, buffers, spec_.buffersPerTensor);
    auto pointer = b_.create<LLVM::LoadOp>(loc_, ptr(), gep(row, spec_.gradBuffer, ptr()), 8);
    pointer.setInvariant(true);
    Value base = b_.create<LLVM::AddrSpaceCastOp>(
        loc_, LLVM::LLVMPointerType::get(b_.getContext(), kGlobalAddressSpace), pointer);
    // Four lanes where element 4k is aligned for a 4-lane access (the
    // caller's gradient may start anywhere its dtype allows).
    int64_t vectorBytes = kLanes * (spec_.gradDtype == optrt::Dtype::F32 ? 4 : 2);
    Value bits = b_.create<LLVM::PtrToIntOp>(loc_, i64(), pointer);
    Value aligned =
        cmpI(arith::CmpIPredicate::eq, b_.create<arith::AndIOp>(loc_, bits, constI64(vectorBytes - 1)), constI64(0));
    Value mask = constI64(-kLanes);
    Value vbegin = b_.create<arith::MinSIOp>(
        loc_, b_.create<arith::AndIOp>(loc_, add(begin, constI64(kLanes - 1)), mask), end);
    Value vend = b_.create<arith::MaxSIOp>(loc_, vbegin, b_.create<arith::AndIOp>(loc_, end, mask));
    vbegin = select(aligned, vbegin, end);
    vend = select(aligned, vend, end);
    Value zero = codegen::reductionIdentity(b_, loc_, optrt::ReductionKind::Sum, 1);
    Value head = sumOfSquares(base, add(begin, tid), vbegin, kCudaBlockSize, 1, zero);
    Value body = sumOfSquares(base, add(vbegin, mul(tid, constI64(kLanes))), vend, kCudaBlockSize * kLanes, kLanes,
                              codegen::reductionIdentity(b_, loc_, optrt::ReductionKind::Sum, kLanes));
    Value total = b_.create<arith::AddFOp>(
        loc_, head, b_.create<vector::ReductionOp>(loc_, vector::CombiningKind::ADD, body));
    total = sumOfSquares(base, add(vend, tid), end, kCudaBlockSize, 1, total);
    blockReduce(optrt::ReductionKind::Sum, total, tid, [&](Value sum) { store(sum, gep(stats, c, f64())); });
  }

  Value field(Value step, size_t offset, Type type) {
    return type.isF64() ? gep(step, word(offset), f64()) : gep(step, static_cast<int64_t>(offset / 4), type);
  }

  /// stepoptions(C, stats, step, hypers, G, counter): one block.
  void buildStepOptions() {
    OpBuilder::InsertionGuard guard(b_);
    auto kernel = startKernel(spec_.stepOptionsEntry, {i64(), ptr(), ptr(), ptr(), i64(), ptr()});
    Value numChunks = kernel.getArgument(0), stats = kernel.getArgument(1), step = kernel.getArgument(2),
          hypers = kernel.getArgument(3), numGroups = kernel.getArgument(4), counter = kernel.getArgument(5);
    Value tid = threadId();
    auto loop = b_.create<scf::ForOp>(loc_, tid, numChunks, constI64(kCudaBlockSize),
                                      ValueRange{codegen::reductionIdentity(b_, loc_, optrt::ReductionKind::Sum, 1)});
    {
      OpBuilder::InsertionGuard inner(b_);
      b_.setInsertionPointToEnd(loop.getBody());
      Value partial = load(f64(), gep(stats, loop.getInductionVar(), f64()));
      b_.create<scf::YieldOp>(loc_, ValueRange{b_.create<arith::AddFOp>(loc_, loop.getRegionIterArgs()[0], partial)});
    }
    blockReduce(optrt::ReductionKind::Sum, loop.getResult(0), tid, [&](Value sum) { decide(sum, step, hypers, numGroups, counter); });
  }

  /// Thread 0, with the gradients' sum of squares: what Optimizer::step
  /// decides on the host (runtime/lib/Optimizer.cpp), in the same f64
  /// operations in the same order.
  void decide(Value sum, Value step, Value hypers, Value numGroups, Value counter) {
    using R = optrt::CudaStepRecord;
    auto f = [&](size_t offset) { return load(f64(), field(step, offset, f64())); };
    Value dynamic = b_.create<arith::CmpFOp>(loc_, arith::CmpFPredicate::ONE, f(offsetof(R, dynamic)), constF64(0));
    Value deviceScale = load(f32(), field(step, offsetof(R, scale), f32()));
    Value scale = select(dynamic, b_.create<arith::ExtFOp>(loc_, f64(), deviceScale), f(offsetof(R, lossScale)));
    Value norm = b_.create<arith::DivFOp>(loc_, b_.create<math::SqrtOp>(loc_, sum), scale);
    // The sum is never negative: finite exactly when below +Inf (NaN fails).
    Value finite = b_.create<arith::CmpFOp>(loc_, arith::CmpFPredicate::OLT, sum,
                                            constF64(std::numeric_limits<double>::infinity()));
    Value maxNorm = f(offsetof(R, maxGradNorm));
    Value clips = b_.create<arith::AndIOp>(
        loc_, finite, b_.create<arith::CmpFOp>(loc_, arith::CmpFPredicate::OGT, maxNorm, constF64(0)));
    // torch.nn.utils.clip_grad_norm_: clamp(max / (norm + 1e-6), max=1).
    Value ratio = b_.create<arith::DivFOp>(loc_, maxNorm, b_.create<arith::AddFOp>(loc_, norm, constF64(1e-6)));
    Value coefficient = select(clips, b_.create<arith::MinimumFOp>(loc_, constF64(1.0), ratio), constF64(1.0));
    Value gradScale =
        b_.create<arith::MulFOp>(loc_, b_.create<arith::DivFOp>(loc_, constF64(1.0), scale), coefficient);
    Value clipValue = f(offsetof(R, clipValue));
    auto groups = b_.create<scf::ForOp>(loc_, constI64(0), numGroups, constI64(1));
    {
      OpBuilder::InsertionGuard inner(b_);
      b_.setInsertionPoint(groups.getBody()->getTerminator());
      Value row = mul(groups.getInductionVar(), constI64(spec_.numHypers));
      store(gradScale, gep(hypers, add(row, constI64(spec_.gradScaleHyper)), f64()));
      store(clipValue, gep(hypers, add(row, constI64(spec_.gradClipHyper)), f64()));
    }
    Value skip = b_.create<arith::ExtUIOp>(loc_, i32(), b_.create<arith::XOrIOp>(loc_, finite, b_.create<arith::ConstantOp>(loc_, b_.getBoolAttr(true))));
    store(skip, gep(counter, kSkipFlagWord, i32()));
    store(norm, field(step, offsetof(R, gradNorm), f64()));
    store(coefficient, field(step, offsetof(R, clipCoefficient), f64()));
    store(b_.create<arith::UIToFPOp>(loc_, f64(), skip), field(step, offsetof(R, skipped), f64()));
    store(scale, field(step, offsetof(R, scaleUsed), f64()));
    ifThen(dynamic, [&] { updateScale(step, deviceScale, finite); });
  }

  /// torch's _amp_update_scale_ on the f32 scale (optrt::DynamicLossScaler):
  /// back off after a skipped step, else grow after growthInterval clean
  /// ones unless growing overflows.
  void updateScale(Value step, Value scale, Value finite) {
    using R = optrt::CudaStepRecord;
    auto factor = [&](size_t offset) {
      return b_.create<arith::TruncFOp>(loc_, f32(), load(f64(), field(step, offset, f64()))).getResult();
    };
    Value trackerAddress = field(step, offsetof(R, growthTracker), i32());
    Value successful = b_.create<arith::AddIOp>(loc_, load(i32(), trackerAddress), constI32(1));
    Value interval = b_.create<arith::FPToSIOp>(loc_, i32(), load(f64(), field(step, offsetof(R, growthInterval), f64())));
    Value grows = cmpI(arith::CmpIPredicate::eq, successful, interval);
    Value grown = b_.create<arith::MulFOp>(loc_, scale, factor(offsetof(R, growthFactor)));
    Value grownFinite = b_.create<arith::CmpFOp>(loc_, arith::CmpFPredicate::OLT, grown,
                                                 constF32(std::numeric_limits<float>::infinity()));
    Value clean = select(grows, select(grownFinite, grown, scale), scale);
    Value backedOff = b_.create<arith::MulFOp>(loc_, scale, factor(offsetof(R, backoffFactor)));
    store(select(finite, clean, backedOff), field(step, offsetof(R, scale), f32()));
    Value cleanTracker = select(grows, constI32(0), successful);
    store(select(finite, cleanTracker, constI32(0)), trackerAddress);
  }

  const StepKernelSpec &spec_;
};

} // namespace

void buildStepKernels(OpBuilder &builder, Location loc, const StepKernelSpec &spec) {
  StepKernelBuilder(builder, loc, spec).build();
}

} // namespace optdsl::cuda
