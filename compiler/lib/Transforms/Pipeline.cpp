// The kernel-preparation pipeline and the registration of the opt passes.
#include "optdsl/Transforms/Passes.h"

#include "optdsl/MLIRGen.h"

#include "mlir/Pass/PassRegistry.h"
#include "mlir/Transforms/Passes.h"

#include <cmath>
#include <cstdio>
#include <stdexcept>

namespace optdsl {

namespace {

#define GEN_PASS_REGISTRATION
#include "optdsl/Transforms/Passes.h.inc"

/// NAME=VALUE with the value's shortest exact decimal form.
std::vector<std::string> fixOption(const FixedHypers &fixed) {
  std::vector<std::string> entries;
  for (const auto &[name, value] : fixed) {
    char digits[32];
    std::snprintf(digits, sizeof digits, "%.17g", value);
    entries.push_back(name + "=" + digits);
  }
  return entries;
}

void addKernelPrep(mlir::OpPassManager &pm, std::vector<std::string> fix) {
  SpecializeHypersOptions options;
  options.fix = std::move(fix);
  pm.addNestedPass<opt::RuleOp>(createSpecializeHypers(options));
  pm.addPass(mlir::createCanonicalizerPass());
  pm.addPass(mlir::createCSEPass());
  pm.addNestedPass<opt::RuleOp>(createSplitPhases());
  pm.addNestedPass<opt::RuleOp>(createHoistUniforms());
  pm.addPass(mlir::createCanonicalizerPass());
  pm.addPass(mlir::createCSEPass());
}

struct KernelPrepOptions : mlir::PassPipelineOptions<KernelPrepOptions> {
  ListOption<std::string> fix{*this, "fix", llvm::cl::desc("NAME=VALUE entries: hypers to fix")};
};

} // namespace

void checkFixedHypers(const CheckedRule &rule, const FixedHypers &fixed) {
  for (const auto &[name, value] : fixed) {
    if (rule.hyperSlot(name) < 0)
      throw std::invalid_argument("cannot fix hyper '" + name + "': optimizer '" + rule.name() +
                                  "' has no such hyper");
    if (!std::isfinite(value))
      throw std::invalid_argument("cannot fix hyper '" + name + "' to a non-finite value");
  }
}

void buildKernelPrepPipeline(mlir::OpPassManager &pm, const FixedHypers &fixed) {
  addKernelPrep(pm, fixOption(fixed));
}

void registerOptDSLPasses() {
  registerOptDSLTransformsPasses();
  mlir::PassPipelineRegistration<KernelPrepOptions>(
      "opt-kernel-prep",
      "Prepare a rule for the backends: specialize hypers, canonicalize, cse, split phases, "
      "hoist uniforms, canonicalize, cse",
      [](mlir::OpPassManager &pm, const KernelPrepOptions &options) {
        addKernelPrep(pm, std::vector<std::string>(options.fix.begin(), options.fix.end()));
      });
}

mlir::OwningOpRef<mlir::ModuleOp> buildPreparedModule(mlir::MLIRContext &context, const CheckedRule &rule,
                                                      const FixedHypers &fixed, std::string &failure) {
  checkFixedHypers(rule, fixed);
  mlir::OwningOpRef<mlir::ModuleOp> module = buildModule(context, rule);
  if (!module) {
    failure = "the opt module does not verify";
    return nullptr;
  }
  mlir::PassManager prep(&context);
  buildKernelPrepPipeline(prep, fixed);
  if (mlir::failed(prep.run(*module))) {
    failure = "the opt passes failed";
    return nullptr;
  }
  return module;
}

} // namespace optdsl
