// The loop every backend wraps around a phase's element code (PhaseBody.h):
// for i in [lower, upper) step `step`, the element code at `width` lanes at
// i, each reduction input added to an f64 accumulator carried by the loop.
// The CPU's 16-wide loop and scalar tail and the GPU's grid-stride loops are
// all this loop with other bounds, so they accumulate alike: Σx for sum and
// mean, Σx² for norm, the maximum for max.
#pragma once

#include "optdsl/Codegen/PhaseBody.h"
#include "optrt/RuleKernels.h"

#include "mlir/Dialect/SCF/IR/SCF.h"

#include <functional>
#include <vector>

namespace optdsl::codegen {

/// The body of an scf.for built without a body builder, for the caller to
/// fill: the constructor moves the insertion point to its end (before the
/// empty scf.yield MLIR adds to a loop without iteration arguments), and
/// yield() ends it with the caller's values in place of that one. The caller
/// holds the insertion guard.
class LoopBody {
public:
  LoopBody(mlir::OpBuilder &builder, mlir::scf::ForOp loop);
  void yield(mlir::Location loc, mlir::ValueRange values);

private:
  mlir::OpBuilder &builder_;
  mlir::Operation *implicitYield_;
};

/// The reductions a phase accumulates, in the order of its results.
std::vector<optrt::ReductionKind> phaseReductionKinds(opt::PhaseOp phase);
/// The kind named by an opt.phase `reduce` entry ("sum", "mean", "norm", "max").
optrt::ReductionKind reductionKind(llvm::StringRef name);

/// The accumulator's starting value (f64, or vector<width x f64>): 0, or
/// -inf for max.
mlir::Value reductionIdentity(mlir::OpBuilder &builder, mlir::Location loc, optrt::ReductionKind kind,
                              int64_t width);
/// accumulator (+)= input, the input (f32 lanes) widened to f64 first.
mlir::Value accumulateReduction(mlir::OpBuilder &builder, mlir::Location loc, optrt::ReductionKind kind,
                                mlir::Value accumulator, mlir::Value input, int64_t width);

/// A uniform as the element code wants it (ElementAccess::uniform's type):
/// uniform slots hold f32, and an i1 uniform is stored as 0 or 1.
mlir::Value uniformAsType(mlir::OpBuilder &builder, mlir::Location loc, mlir::Value slotValue, mlir::Type type);

/// Emits the loop and returns the accumulators after it (one per entry of
/// `kinds`, starting from `initial`). `access(i)` says how the element code
/// reaches its buffers at induction value i. Fails as emitElementBody.
mlir::FailureOr<std::vector<mlir::Value>>
emitElementLoop(mlir::OpBuilder &builder, mlir::Location loc, opt::PhaseOp phase, const BufferLayout &buffers,
                mlir::Value lower, mlir::Value upper, mlir::Value step, int64_t width,
                const std::vector<optrt::ReductionKind> &kinds, const std::vector<mlir::Value> &initial,
                const std::function<ElementAccess(mlir::Value index)> &access);

} // namespace optdsl::codegen
