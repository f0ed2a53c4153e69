// The CUDA backend's stages, from the host kernels of KernelGen to PTX:
//   buildCudaKernels   one gpu.module: the rule's uniform functions as
//                      device functions, each phase's element code
//                      (codegen::emitElementBody) in a grid-stride loop, and
//                      the kernels of the device ABI
//                      (runtime/include/optrt/CudaKernels.h);
//   lowerCudaToNVVM    gpu/func/scf/vector/arith/math → LLVM + NVVM dialects,
//                      with IEEE sqrt and division (see CUDALowering.cpp);
//   serializeToPtx     NVPTX backend (LLVM), libdevice linked, one arch.
#pragma once

#include "optdsl/KernelGen.h"
#include "optrt/CudaKernels.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"

#include <string>

namespace optdsl {

/// Threads per block of every kernel; the element kernels' block reduction
/// is unrolled for it.
inline constexpr int kCudaBlockSize = 256;

/// Builds the device module of storage layout `layout` (written as in
/// optrt/Layout.h, already validated) from `optModule` (the rule after the
/// opt-kernel-prep pipeline: its phases' element code) and `hostKernels`
/// (buildKernels' result for it, not yet lowered: its uniform and
/// scalar-update functions), and fills the entry names and strides of
/// `facts` (images stay empty). Returns null after emitting an error.
mlir::OwningOpRef<mlir::ModuleOp> buildCudaKernels(mlir::ModuleOp optModule, mlir::ModuleOp hostKernels,
                                                    const KernelSignature &signature, const std::string &layout,
                                                    optrt::CudaKernels &facts);

/// Lowers the gpu.module of `module` in place to the LLVM and NVVM dialects.
mlir::LogicalResult lowerCudaToNVVM(mlir::ModuleOp module);

/// The PTX ISA version (times 10) used for `arch`: the oldest that supports
/// it, so that the oldest possible driver can JIT the PTX.
int ptxVersionFor(const std::string &arch);

/// PTX text of the lowered gpu.module for `arch` ("sm_80", "sm_90"), linked
/// with libdevice from `toolkitPath`. Returns failure after emitting an error.
mlir::FailureOr<std::string> serializeToPtx(mlir::ModuleOp module, const std::string &arch,
                                            const std::string &toolkitPath);

} // namespace optdsl
