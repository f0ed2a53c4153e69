// gpu.module → LLVM + NVVM dialects. Upstream's convert-gpu-to-nvvm, with two
// changes that keep the device arithmetic IEEE, as nvcc's defaults and the
// CPU kernels are:
//   - math.sqrt becomes llvm.intr.sqrt (PTX sqrt.rn). Upstream lowers it to
//     libdevice's __nv_sqrtf, and LLVM 19's NVVMReflect then picks
//     sqrt.approx.f32 (see shared/design/MLIR-NOTES.md, trap 1).
//   - math ops on vectors (KernelGen's 16-wide loop) are unrolled to scalars
//     first: libdevice calls exist for scalars only.
// Division needs nothing: arith.divf carries no fast-math flag, and NVPTX
// emits div.rn for it.
#include "optdsl/CUDAKernelGen.h"

#include "mlir/Conversion/ArithToLLVM/ArithToLLVM.h"
#include "mlir/Conversion/ControlFlowToLLVM/ControlFlowToLLVM.h"
#include "mlir/Conversion/FuncToLLVM/ConvertFuncToLLVM.h"
#include "mlir/Conversion/GPUCommon/GPUCommonPass.h"
#include "mlir/Conversion/GPUToNVVM/GPUToNVVMPass.h"
#include "mlir/Conversion/LLVMCommon/ConversionTarget.h"
#include "mlir/Conversion/LLVMCommon/Pattern.h"
#include "mlir/Conversion/LLVMCommon/TypeConverter.h"
#include "mlir/Conversion/MemRefToLLVM/MemRefToLLVM.h"
#include "mlir/Conversion/SCFToControlFlow/SCFToControlFlow.h"
#include "mlir/Conversion/ReconcileUnrealizedCasts/ReconcileUnrealizedCasts.h"
#include "mlir/Conversion/VectorToLLVM/ConvertVectorToLLVMPass.h"
#include "mlir/Conversion/VectorToLLVM/ConvertVectorToLLVM.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Transforms/DialectConversion.h"
#include "mlir/Transforms/Passes.h"

namespace optdsl {

using namespace mlir;

namespace {

struct SqrtToLLVM : ConvertOpToLLVMPattern<math::SqrtOp> {
  // Above upstream's libdevice pattern (benefit 1).
  explicit SqrtToLLVM(LLVMTypeConverter &converter)
      : ConvertOpToLLVMPattern<math::SqrtOp>(converter, /*benefit=*/10) {}

  LogicalResult matchAndRewrite(math::SqrtOp op, OpAdaptor adaptor,
                                ConversionPatternRewriter &rewriter) const override {
    Type type = getTypeConverter()->convertType(op.getType());
    if (!type)
      return failure();
    rewriter.replaceOpWithNewOp<LLVM::SqrtOp>(op, type, adaptor.getOperand());
    return success();
  }
};

/// Rewrites every math op on a 1-D vector, except sqrt (llvm.intr.sqrt takes
/// vectors), as one scalar op per lane.
void unrollVectorMath(Operation *root) {
  SmallVector<Operation *> vectorOps;
  root->walk([&](Operation *op) {
    if (op->getDialect() && op->getDialect()->getNamespace() == math::MathDialect::getDialectNamespace() &&
        !isa<math::SqrtOp>(op) && op->getNumResults() == 1 &&
        isa<VectorType>(op->getResult(0).getType()))
      vectorOps.push_back(op);
  });
  for (Operation *op : vectorOps) {
    OpBuilder b(op);
    auto type = cast<VectorType>(op->getResult(0).getType());
    Value result = b.create<arith::ConstantOp>(op->getLoc(), b.getZeroAttr(type));
    for (int64_t lane = 0; lane < type.getNumElements(); ++lane) {
      OperationState state(op->getLoc(), op->getName());
      for (Value operand : op->getOperands())
        state.addOperands(b.create<vector::ExtractOp>(op->getLoc(), operand, ArrayRef<int64_t>{lane}).getResult());
      state.addTypes(type.getElementType());
      state.addAttributes(op->getAttrs());
      Value scalar = b.create(state)->getResult(0);
      result = b.create<vector::InsertOp>(op->getLoc(), scalar, result, ArrayRef<int64_t>{lane});
    }
    op->getResult(0).replaceAllUsesWith(result);
    op->erase();
  }
}

} // namespace

LogicalResult lowerCudaToNVVM(ModuleOp module) {
  MLIRContext *context = module.getContext();
  for (gpu::GPUModuleOp gpuModule : module.getOps<gpu::GPUModuleOp>())
    unrollVectorMath(gpuModule);
  // Vector ops first, with the pass the CPU path uses: it also lowers
  // vector.broadcast, which the plain conversion patterns do not.
  PassManager structured(context);
  structured.addPass(createCanonicalizerPass());
  structured.addPass(createCSEPass());
  structured.addPass(createConvertSCFToCFPass());
  structured.addPass(createConvertVectorToLLVMPass());
  if (failed(structured.run(module)))
    return failure();

  for (gpu::GPUModuleOp gpuModule : module.getOps<gpu::GPUModuleOp>()) {
    LowerToLLVMOptions options(context);
    LLVMTypeConverter converter(context, options);
    populateGpuMemorySpaceAttributeConversions(converter, [](gpu::AddressSpace space) -> unsigned {
      switch (space) {
      case gpu::AddressSpace::Global:
        return static_cast<unsigned>(NVVM::NVVMMemorySpace::kGlobalMemorySpace);
      case gpu::AddressSpace::Workgroup:
        return static_cast<unsigned>(NVVM::NVVMMemorySpace::kSharedMemorySpace);
      case gpu::AddressSpace::Private:
        return 0;
      }
      return 0;
    });
    RewritePatternSet patterns(context);
    arith::populateArithToLLVMConversionPatterns(converter, patterns);
    cf::populateControlFlowToLLVMConversionPatterns(converter, patterns);
    populateFuncToLLVMConversionPatterns(converter, patterns);
    populateFinalizeMemRefToLLVMConversionPatterns(converter, patterns);
    populateVectorToLLVMConversionPatterns(converter, patterns);
    populateGpuToNVVMConversionPatterns(converter, patterns);
    patterns.add<SqrtToLLVM>(converter);
    LLVMConversionTarget target(*context);
    configureGpuToNVVMConversionLegality(target);
    target.addLegalOp<LLVM::SqrtOp>();
    if (failed(applyPartialConversion(gpuModule, target, std::move(patterns))))
      return failure();
    // The rule's functions are only called by the kernels: internal, so
    // LLVM drops them once inlined instead of emitting them as .visible.
    for (auto function : gpuModule.getOps<LLVM::LLVMFuncOp>())
      if (!function.isExternal() && !function->hasAttr(NVVM::NVVMDialect::getKernelFuncAttrName()))
        function.setLinkage(LLVM::Linkage::Internal);
  }

  PassManager cleanup(context);
  cleanup.addPass(createReconcileUnrealizedCastsPass());
  return cleanup.run(module);
}

} // namespace optdsl
