// codegen::emitElementBody at every lane width, including 4, which the CPU
// backend never uses (it runs 16 and 1) but a GPU backend will: the body of
// each phase is emitted into a function whose arguments stand for the
// buffers at the current elements and the uniform slots, and the function
// must verify with every value at the lane type.
#include "optdsl/Codegen/PhaseBody.h"
#include "optdsl/MLIRGen.h"
#include "optdsl/Transforms/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Pass/PassManager.h"

#include <gtest/gtest.h>

namespace optdsl {
namespace {

using namespace mlir;

struct Emitted {
  int stores = 0;
  size_t reductionInputs = 0;
  bool verified = false;
};

/// Emits every phase of `rule` at `width` lanes; one entry per phase.
std::vector<Emitted> emitPhases(const std::string &rule, int64_t width, const FixedHypers &fixed = {}) {
  MLIRContext context;
  context.loadDialect<func::FuncDialect, vector::VectorDialect>();
  CheckedRule checked = loadRuleFile(std::string(OPTDSL_DSL_DIR) + "/" + rule + ".opt");
  OwningOpRef<ModuleOp> module = buildModule(context, checked);
  PassManager prep(&context);
  buildKernelPrepPipeline(prep, fixed);
  EXPECT_TRUE(succeeded(prep.run(*module)));
  opt::RuleOp ruleOp = *module->getOps<opt::RuleOp>().begin();
  codegen::BufferLayout buffers(ruleOp);
  Type lane = codegen::laneType(Float32Type::get(&context), width);

  std::vector<Emitted> result;
  OpBuilder builder(&context);
  OwningOpRef<ModuleOp> bodies = ModuleOp::create(builder.getUnknownLoc());
  ruleOp.walk([&](opt::PhaseOp phase) {
    // Arguments: the buffers' lanes, then the uniform slots.
    SmallVector<Type> inputs(buffers.size(), lane);
    for (Type slot : phase.getElementBody().getArgumentTypes())
      inputs.push_back(slot);
    builder.setInsertionPointToEnd(bodies->getBody());
    auto function = builder.create<func::FuncOp>(phase.getLoc(), "phase" + std::to_string(phase.getIndex()),
                                                 builder.getFunctionType(inputs, {}));
    Block *entry = function.addEntryBlock();
    builder.setInsertionPointToStart(entry);
    Emitted emitted;
    SmallVector<Value> written;
    codegen::ElementAccess access;
    access.load = [&](OpBuilder &, Location, int buffer) { return entry->getArgument(buffer); };
    access.store = [&](OpBuilder &, Location, int, Value value) {
      EXPECT_EQ(value.getType(), lane);
      written.push_back(value);
      ++emitted.stores;
    };
    access.uniform = [&](OpBuilder &, Location, int slot, Type type) {
      Value argument = entry->getArgument(buffers.size() + slot);
      EXPECT_EQ(argument.getType(), type);
      return argument;
    };
    FailureOr<SmallVector<Value>> inputsOfReductions =
        codegen::emitElementBody(builder, phase, buffers, width, access);
    EXPECT_TRUE(succeeded(inputsOfReductions));
    if (succeeded(inputsOfReductions)) {
      emitted.reductionInputs = inputsOfReductions->size();
      for (Value input : *inputsOfReductions)
        EXPECT_EQ(input.getType(), lane);
      written.append(inputsOfReductions->begin(), inputsOfReductions->end());
    }
    builder.create<func::ReturnOp>(phase.getLoc(), written);
    function.setFunctionType(builder.getFunctionType(inputs, TypeRange(ValueRange(written))));
    emitted.verified = succeeded(verify(function));
    result.push_back(emitted);
  });
  return result;
}

class LaneWidth : public ::testing::TestWithParam<int64_t> {};

TEST_P(LaneWidth, AdamwWithItsAmsgradBranch) {
  // amsgrad left free: an i1 uniform selects between two lanes of values.
  std::vector<Emitted> phases = emitPhases("adamw", GetParam());
  ASSERT_EQ(phases.size(), 1u);
  EXPECT_TRUE(phases[0].verified);
  EXPECT_EQ(phases[0].stores, 4); // param, exp_avg, exp_avg_sq, max_exp_avg_sq
  EXPECT_EQ(phases[0].reductionInputs, 0u);
}

// lamb: timm's global clipping (group_norm of grad) alone in phase 0; the
// moments, norm(update) and norm(param) (moved from phase 0, which then
// reads only the gradients) in phase 1; the param in phase 2.
TEST_P(LaneWidth, LambWithReductionsAndReloads) {
  std::vector<Emitted> phases = emitPhases("lamb", GetParam());
  ASSERT_EQ(phases.size(), 3u);
  EXPECT_TRUE(phases[0].verified);
  EXPECT_EQ(phases[0].stores, 0);
  EXPECT_EQ(phases[0].reductionInputs, 1u);
  EXPECT_TRUE(phases[1].verified);
  EXPECT_EQ(phases[1].stores, 2); // exp_avg, exp_avg_sq
  EXPECT_EQ(phases[1].reductionInputs, 2u);
  EXPECT_TRUE(phases[2].verified);
  EXPECT_EQ(phases[2].stores, 1); // param
  EXPECT_EQ(phases[2].reductionInputs, 0u);
}

INSTANTIATE_TEST_SUITE_P(PhaseBody, LaneWidth, ::testing::Values(1, 4, 16),
                         [](const auto &info) { return "width" + std::to_string(info.param); });

TEST(PhaseBody, RefusesAnUnhoistedPhase) {
  MLIRContext context;
  CheckedRule checked = loadRuleFile(std::string(OPTDSL_DSL_DIR) + "/sgd.opt");
  OwningOpRef<ModuleOp> module = buildModule(context, checked);
  PassManager split(&context);
  split.addNestedPass<opt::RuleOp>(createSplitPhases());
  ASSERT_TRUE(succeeded(split.run(*module)));
  opt::RuleOp rule = *module->getOps<opt::RuleOp>().begin();
  opt::UpdateOp update = *rule.getBody().getOps<opt::UpdateOp>().begin();
  opt::PhaseOp phase = *update.getBody().getOps<opt::PhaseOp>().begin();
  std::string message;
  ScopedDiagnosticHandler capture(&context, [&](mlir::Diagnostic &diagnostic) {
    message = diagnostic.str();
    return success();
  });
  OpBuilder builder(&context);
  OwningOpRef<ModuleOp> scratch = ModuleOp::create(builder.getUnknownLoc());
  builder.setInsertionPointToEnd(scratch->getBody());
  codegen::ElementAccess access;
  access.load = [&](OpBuilder &b, Location loc, int) -> Value {
    return b.create<arith::ConstantOp>(loc, b.getF32FloatAttr(0));
  };
  access.store = [](OpBuilder &, Location, int, Value) {};
  access.uniform = [](OpBuilder &b, Location loc, int, Type) -> Value {
    ADD_FAILURE() << "sgd's phase has no uniform slots before hoisting";
    return b.create<arith::ConstantOp>(loc, b.getF32FloatAttr(0));
  };
  EXPECT_TRUE(failed(codegen::emitElementBody(builder, phase, codegen::BufferLayout(rule), 1, access)));
  EXPECT_NE(message.find("run opt-hoist-uniforms first"), std::string::npos) << message;
}

} // namespace
} // namespace optdsl
