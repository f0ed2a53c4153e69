// Turns a rule in the explicit form of the opt dialect (one opt.phase per
// pass over memory: docs/opt-dialect.md) into host code for the runtime's
// calling convention (runtime/include/optrt/RuleKernels.h): per phase a uniform
// function (f64, once per tensor and step) and an element kernel (f32,
// vectorised, over [begin, end)), plus state initialisation and the scalar
// state update. The result uses func/arith/math/scf/vector/llvm and lowers to
// the LLVM dialect with lowerToLLVMDialect.
#pragma once

#include "optrt/RuleKernels.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"

#include <string>
#include <vector>

namespace optdsl {

/// What the generated functions expect, besides their names.
struct KernelSignature {
  std::string rule;
  std::vector<optrt::HyperInfo> hypers;
  std::vector<optrt::StateInfo> states;
  std::vector<optrt::ReductionInfo> reductions;
  std::vector<optrt::InputInfo> inputs; // declaration order
  std::vector<optrt::PhaseDomain> phaseDomains; // per phase
  std::vector<optrt::AxisReductionInfo> axisReductions;
  std::vector<int> columnSlots; // per phase
  bool usesRandom = false;              // random(): the kernels read the tensor's key
  int numPhases = 1;
  std::vector<int> numUniforms; // per phase
  /// The storage layouts compiled, each with its kernels' buffers
  /// (optrt::layoutBuffers); kernel p of layout L is
  /// kernelFunctionName(rule, p, L.name).
  struct Layout {
    std::string name; // canonical written form
    std::vector<optrt::BufferDesc> buffers;
  };
  std::vector<Layout> layouts;
};

/// Symbol names of the generated functions.
std::string initFunctionName(const std::string &rule);
std::string uniformsFunctionName(const std::string &rule, int phase);
/// The f32 layout's kernels keep the plain name optdsl_<rule>_kernel<p>;
/// another layout's append its canonical name with '=' and ',' as '_'.
std::string kernelFunctionName(const std::string &rule, int phase, const std::string &layout = "f32");
/// What a layout adds to a kernel's name: "" for f32, else its canonical
/// text made an identifier ("_param_bf16_master_f32").
std::string layoutSuffix(const std::string &layout);
std::string scalarUpdateFunctionName(const std::string &rule);

/// Elements per vector iteration of the element kernels.
inline constexpr int64_t kVectorWidth = 16;

/// The vector instructions beyond x86-64 the q8 kernels may use. `avx512`:
/// AVX-512F permutes for 16-lane table lookups (cpu::Q8Tables); `avx512vbmi`
/// (with AVX-512BW): byte permutes, 64 q8 elements at a time
/// (cpu/Q8BytePlanes.h); `avx512bf16`: vcvtneps2bf16 for bf16 stores
/// (cpu::storeBf16Fast). An artifact lists the features its target has, so
/// a loader refuses code built with any of them on a CPU without it.
struct CpuVectorIsa {
  bool avx512 = false;
  bool avx512vbmi = false;
  bool avx512bf16 = false;
};

/// Builds the kernels of the single opt.rule in `optModule`, in the explicit
/// form the opt-kernel-prep pipeline produces (buildKernelPrepPipeline in
/// optdsl/Transforms/Passes.h), into a new module. Returns null after
/// emitting an error at the offending operation's location when the rule is
/// not in that form. `layouts` are written layouts (optrt/Layout.h); a layout
/// with q8 states brings its small-tensor fallback (optrt::smallTensorLayout)
/// along. Throws std::invalid_argument for a layout the rule cannot take
/// (optrt::validateLayout). `isa`: what the target offers the q8 kernels;
/// the default gives code for any target.
mlir::OwningOpRef<mlir::ModuleOp> buildKernels(mlir::ModuleOp optModule, KernelSignature &signature,
                                               const std::vector<std::string> &layouts = {"f32"},
                                               CpuVectorIsa isa = {});

/// scf/vector/arith/math/func → LLVM dialect.
mlir::LogicalResult lowerToLLVMDialect(mlir::ModuleOp module);

/// Loads into `context` every dialect lowerToLLVMDialect's passes may load,
/// so that it can then lower several modules of that context on several
/// threads at once (loading a dialect is the one thing a pass does to the
/// context that is not safe beside another thread).
void loadLoweringDialects(mlir::MLIRContext &context);

} // namespace optdsl
