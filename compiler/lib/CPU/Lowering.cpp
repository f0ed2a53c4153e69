#include "optdsl/KernelGen.h"

#include "mlir/Conversion/Passes.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Transforms/Passes.h"

#include <cmath>

namespace optdsl {
namespace {

mlir::Value constantLike(mlir::OpBuilder &b, mlir::Location at, mlir::Type type, double value) {
  mlir::FloatAttr scalar = b.getF32FloatAttr(static_cast<float>(value));
  if (auto vector = mlir::dyn_cast<mlir::VectorType>(type))
    return b.create<mlir::arith::ConstantOp>(at, mlir::DenseElementsAttr::get(vector, mlir::Attribute(scalar)));
  return b.create<mlir::arith::ConstantOp>(at, scalar);
}

/// f32 atan2(y, x) in plain f32 arithmetic, so that it vectorises (libm's
/// atan2f is called lane by lane: 4x slower than memory for Adam-atan2, and
/// MLIR's polynomial approximation is 40 ulps off and loses the sign of
/// -pi). Within 3 ulps of the exact value (2.2 measured, tests/cpu:
/// Builtins), IEEE's special values included:
///   t = min(|x|, |y|) / max(|x|, |y|) in [0, 1], reduced to |u| <= tan(pi/8)
///   by atan(t) = pi/4 + atan((t - 1) / (t + 1)), one division either way;
///   atan(u) by the classic
///   odd minimax polynomial of degree 9 (Cephes' atanf coefficients); then
///   pi/2 - a when |y| > |x|, pi - a when x < 0 (its sign bit), the sign of y.
///   y = ±0 gives ±0 or ±pi by the sign of x (m = v = 0 in Adam-atan2), both
///   infinite ±pi/4 or ±3pi/4; NaN stays NaN.
mlir::Value expandAtan2(mlir::OpBuilder &b, mlir::Location at, mlir::Value y, mlir::Value x) {
  using namespace mlir;
  Type type = y.getType();
  auto c = [&](double value) { return constantLike(b, at, type, value); };
  auto cmp = [&](arith::CmpFPredicate predicate, Value l, Value r) { return b.create<arith::CmpFOp>(at, predicate, l, r); };
  auto select = [&](Value condition, Value t, Value f) { return b.create<arith::SelectOp>(at, condition, t, f); };
  auto add = [&](Value l, Value r) { return b.create<arith::AddFOp>(at, l, r); };
  auto sub = [&](Value l, Value r) { return b.create<arith::SubFOp>(at, l, r); };
  auto mul = [&](Value l, Value r) { return b.create<arith::MulFOp>(at, l, r); };
  auto div = [&](Value l, Value r) { return b.create<arith::DivFOp>(at, l, r); };

  Value ax = b.create<math::AbsFOp>(at, x), ay = b.create<math::AbsFOp>(at, y);
  // One division: (small - big) / (small + big) is (t - 1) / (t + 1) for
  // t = small / big, without rounding t first.
  Value small = b.create<arith::MinimumFOp>(at, ax, ay), big = b.create<arith::MaximumFOp>(at, ax, ay);
  Value reduced = cmp(arith::CmpFPredicate::OGT, small, mul(c(0.4142135623730950), big)); // t > tan(pi/8)
  Value u = div(select(reduced, sub(small, big), small), select(reduced, add(small, big), big));
  Value z = mul(u, u);
  Value poly = sub(mul(add(mul(sub(mul(c(8.05374449538e-2), z), c(1.38776856032e-1)), z), c(1.99777106478e-1)), z),
                   c(3.33329491539e-1));
  // pi/4, pi/2 and pi as f32 plus the rest (their f32 rounding alone would
  // be an ulp of the smaller results).
  auto rest = [](double value) { return value - static_cast<double>(static_cast<float>(value)); };
  Value atanU = add(mul(mul(poly, z), u), u);
  Value a = select(reduced, add(c(M_PI / 4), add(atanU, c(rest(M_PI / 4)))), atanU);
  a = select(cmp(arith::CmpFPredicate::OGT, ay, ax), add(sub(c(M_PI / 2), a), c(rest(M_PI / 2))), a);
  // The sign bit of x, -0 included.
  Value xNegative = cmp(arith::CmpFPredicate::OLT, b.create<math::CopySignOp>(at, c(1), x), c(0));
  a = select(xNegative, add(sub(c(M_PI), a), c(rest(M_PI))), a);
  Value general = b.create<math::CopySignOp>(at, a, y);

  Value yIsZero = cmp(arith::CmpFPredicate::OEQ, y, c(0));
  Value zeroCase = select(xNegative, b.create<math::CopySignOp>(at, c(M_PI), y), y);
  Value bothInfinite = b.create<arith::AndIOp>(at, cmp(arith::CmpFPredicate::OEQ, ay, c(INFINITY)),
                                               cmp(arith::CmpFPredicate::OEQ, ax, c(INFINITY)));
  Value diagonal = b.create<math::CopySignOp>(at, select(xNegative, c(3 * M_PI / 4), c(M_PI / 4)), y);
  return select(yIsZero, zeroCase, select(bothInfinite, diagonal, general));
}

void expandF32Atan2(mlir::ModuleOp module) {
  llvm::SmallVector<mlir::math::Atan2Op> ops;
  module.walk([&](mlir::math::Atan2Op op) {
    if (mlir::getElementTypeOrSelf(op.getType()).isF32())
      ops.push_back(op);
  });
  for (mlir::math::Atan2Op op : ops) {
    mlir::OpBuilder b(op);
    op.replaceAllUsesWith(expandAtan2(b, op.getLoc(), op.getLhs(), op.getRhs()));
    op.erase();
  }
}

} // namespace

namespace {

/// No fast-math anywhere: arith ops carry no fastmath flags, so LLVM keeps
/// every operation IEEE (no FMA contraction, correctly rounded sqrt and
/// division) and the kernels match the f32 semantics of the rule exactly.
void addLoweringPasses(mlir::PassManager &pm) {
  pm.addPass(mlir::createCanonicalizerPass());
  pm.addPass(mlir::createCSEPass());
  pm.addPass(mlir::createConvertSCFToCFPass());
  pm.addPass(mlir::createConvertMathToLLVMPass());
  // What LLVM has no intrinsic for (tanh, f64 atan2) becomes a call of
  // libm's function, lane by lane on vectors (vector.extract/insert, lowered
  // next).
  pm.addPass(mlir::createConvertMathToLibmPass());
  pm.addPass(mlir::createConvertVectorToLLVMPass());
  pm.addPass(mlir::createArithToLLVMConversionPass());
  pm.addPass(mlir::createConvertFuncToLLVMPass());
  pm.addPass(mlir::createConvertControlFlowToLLVMPass());
  pm.addPass(mlir::createReconcileUnrealizedCastsPass());
}

} // namespace

mlir::LogicalResult lowerToLLVMDialect(mlir::ModuleOp module) {
  expandF32Atan2(module);
  mlir::PassManager pm(module.getContext());
  addLoweringPasses(pm);
  return pm.run(module);
}

void loadLoweringDialects(mlir::MLIRContext &context) {
  mlir::PassManager pm(&context);
  addLoweringPasses(pm);
  mlir::DialectRegistry registry;
  pm.getDependentDialects(registry);
  context.appendDialectRegistry(registry);
  for (llvm::StringRef name : registry.getDialectNames())
    context.getOrLoadDialect(name);
  // What the conversions create besides their declared dependencies.
  context.loadDialect<mlir::arith::ArithDialect, mlir::math::MathDialect>();
}

} // namespace optdsl
