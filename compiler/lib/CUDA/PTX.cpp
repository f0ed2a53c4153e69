// A lowered gpu.module → PTX text for one architecture, through the NVVM
// target of MLIR (LLVM's NVPTX backend at O3, libdevice linked from the CUDA
// toolkit for the math functions that need it).
#include "optdsl/CUDAKernelGen.h"

#include "mlir/Dialect/GPU/IR/CompilationInterfaces.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Target/LLVM/NVVM/Target.h"
#include "mlir/Target/LLVMIR/Dialect/Builtin/BuiltinToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/GPU/GPUToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/LLVMIR/LLVMToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/NVVM/NVVMToLLVMIRTranslation.h"

namespace optdsl {

using namespace mlir;

int ptxVersionFor(const std::string &arch) {
  // PTX ISA 7.0 (CUDA 11.0) introduced sm_80, 7.8 (CUDA 11.8) sm_90.
  if (arch == "sm_90")
    return 78;
  if (arch == "sm_89")
    return 78;
  if (arch == "sm_86")
    return 71;
  return 70;
}

FailureOr<std::string> serializeToPtx(ModuleOp module, const std::string &arch,
                                      const std::string &toolkitPath) {
  MLIRContext *context = module.getContext();
  DialectRegistry registry;
  NVVM::registerNVVMTargetInterfaceExternalModels(registry);
  registerBuiltinDialectTranslation(registry);
  registerLLVMDialectTranslation(registry);
  registerNVVMDialectTranslation(registry);
  registerGPUDialectTranslation(registry);
  context->appendDialectRegistry(registry);

  auto modules = module.getOps<gpu::GPUModuleOp>();
  if (modules.empty())
    return module.emitError("no gpu.module to serialize");
  gpu::GPUModuleOp gpuModule = *modules.begin();
  std::string features = "+ptx" + std::to_string(ptxVersionFor(arch));
  auto target = NVVM::NVVMTargetAttr::get(context, /*optLevel=*/3, "nvptx64-nvidia-cuda", arch,
                                          features, DictionaryAttr(), ArrayAttr());
  gpu::TargetOptions options(toolkitPath, {}, "", gpu::CompilationTarget::Assembly);
  std::optional<SmallVector<char, 0>> object =
      cast<gpu::TargetAttrInterface>(target).serializeToObject(gpuModule, options);
  if (!object)
    return gpuModule.emitError("NVPTX code generation for ") << arch << " failed";
  std::string ptx(object->begin(), object->end());
  // The serializer ends the text with a NUL byte (MLIR-NOTES.md).
  while (!ptx.empty() && ptx.back() == '\0')
    ptx.pop_back();
  return ptx;
}

} // namespace optdsl
