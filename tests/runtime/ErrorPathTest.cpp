// Every refused call: it throws the documented exception with a message that
// names the problem, and leaves parameters, state, hypers and the step count
// exactly as they were (compared byte for byte).
#include "TestData.h"
#include "TestRules.h"

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>

namespace optrt::test {
namespace {

/// Runs f, expects an exception of type E whose message contains every one
/// of parts.
template <typename E>
void expectThrow(const std::function<void()> &f, std::vector<std::string> parts) {
  try {
    f();
  } catch (const E &error) {
    std::string message = error.what();
    for (const std::string &part : parts)
      EXPECT_NE(message.find(part), std::string::npos)
          << "message lacks \"" << part << "\": " << message;
    return;
  } catch (const std::exception &other) {
    ADD_FAILURE() << "threw another exception type: " << other.what();
    return;
  }
  ADD_FAILURE() << "did not throw";
}

/// Everything observable about an optimizer, as bytes and values.
struct Snapshot {
  std::vector<std::vector<unsigned char>> bytes; // params, then every state slice
  std::vector<double> values;                    // scalars, hypers, counters
  bool operator==(const Snapshot &) const = default;
};

Snapshot snapshot(const Training &run) {
  const Optimizer &optimizer = run.optimizer;
  Snapshot out;
  auto addBytes = [&](std::span<const float> floats) {
    auto begin = reinterpret_cast<const unsigned char *>(floats.data());
    out.bytes.emplace_back(begin, begin + floats.size_bytes());
  };
  for (const Tensors &group : run.params)
    for (const std::vector<float> &tensor : group)
      addBytes(tensor);
  const RuleKernels &rule = optimizer.rule();
  for (int g = 0; g < optimizer.numGroups(); ++g) {
    for (size_t t = 0; t < optimizer.numTensors(g); ++t)
      for (const StateInfo &state : rule.states) {
        if (state.scalar)
          out.values.push_back(optimizer.scalarState(state.name, g, t));
        else
          addBytes(optimizer.state(state.name, g, t));
      }
    for (const HyperInfo &hyper : rule.hypers)
      out.values.push_back(optimizer.hyper(hyper.name, g));
  }
  out.values.push_back(static_cast<double>(optimizer.stepCount()));
  out.values.push_back(static_cast<double>(optimizer.numGroups()));
  out.values.push_back(static_cast<double>(optimizer.stateBytes()));
  out.values.push_back(static_cast<double>(optimizer.numParams()));
  return out;
}

/// A LAMB-like optimizer on oddShape after one step, so that every state
/// holds values that differ from its initial ones.
struct ErrorPath : ::testing::Test {
  ErrorPath() : run(lambLikeKernels(), {3, 333}, randomTensors(oddShape(), 21)) {
    run.step(randomTensors(oddShape(), 22));
    grads = randomTensors(oddShape(), 23);
    before = snapshot(run);
  }
  void expectUnchanged() {
    EXPECT_TRUE(snapshot(run) == before) << "a refused call changed something";
  }

