// Backend-neutral emission of one phase's element code. The element region
// of a hoisted opt.phase (see OptOps.td) is cloned at `width` lanes (1 =
// scalar, 4, 16, ...) into whatever loop a backend builds around it: the CPU
// backend's 16-wide loop and scalar tail, a GPU grid-stride loop. The backend
// says how a buffer is read and written at the current element(s) and where
// a uniform value comes from; everything between is arith/math on f32 (or
// vector<width x f32>) values, identical for every backend.
#pragma once

#include "optdsl/Dialect/OptDialect.h"

#include "mlir/IR/Builders.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/SmallVector.h"
#include "llvm/ADT/StringMap.h"

#include <functional>
#include <map>
#include <string>

namespace optdsl::codegen {

/// Buffer numbering of the runtime's element kernels (optrt::KernelFn): the
/// parameter, the gradient, the per-element states in declaration order
/// (scalar states live elsewhere), then the inputs in declaration order.
class BufferLayout {
public:
  static constexpr int kParam = 0;
  static constexpr int kGrad = 1;

  explicit BufferLayout(opt::RuleOp rule);

  /// The buffer of per-element state `name` (or of a state with an axis).
  int state(llvm::StringRef name) const { return stateBuffer_.lookup(name); }
  /// What a state buffer holds one value for: "" each element, else the
  /// state's axis ("rows", "cols", "matrices").
  llvm::StringRef axis(int buffer) const {
    auto it = axis_.find(buffer);
    return it == axis_.end() ? llvm::StringRef() : llvm::StringRef(it->second);
  }
  /// Some state has an axis: the rule reads tensors as matrices.
  bool matrixShaped() const { return !axis_.empty(); }
  /// The buffer of input `name`, and of the input with index `index`.
  int input(llvm::StringRef name) const { return inputBuffer_.lookup(name); }
  int input(int index) const { return 2 + static_cast<int>(stateBuffer_.size()) + index; }
  int numInputs() const { return static_cast<int>(inputBuffer_.size()); }
  int size() const { return 2 + static_cast<int>(stateBuffer_.size() + inputBuffer_.size()); }

private:
  llvm::StringMap<int> stateBuffer_;
  llvm::StringMap<int> inputBuffer_;
  std::map<int, std::string> axis_;
};

/// What a backend provides to the element code. Each callback emits at the
/// builder's insertion point.
struct ElementAccess {
  /// The current element(s) of buffer `buffer`: f32 for width 1, else
  /// vector<width x f32>. Called once per buffer read by the body.
  std::function<mlir::Value(mlir::OpBuilder &, mlir::Location, int buffer)> load;
  /// Writes `value` (same type as load's) to the current element(s). Called
  /// after every load of the body, once per buffer written.
  std::function<void(mlir::OpBuilder &, mlir::Location, int buffer, mlir::Value value)> store;
  /// Uniform slot `slot` (the element region's argument of that number) as
  /// one scalar of `type`, f32 or i1; the body broadcasts it to the lanes.
  /// Called once per slot, before anything else.
  std::function<mlir::Value(mlir::OpBuilder &, mlir::Location, int slot, mlir::Type type)> uniform;
  /// The current element(s)' draw of random stream `stream` (opt.random),
  /// as the load's type: optrt::uniformFromBits of
  /// optrt::stochasticBitsFromKey(tensor key ^ randomStreamSalt(stream), index).
  std::function<mlir::Value(mlir::OpBuilder &, mlir::Location, int64_t stream)> random;
};

/// f32/i1 (width 1) or vector<width x ...> of it.
mlir::Type laneType(mlir::Type scalar, int64_t width);

/// Emits the element region of `phase` for `width` consecutive elements and
/// returns the per-lane inputs of the phase's reductions (lane type of f32),
/// in the order of the phase's results. Fails, after an error at the
/// offending operation, when the region is not in hoisted form (a hyper,
/// `step`, a scalar state or an f64 value left in it: run
/// opt-hoist-uniforms), or when it accumulates rows or columns
/// (opt.accumulate) and `accumulated` is null; otherwise `accumulated` gets
/// the accumulated values, in the order of the region's opt.accumulate ops.
/// `known`: values of the region the caller has computed already, at the
/// body's lane width (a matrix rule's values per row, computed once per
/// row; per column, once per matrix): the body uses them instead of
/// emitting their operations.
mlir::FailureOr<llvm::SmallVector<mlir::Value>> emitElementBody(mlir::OpBuilder &builder, opt::PhaseOp phase,
                                                                const BufferLayout &buffers, int64_t width,
                                                                const ElementAccess &access,
                                                                llvm::SmallVector<mlir::Value> *accumulated = nullptr,
                                                                const llvm::DenseMap<mlir::Value, mlir::Value> *known = nullptr);

/// The opt.accumulate ops of a phase's element region, in order.
llvm::SmallVector<opt::AccumulateOp> phaseAccumulations(opt::PhaseOp phase);

} // namespace optdsl::codegen
