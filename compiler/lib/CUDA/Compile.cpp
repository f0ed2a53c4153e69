// The CUDA backend's driver: rule → opt module → host kernels (KernelGen) →
// gpu.module → NVVM → PTX per arch → cubin per arch (ptxas, when found).
#include "optdsl/CUDACompile.h"

#include "optdsl/CUDAKernelGen.h"
#include "optdsl/KernelGen.h"
#include "optdsl/MLIRDiagnostics.h"
#include "optdsl/Transforms/Passes.h"
#include "optrt/Layout.h"

#include "mlir/IR/MLIRContext.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Transforms/Passes.h"
#include "llvm/Support/raw_ostream.h"

#include <sstream>
#include <stdexcept>

namespace optdsl {

namespace {

/// Carries one compilation's context and diagnostics.
class CudaCompilation {
public:
  CudaCompilation(const CheckedRule &rule) : rule_(rule), diags_(*rule.source), bridge_(context_, diags_) {}

  std::runtime_error fail(const std::string &what) {
    std::ostringstream rendered;
    diags_.print(rendered);
    std::string message = "cannot compile rule '";
    message += rule_.name();
    message += "' for CUDA: ";
    message += what;
    if (!rendered.str().empty()) {
      message += '\n';
      message += rendered.str();
    }
    return std::runtime_error(message);
  }

  /// The device module, lowered to NVVM when `lower` is set.
  mlir::OwningOpRef<mlir::ModuleOp> deviceModule(const FixedHypers &fixed, const std::string &layout, bool lower,
                                                 optrt::CudaKernels &facts) {
    std::string failure;
    mlir::OwningOpRef<mlir::ModuleOp> optModule = buildPreparedModule(context_, rule_, fixed, failure);
    if (!optModule)
      throw fail(failure);
    KernelSignature signature;
    // The host kernels of the layout (validated there, refused by name):
    // the device module takes their uniform and scalar-update functions.
    mlir::OwningOpRef<mlir::ModuleOp> host = buildKernels(*optModule, signature, {layout});
    if (!host)
      throw fail("kernel generation failed");
    mlir::OwningOpRef<mlir::ModuleOp> device = buildCudaKernels(*optModule, *host, signature, optrt::Layout::parse(layout).str(), facts);
    if (!device || mlir::failed(device->verify()))
      throw fail("the device module does not verify");
    if (lower && mlir::failed(lowerCudaToNVVM(*device)))
      throw fail("lowering to NVVM failed");
    return device;
  }

  mlir::MLIRContext &context() { return context_; }

private:
  const CheckedRule &rule_;
  mlir::MLIRContext context_;
  DiagnosticEngine diags_;
  MLIRDiagnosticBridge bridge_;
};

} // namespace

optrt::CudaKernels cudaCompile(const CheckedRule &rule, const FixedHypers &fixed,
                               const CudaCompileOptions &options) {
  CudaCompilation compilation(rule);
  std::optional<std::string> toolkit = findCudaToolkit(options.toolkitPath);
  if (!toolkit)
    throw compilation.fail("no CUDA toolkit with nvvm/libdevice/libdevice.10.bc (set CUDA_HOME)");
  optrt::CudaKernels kernels;
  mlir::OwningOpRef<mlir::ModuleOp> device = compilation.deviceModule(fixed, options.layout, /*lower=*/true, kernels);
  std::optional<std::string> ptxas = options.assemble ? findPtxas(*toolkit) : std::nullopt;
  for (const std::string &arch : options.archs) {
    mlir::FailureOr<std::string> ptx = serializeToPtx(*device, arch, *toolkit);
    if (mlir::failed(ptx))
      throw compilation.fail("PTX generation for " + arch + " failed");
    optrt::CudaImage image{arch, std::move(*ptx), ptxVersionFor(arch), {}};
    if (ptxas)
      image.cubin = assemblePtx(*ptxas, image.ptx, arch);
    kernels.images.push_back(std::move(image));
  }
  return kernels;
}

std::string cudaModuleText(const CheckedRule &rule, const FixedHypers &fixed, const std::string &stage,
                           const std::string &layout) {
  CudaCompilation compilation(rule);
  optrt::CudaKernels kernels;
  mlir::OwningOpRef<mlir::ModuleOp> device = compilation.deviceModule(fixed, layout, stage == "nvvm", kernels);
  std::string text;
  llvm::raw_string_ostream stream(text);
  device->print(stream);
  return text;
}

} // namespace optdsl
