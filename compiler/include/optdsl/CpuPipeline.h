// The one path from a checked rule to its CPU kernels in the LLVM dialect,
// shared by the in-process JIT and the kernel artifact so both run the same
// code: opt module (MLIRGen) → opt-kernel-prep (fixed hypers, phases,
// hoisting) → kernels (KernelGen) → LLVM dialect.
#pragma once

#include "optdsl/KernelGen.h"
#include "optdsl/Sema.h"
#include "optdsl/Transforms/Passes.h"

#include "mlir/IR/MLIRContext.h"

#include <ostream>

namespace optdsl {

struct CpuKernelModule {
  mlir::OwningOpRef<mlir::ModuleOp> module; // LLVM dialect (buildCpuKernels: not yet lowered)
  KernelSignature signature;
};

/// The kernels of `rule` as KernelGen builds them (func/scf/vector/arith/
/// math), not yet lowered to the LLVM dialect: for the JIT, which lowers
/// them part by part on its threads (ParallelObjects.h). Throws as
/// buildCpuKernelModule.
CpuKernelModule buildCpuKernels(mlir::MLIRContext &context, const CheckedRule &rule, const FixedHypers &fixed,
                                const std::vector<std::string> &layouts = {"f32"}, CpuVectorIsa isa = {});

/// Throws std::invalid_argument for a fixed hyper the rule does not have and
/// std::runtime_error carrying the rendered diagnostics (file:line:col) when
/// a stage fails. `isa` as in buildKernels.
CpuKernelModule buildCpuKernelModule(mlir::MLIRContext &context, const CheckedRule &rule,
                                     const FixedHypers &fixed,
                                     const std::vector<std::string> &layouts = {"f32"},
                                     CpuVectorIsa isa = {});

/// Every analysis the build runs, short of code generation: the opt passes
/// (phases: e.g. a start-of-step value needed after a phase overwrote it)
/// and kernel generation for `layouts`. Prints the located errors
/// (file:line:col, as the build would) to `errors`; returns whether the
/// rule would compile. What `optc FILE` runs after parsing and checking.
bool checkKernels(const CheckedRule &rule, const FixedHypers &fixed, const std::vector<std::string> &layouts,
                  std::ostream &errors);

} // namespace optdsl
