#include "SameTrafficKernel.h"

#include "optdsl/CUDACompile.h"
#include "optdsl/CUDAKernelGen.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/MLIRContext.h"

#include <stdexcept>

namespace optdsl::bench {

using namespace mlir;

std::string sameTrafficPtx(const std::string &arch) {
  MLIRContext context;
  context.loadDialect<gpu::GPUDialect, NVVM::NVVMDialect, func::FuncDialect, scf::SCFDialect, LLVM::LLVMDialect,
                      arith::ArithDialect, vector::VectorDialect>();
  OpBuilder b(&context);
  Location loc = b.getUnknownLoc();
  OwningOpRef<ModuleOp> module = ModuleOp::create(loc);
  (*module)->setAttr(gpu::GPUDialect::getContainerModuleAttrName(), b.getUnitAttr());
  b.setInsertionPointToEnd(module->getBody());
  auto gpuModule = b.create<gpu::GPUModuleOp>(loc, "optdsl_same_traffic_module");
  b.setInsertionPointToStart(gpuModule.getBody());
  Type i64 = b.getI64Type();
  auto ptr = LLVM::LLVMPointerType::get(&context);
  auto globalPtr = LLVM::LLVMPointerType::get(&context, 1);
  auto words = VectorType::get({4}, b.getI32Type());
  auto kernel = b.create<gpu::GPUFuncOp>(loc, kSameTrafficEntry, b.getFunctionType({ptr, i64, ptr}, {}));
  kernel->setAttr(gpu::GPUDialect::getKernelFuncAttrName(), b.getUnitAttr());
  kernel.setKnownBlockSizeAttr(b.getDenseI32ArrayAttr({kCudaBlockSize, 1, 1}));
  b.setInsertionPointToStart(&kernel.getBody().front());
  auto c = [&](int64_t v) { return b.create<arith::ConstantOp>(loc, b.getI64IntegerAttr(v)).getResult(); };
  auto toI64 = [&](Value index) { return b.create<arith::IndexCastOp>(loc, i64, index).getResult(); };
  auto load = [&](Type type, Value base, Value index, unsigned alignment) {
    Value at = b.create<LLVM::GEPOp>(loc, base.getType(), type, base, ValueRange{index});
    return b.create<LLVM::LoadOp>(loc, type, at, alignment).getResult();
  };
  Value streams = kernel.getArgument(0), numStreams = kernel.getArgument(1), sink = kernel.getArgument(2);
  Value block = toI64(b.create<gpu::BlockIdOp>(loc, gpu::Dimension::x));
  Value thread = toI64(b.create<gpu::ThreadIdOp>(loc, gpu::Dimension::x));
  Value grid = toI64(b.create<gpu::GridDimOp>(loc, gpu::Dimension::x));
  Value first = b.create<arith::AddIOp>(loc, b.create<arith::MulIOp>(loc, block, c(kCudaBlockSize)), thread);
  Value stride = b.create<arith::MulIOp>(loc, grid, c(kCudaBlockSize));
  Value zeros = b.create<arith::ConstantOp>(loc, DenseElementsAttr::get(words, b.getI32IntegerAttr(0)));
  Value ones = b.create<arith::ConstantOp>(loc, DenseElementsAttr::get(words, b.getI32IntegerAttr(1)));

  auto perStream = b.create<scf::ForOp>(loc, c(0), numStreams, c(1), ValueRange{zeros});
  {
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(perStream.getBody());
    Value record = b.create<arith::MulIOp>(loc, perStream.getInductionVar(), c(4));
    Value base = b.create<LLVM::IntToPtrOp>(loc, globalPtr, load(i64, streams, record, 8));
    Value count = load(i64, streams, b.create<arith::AddIOp>(loc, record, c(1)), 8);
    Value read = b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::ne,
                                         load(i64, streams, b.create<arith::AddIOp>(loc, record, c(2)), 8), c(0));
    Value written = b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::ne,
                                            load(i64, streams, b.create<arith::AddIOp>(loc, record, c(3)), 8), c(0));
    Value folded = perStream.getRegionIterArgs()[0];
    // The flags are the same for every thread: the branches are uniform.
    auto ifRead = b.create<scf::IfOp>(loc, TypeRange{words}, read, true);
    {
      OpBuilder::InsertionGuard inner(b);
      b.setInsertionPointToStart(ifRead.thenBlock());
      auto loop = b.create<scf::ForOp>(loc, first, count, stride, ValueRange{folded});
      b.setInsertionPointToStart(loop.getBody());
      Value i = loop.getInductionVar();
      Value x = load(words, base, i, 16);
      auto ifWritten = b.create<scf::IfOp>(loc, written, false);
      {
        OpBuilder::InsertionGuard store(b);
        b.setInsertionPoint(ifWritten.thenBlock()->getTerminator());
        Value at = b.create<LLVM::GEPOp>(loc, globalPtr, words, base, ValueRange{i});
        b.create<LLVM::StoreOp>(loc, b.create<arith::AddIOp>(loc, x, ones), at, 16);
      }
      b.create<scf::YieldOp>(loc, ValueRange{b.create<arith::XOrIOp>(loc, loop.getRegionIterArgs()[0], x)});
      b.setInsertionPointAfter(loop);
      b.create<scf::YieldOp>(loc, loop.getResults());
      b.setInsertionPointToStart(ifRead.elseBlock());
      auto writeOnly = b.create<scf::ForOp>(loc, first, count, stride);
      b.setInsertionPoint(writeOnly.getBody()->getTerminator());
      Value at = b.create<LLVM::GEPOp>(loc, globalPtr, words, base, ValueRange{writeOnly.getInductionVar()});
      b.create<LLVM::StoreOp>(loc, ones, at, 16);
      b.setInsertionPointAfter(writeOnly);
      b.create<scf::YieldOp>(loc, ValueRange{folded});
    }
    b.create<scf::YieldOp>(loc, ifRead.getResults());
  }
  // Stored only in the (never met) case the fold is all 0x5eed: the loads
  // cannot be dropped, and nothing is written.
  Value fold = b.create<vector::ReductionOp>(loc, vector::CombiningKind::XOR, perStream.getResult(0));
  Value magic = b.create<arith::ConstantOp>(loc, b.getI32IntegerAttr(0x5eed));
  auto ifMagic = b.create<scf::IfOp>(loc, b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::eq, fold, magic), false);
  {
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPoint(ifMagic.thenBlock()->getTerminator());
    b.create<LLVM::StoreOp>(loc, fold, sink, 4);
  }
  b.create<gpu::ReturnOp>(loc);

  if (failed(module->verify()) || failed(lowerCudaToNVVM(*module)))
    throw std::runtime_error("the same-traffic kernel does not lower");
  std::optional<std::string> toolkit = findCudaToolkit();
  if (!toolkit)
    throw std::runtime_error("no CUDA toolkit (libdevice) for the same-traffic kernel");
  FailureOr<std::string> ptx = serializeToPtx(*module, arch, *toolkit);
  if (failed(ptx))
    throw std::runtime_error("the same-traffic kernel's PTX for " + arch + " failed");
  return *ptx;
}

} // namespace optdsl::bench
