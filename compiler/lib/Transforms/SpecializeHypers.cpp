// opt-specialize-hypers: fixed hypers become constants, and what they
// decide folds away (see Passes.td).
#include "optdsl/Transforms/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

#include <cmath>
#include <cstdlib>

namespace optdsl {

#define GEN_PASS_DEF_SPECIALIZEHYPERS
#include "optdsl/Transforms/Passes.h.inc"

namespace {

using namespace mlir;

struct SpecializeHypersPass : impl::SpecializeHypersBase<SpecializeHypersPass> {
  using SpecializeHypersBase::SpecializeHypersBase;

  void runOnOperation() override {
    opt::RuleOp rule = getOperation();
    if (fix.empty())
      return;
    for (const std::string &entry : fix)
      if (failed(fixHyper(rule, entry)))
        return signalPassFailure();
    // Fold with every canonicalization pattern, as --canonicalize would, so
    // that this pass alone shows what fixing the hypers removes.
    MLIRContext *context = &getContext();
    RewritePatternSet patterns(context);
    for (Dialect *dialect : context->getLoadedDialects())
      dialect->getCanonicalizationPatterns(patterns);
    for (RegisteredOperationName op : context->getRegisteredOperations())
      op.getCanonicalizationPatterns(patterns, context);
    if (failed(applyPatternsAndFoldGreedily(rule, std::move(patterns))))
      signalPassFailure();
  }

  LogicalResult fixHyper(opt::RuleOp rule, StringRef entry) {
    auto [name, text] = entry.split('=');
    char *end = nullptr;
    std::string digits = text.str();
    double value = std::strtod(digits.c_str(), &end);
    if (name.empty() || digits.empty() || *end || !std::isfinite(value))
      return rule.emitError("cannot fix '") << entry << "': expected NAME=VALUE with a finite VALUE";
    auto hyper = dyn_cast_or_null<opt::HyperOp>(SymbolTable::lookupSymbolIn(rule, name));
    if (!hyper)
      return rule.emitError("cannot fix hyper '")
             << name << "': optimizer '" << rule.getSymName() << "' has no such hyper";
    optrt::HyperRange range = opt::hyperRange(hyper);
    if (!range.contains(value))
      return rule.emitError("cannot fix hyper '")
             << name << "' at " << optrt::HyperRange::format(value) << ": outside its range " << range.str();
    OpBuilder builder(rule.getContext());
    hyper.setDefaultValueAttr(builder.getF64FloatAttr(value));
    hyper.setFixed(true);
    rule.walk([&](opt::GetHyperOp read) {
      if (read.getHyper() != name)
        return;
      builder.setInsertionPoint(read);
      read.replaceAllUsesWith(
          builder.create<arith::ConstantOp>(read.getLoc(), builder.getF64FloatAttr(value)).getResult());
      read.erase();
    });
    return success();
  }
};

} // namespace
} // namespace optdsl