  Training run;
  GroupedTensors grads;
  Snapshot before;
};

// --- step -------------------------------------------------------------------

TEST(ErrorPathBare, StepBeforeAnyGroupIsALogicError) {
  Optimizer optimizer(sgdMomentumKernels(), {2, 100});
  expectThrow<std::logic_error>([&] { optimizer.step({}); }, {"no parameters", "addGroup"});
  EXPECT_EQ(optimizer.stepCount(), 0);
}

TEST_F(ErrorPath, StepWithWrongGroupCount) {
  auto pointers = pointersTo(grads);
  pointers.pop_back();
  expectThrow<std::invalid_argument>([&] { run.optimizer.step(pointers); },
                                     {"gradients for 1 groups", "has 2"});
  expectUnchanged();
}

TEST_F(ErrorPath, StepWithWrongTensorCountInALaterGroup) {
  // Group 0 is fine: a step that updated it before noticing group 1 would
  // show up in the snapshot.
  auto pointers = pointersTo(grads);
  pointers[1].push_back(grads[1][0].data());
  expectThrow<std::invalid_argument>([&] { run.optimizer.step(pointers); },
                                     {"3 gradients for group 1", "has 2 tensors"});
  expectUnchanged();
}

TEST_F(ErrorPath, StepWithNullGradient) {
  auto pointers = pointersTo(grads);
  pointers[1][1] = nullptr;
  expectThrow<std::invalid_argument>([&] { run.optimizer.step(pointers); },
                                     {"gradient of tensor 1 of group 1 is null"});
  expectUnchanged();
}

// --- addGroup ---------------------------------------------------------------

TEST_F(ErrorPath, AddGroupWithNoTensors) {
  expectThrow<std::invalid_argument>([&] { run.optimizer.addGroup({}, {}); },
                                     {"group 2", "no tensors"});
  expectUnchanged();
}

TEST_F(ErrorPath, AddGroupWithMismatchedLengths) {
  std::vector<float> extra(8);
  expectThrow<std::invalid_argument>(
      [&] {
        run.optimizer.addGroup({extra.data()}, {4, 4});
      },
      {"1 param pointers but 2 sizes"});
  expectUnchanged();
}

TEST_F(ErrorPath, AddGroupWithNullParam) {
  std::vector<float> extra(8);
  expectThrow<std::invalid_argument>(
      [&] {
        run.optimizer.addGroup({extra.data(), nullptr}, {8, 8});
      },
      {"param pointer of tensor 1 is null"});
  expectUnchanged();
}

TEST_F(ErrorPath, AddGroupWithEmptyTensor) {
  std::vector<float> extra(8);
  expectThrow<std::invalid_argument>([&] { run.optimizer.addGroup({extra.data()}, {0}); },
                                     {"tensor 0 has size 0"});
  expectUnchanged();
}

TEST_F(ErrorPath, AddGroupWithUnknownHyperListsTheRulesHypers) {
  std::vector<float> extra(8);
  expectThrow<std::invalid_argument>(
      [&] {
        run.optimizer.addGroup({extra.data()}, {8}, {{"lrr", 0.1}});
      },
      {"unknown hyper 'lrr' of rule 'lamb_like'; did you mean 'lr'?", "lr, beta1, eps, v0"});
  expectUnchanged();
}

TEST_F(ErrorPath, AddGroupWithNonFiniteHyper) {
  std::vector<float> extra(8);
  for (double bad :
       {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity()}) {
    expectThrow<std::invalid_argument>(
        [&] {
          run.optimizer.addGroup({extra.data()}, {8}, {{"eps", bad}});
        },
        {"hyper 'eps'", "finite"});
    expectUnchanged();
  }
}

TEST_F(ErrorPath, AddGroupWithParamsOfAnotherGroup) {
  // Overlapping an existing tensor: it would be stepped twice, by racing chunks.
  expectThrow<std::invalid_argument>(
      [&] { run.optimizer.addGroup({run.params[0][1].data() + 10}, {5}); },
      {"tensor 1 of group 0", "tensor 0 of group 2", "overlap"});
  std::vector<float> extra(8);
  expectThrow<std::invalid_argument>(
      [&] {
        run.optimizer.addGroup({extra.data(), extra.data() + 4}, {5, 4});
      },
      {"tensor 0 of group 2", "tensor 1 of group 2", "overlap"});
  expectUnchanged();
}

// --- hypers -----------------------------------------------------------------

TEST_F(ErrorPath, SetHyperUnknownName) {
  expectThrow<std::invalid_argument>([&] { run.optimizer.setHyper("beta2", 0.9); },
                                     {"unknown hyper 'beta2'", "lr, beta1, eps, v0"});
  expectUnchanged();
}

TEST_F(ErrorPath, SetHyperNonFinite) {
  expectThrow<std::invalid_argument>(
      [&] { run.optimizer.setHyper("lr", std::numeric_limits<double>::infinity(), 0); },
      {"hyper 'lr'", "finite"});
  expectUnchanged();
}

TEST_F(ErrorPath, SetHyperOutsideItsRange) {
  // beta1 is declared in [0, 1): kernels may rely on it (a state proved
  // non-negative from it is stored with the unsigned q8 map).
  for (double bad : {1.0, -0.25, 7.0})
    expectThrow<std::invalid_argument>([&] { run.optimizer.setHyper("beta1", bad); },
                                       {"hyper 'beta1'", "outside its range [0, 1)", "rely on it"});
  expectThrow<std::invalid_argument>([&] { run.optimizer.setHyper("beta1", 1.5, 1); }, {"[0, 1)"});
  expectUnchanged();
  run.optimizer.setHyper("beta1", 0.0);
  EXPECT_EQ(run.optimizer.hyper("beta1", 0), 0.0) << "the closed end is allowed";
}

TEST_F(ErrorPath, SetHyperBadGroup) {
  expectThrow<std::out_of_range>([&] { run.optimizer.setHyper("lr", 0.1, 2); },
                                 {"group 2 does not exist", "has 2 groups"});
  expectThrow<std::out_of_range>([&] { run.optimizer.setHyper("lr", 0.1, -2); },
                                 {"group -2 does not exist"});
  expectUnchanged();
}

TEST_F(ErrorPath, ReadHyperUnknownNameOrGroup) {
  expectThrow<std::invalid_argument>([&] { run.optimizer.hyper("momentum", 0); },
                                     {"unknown hyper 'momentum'"});
  expectThrow<std::out_of_range>([&] { run.optimizer.hyper("lr", -1); },
                                 {"group -1 does not exist"});
  expectUnchanged();
}

TEST(ErrorPathFixed, AFixedHyperKeepsItsBuiltInValue) {
  // v0 folded into the kernels at 0.1: another value would be ignored by
  // them, so the runtime refuses it; the same value is harmless.
  auto rule = std::make_shared<RuleKernels>(*lambLikeKernels());
  rule->hypers[3].fixed = true;
  Training run(rule, {2, 333}, randomTensors(oddShape(), 21), {{{"v0", 0.1}}, {}});
  Snapshot before = snapshot(run);
  expectThrow<std::invalid_argument>([&] { run.optimizer.setHyper("v0", 0.2); },
                                     {"hyper 'v0'", "fixed at 0.1 (", "cannot be set to 0.2"});
  expectThrow<std::invalid_argument>([&] { run.optimizer.setHyper("v0", 0.2, 1); },
                                     {"hyper 'v0'", "fixed"});
  std::vector<float> extra(8);
  expectThrow<std::invalid_argument>(
      [&] {
        run.optimizer.addGroup({extra.data()}, {8}, {{"v0", 0.5}});
      },
      {"hyper 'v0'", "fixed"});
  EXPECT_TRUE(snapshot(run) == before);
  run.optimizer.setHyper("v0", 0.1);
  run.optimizer.setHyper("lr", 0.5);
  EXPECT_EQ(run.optimizer.hyper("v0", 1), 0.1);
  EXPECT_EQ(run.optimizer.hyper("lr", 1), 0.5);
}

// --- state access -----------------------------------------------------------

TEST_F(ErrorPath, StateUnknownNameListsTheRulesStates) {
  expectThrow<std::invalid_argument>([&] { run.optimizer.state("exp_avg", 0, 0); },
                                     {"unknown state 'exp_avg'", "m, count, v, lastNorm"});
  expectThrow<std::invalid_argument>([&] { run.optimizer.scalarState("steps", 0, 0); },
                                     {"unknown state 'steps'", "m, count, v, lastNorm"});
  expectUnchanged();
}

TEST_F(ErrorPath, StateOfTheWrongKind) {
  expectThrow<std::invalid_argument>([&] { run.optimizer.state("count", 0, 0); },
                                     {"'count' is a scalar state", "scalarState"});
  expectThrow<std::invalid_argument>([&] { run.optimizer.scalarState("m", 0, 0); },
                                     {"'m' is elementwise", "state"});
  expectUnchanged();
}

TEST_F(ErrorPath, StateBadIndices) {
  expectThrow<std::out_of_range>([&] { run.optimizer.state("m", 2, 0); },
                                 {"group 2 does not exist"});
  expectThrow<std::out_of_range>([&] { run.optimizer.state("m", 1, 2); },
                                 {"tensor 2 of group 1 does not exist", "has 2 tensors"});
  expectThrow<std::out_of_range>([&] { run.optimizer.scalarState("count", 0, 3); },
                                 {"tensor 3 of group 0 does not exist"});
  expectUnchanged();
}

// --- construction -----------------------------------------------------------

std::shared_ptr<RuleKernels> brokenLamb(const std::function<void(RuleKernels &)> &breakIt) {
  auto rule = std::make_shared<RuleKernels>(*lambLikeKernels());
  breakIt(*rule);
  return rule;
}

TEST(ErrorPathConstruction, NullKernels) {
  expectThrow<std::invalid_argument>([] { Optimizer optimizer(nullptr); }, {"RuleKernels is null"});
}

TEST(ErrorPathConstruction, ZeroChunkElements) {
  expectThrow<std::invalid_argument>(
      [] {
        Optimizer optimizer(sgdMomentumKernels(), {1, 0});
      },
      {"chunkElements"});
}

TEST(ErrorPathConstruction, InconsistentTablesAreNamed) {
  struct Case {
    std::function<void(RuleKernels &)> breakIt;
    std::vector<std::string> parts;
  };
  std::vector<Case> cases = {
      {[](RuleKernels &r) { r.numPhases = 0; }, {"numPhases is 0"}},
      {[](RuleKernels &r) { r.layouts[0].kernels.pop_back(); },
       {"layout f32: kernels has 1 entries", "numPhases is 2"}},
      {[](RuleKernels &r) { r.uniforms.push_back(r.uniforms[0]); }, {"uniforms has 3 entries"}},
      {[](RuleKernels &r) { r.numUniforms = {2}; }, {"numUniforms has 1 entries"}},
      {[](RuleKernels &r) { r.numUniforms[1] = -1; }, {"numUniforms[1] is negative"}},
      {[](RuleKernels &r) { r.init = nullptr; }, {"init is null"}},
      {[](RuleKernels &r) { r.uniforms[1] = nullptr; }, {"uniforms[1] is null"}},
      {[](RuleKernels &r) { r.layouts[0].kernels[0] = nullptr; }, {"layout f32: kernels[0] is null"}},
      {[](RuleKernels &r) { r.layouts.clear(); }, {"not compiled for layout 'f32'", "no layouts"}},
      {[](RuleKernels &r) { r.layouts[0].name = "state=bf16"; },
       {"not compiled for layout 'f32'", "its layouts are: state=bf16"}},
      {[](RuleKernels &r) { r.layouts[0].buffers[2].dtype = Dtype::BF16; },
       {"layout f32", "buffers are not in the order this runtime passes them"}},
      {[](RuleKernels &r) { r.scalarUpdate = nullptr; }, {"scalarUpdate is null"}},
      {[](RuleKernels &r) { r.reductions[1].phase = 2; }, {"reduction 1 is in phase 2"}},
      {[](RuleKernels &r) {
         r.reductions = {{ReductionKind::Max, 1}, {ReductionKind::Sum, 0}};
       },
       {"reduction 1 (phase 0)", "ascending"}},
      {[](RuleKernels &r) {
         r.hypers.push_back({"lr", 1.0});
       },
       {"hyper 'lr' is declared twice"}},
      {[](RuleKernels &r) { r.hypers[2].defaultValue = std::nan(""); },
       {"hyper 'eps' has a non-finite default"}},
      {[](RuleKernels &r) { r.hypers[1].defaultValue = 1.0; },
       {"hyper 'beta1' has the default 1 outside its range [0, 1)"}},
      {[](RuleKernels &r) {
         r.states.push_back({"v", true});
       },
       {"state 'v' is declared twice"}},
  };
  for (const Case &c : cases) {
    SCOPED_TRACE(c.parts.front());
    std::vector<std::string> parts = c.parts;
    parts.push_back("'lamb_like'");
    expectThrow<std::invalid_argument>([&] { Optimizer optimizer(brokenLamb(c.breakIt)); }, parts);
  }
}

} // namespace
} // namespace optrt::test
