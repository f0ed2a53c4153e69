// The CPU kernels of rules that read tensors as matrices (adafactor, came):
// the same bits for any thread count (rows and columns combine in a fixed
// order), a checkpoint that continues the run bit for bit and refuses
// tensors of another shape by name, bf16 states against the f32 run, and
// the layouts and optimizers that do not take them yet refused by name.
// CpuKernelTest.cpp's EveryRule.MatchesInterpreterOnMatrices checks each
// step against the interpreter; the golden cases against the peers.
#include "optdsl/Interpreter.h"
#include "optdsl/JIT.h"
#include "optdsl/Sema.h"
#include "optrt/Optimizer.h"
#include "optrt/Storage.h"

#include "common/BranchHypers.h"
#include "common/RandomValues.h"

#include "common/CheckedText.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cmath>
#include <cstring>
#include <random>
#include <sstream>

namespace optdsl {
namespace {

// 40 x 700 and 300 x 17 in several chunks of whole rows (1000 elements: one
// row of 700, 58 rows of 17), a stack of three 5 x 7 in one, a vector.
const std::vector<std::vector<size_t>> kShapes = {{40, 700}, {300, 17}, {3, 5, 7}, {33}};
const std::vector<size_t> kSizes = {28000, 5100, 105, 33};

std::shared_ptr<const optrt::RuleKernels> kernelsOf(const std::string &rule,
                                                    const std::vector<std::string> &layouts = {"f32"}) {
  // Never destroyed: JIT engines torn down during static destruction would
  // run after LLVM's own globals are gone.
  static auto &cache = *new std::map<std::string, std::shared_ptr<const optrt::RuleKernels>>();
  std::string key = rule;
  for (const std::string &layout : layouts)
    key += "|" + layout;
  auto it = cache.find(key);
  if (it == cache.end())
    it = cache.emplace(key, jitCompile(loadRuleFile(std::string(OPTDSL_DSL_DIR) + "/" + rule + ".opt"), {}, layouts))
             .first;
  return it->second;
}

struct Training : test::NormalTensors {
  explicit Training(uint32_t seed) : NormalTensors(kSizes, seed) {}
  // Gradients of step `step`, the same for every run.
  static std::vector<std::vector<float>> grads(int step) {
    std::mt19937 rng(500 + step);
    std::vector<std::vector<float>> result;
    for (size_t n : kSizes)
      result.push_back(test::normalValues(n, rng));
    return result;
  }
  void step(optrt::Optimizer &optimizer, int step) {
    std::vector<std::vector<float>> g = grads(step);
    std::vector<const float *> pointers;
    for (const auto &values : g)
      pointers.push_back(values.data());
    optimizer.step({pointers});
  }
  // Params, then every state of every tensor.
  std::vector<float> everything(const optrt::Optimizer &optimizer, const std::string &rule) const {
    std::vector<float> all;
    for (const auto &p : params)
      all.insert(all.end(), p.begin(), p.end());
    for (const optrt::StateInfo &state : kernelsOf(rule)->states)
      if (!state.scalar && !state.scratch)
        for (size_t t = 0; t < kSizes.size(); ++t) {
          std::vector<float> values = optimizer.readState(state.name, 0, t);
          all.insert(all.end(), values.begin(), values.end());
        }
    return all;
  }
};

class MatrixRule : public ::testing::TestWithParam<std::string> {};

TEST_P(MatrixRule, BitwiseIdenticalForOneTwoAndThreeThreads) {
  std::vector<float> results[3];
  for (unsigned threads = 1; threads <= 3; ++threads) {
    Training run(1);
    optrt::Optimizer optimizer(kernelsOf(GetParam()), {threads, 1000});
    optimizer.addGroup(run.pointers(), kSizes, test::kBranchHypers.at(GetParam()), kShapes);
    for (int step = 1; step <= 3; ++step)
      run.step(optimizer, step);
    results[threads - 1] = run.everything(optimizer, GetParam());
  }
  for (unsigned k = 1; k < 3; ++k) {
    ASSERT_EQ(results[0].size(), results[k].size());
    EXPECT_EQ(std::memcmp(results[0].data(), results[k].data(), results[0].size() * sizeof(float)), 0)
        << k + 1 << " threads differ from one";
  }
}

TEST_P(MatrixRule, ACheckpointContinuesTheRunBitForBit) {
  const std::map<std::string, double> &hypers = test::kBranchHypers.at(GetParam());
  Training straight(2), resumed(2);
  optrt::Optimizer first(kernelsOf(GetParam()), {2, 1000});
  first.addGroup(straight.pointers(), kSizes, hypers, kShapes);
  for (int step = 1; step <= 2; ++step)
    straight.step(first, step);
  std::stringstream saved;
  first.saveState(saved);
  for (int step = 3; step <= 4; ++step)
    straight.step(first, step);

  resumed.params = Training(2).params;
  optrt::Optimizer second(kernelsOf(GetParam()), {2, 1000});
  second.addGroup(resumed.pointers(), kSizes, hypers, kShapes);
  for (int step = 1; step <= 2; ++step)
    resumed.step(second, step); // the params a trainer would have restored too
  // Disturb every state per row and column, then restore it from the stream.
  for (const optrt::StateInfo &state : kernelsOf(GetParam())->states)
    if (!state.scalar && state.span != optrt::StateSpan::Elements && !state.scratch)
      for (size_t t = 0; t < kSizes.size(); ++t) {
        std::vector<float> values = second.readState(state.name, 0, t);
        for (float &v : values)
          v = -1;
        second.writeState(state.name, 0, t, values);
      }
  second.loadState(saved);
  for (int step = 3; step <= 4; ++step)
    resumed.step(second, step);
  std::vector<float> a = straight.everything(first, GetParam()), b = resumed.everything(second, GetParam());
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0);
}

TEST_P(MatrixRule, ACheckpointOfOtherShapesIsRefusedByNameWithNothingChanged) {
  Training run(3), other(3);
  optrt::Optimizer first(kernelsOf(GetParam()));
  first.addGroup(run.pointers(), kSizes, {}, kShapes);
  run.step(first, 1);
  std::stringstream saved;
  first.saveState(saved);
  optrt::Optimizer second(kernelsOf(GetParam()));
  // The same sizes read as other matrices: 70 x 400 has other rows and columns.
  second.addGroup(other.pointers(), kSizes, {}, {{70, 400}, {300, 17}, {3, 5, 7}, {33}});
  std::vector<float> before = other.everything(second, GetParam());
  try {
    second.loadState(saved);
    ADD_FAILURE() << "loaded";
  } catch (const std::invalid_argument &e) {
    EXPECT_NE(std::string(e.what()).find("values in the stream and"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("of tensor 0"), std::string::npos) << e.what();
  }
  std::vector<float> after = other.everything(second, GetParam());
  EXPECT_EQ(before, after);
  EXPECT_EQ(second.stepCount(), 0);
}

TEST_P(MatrixRule, SafetensorsCarryTheStatesPerRowAndColumn) {
  Training run(6), other(6);
  optrt::Optimizer first(kernelsOf(GetParam()));
  first.addGroup(run.pointers(), kSizes, {}, kShapes);
  for (int step = 1; step <= 2; ++step)
    run.step(first, step);
  std::string path = ::testing::TempDir() + "/matrix-" + GetParam() + ".safetensors";
  first.exportSafetensors(path);
  optrt::Optimizer second(kernelsOf(GetParam()));
  second.addGroup(other.pointers(), kSizes, {}, kShapes);
  second.importSafetensors(path);
  std::remove(path.c_str());
  size_t compared = 0;
  for (const optrt::StateInfo &state : kernelsOf(GetParam())->states)
    if (!state.scalar && !state.scratch)
      for (size_t t = 0; t < kSizes.size(); ++t) {
        EXPECT_EQ(first.readState(state.name, 0, t), second.readState(state.name, 0, t)) << state.name << " " << t;
        compared += state.span != optrt::StateSpan::Elements;
      }
  EXPECT_GE(compared, 8u);
  EXPECT_EQ(second.stepCount(0), 2);
}

TEST_P(MatrixRule, StatesPerRowAndColumnAreAsLongAsTheMatricesSay) {
  Training run(4);
  optrt::Optimizer optimizer(kernelsOf(GetParam()));
  optimizer.addGroup(run.pointers(), kSizes, {}, kShapes);
  EXPECT_EQ(optimizer.state("exp_avg_sq_row", 0, 0).size(), 40u);
  EXPECT_EQ(optimizer.state("exp_avg_sq_col", 0, 0).size(), 700u);
  EXPECT_EQ(optimizer.state("exp_avg_sq_row", 0, 2).size(), 15u); // 3 matrices of 5 rows
  EXPECT_EQ(optimizer.state("exp_avg_sq_col", 0, 2).size(), 21u);
  EXPECT_EQ(optimizer.state("exp_avg_sq_row", 0, 3).size(), 1u); // a vector is one row
  EXPECT_EQ(optimizer.state("exp_avg_sq_col", 0, 3).size(), 33u);
  EXPECT_THROW(optimizer.writeState("exp_avg_sq_row", 0, 0, std::vector<float>(700, 1.0f)), std::invalid_argument);
  EXPECT_EQ(optimizer.readState("exp_avg_sq_row", 0, 0), std::vector<float>(40, 0.0f));
}

/// bf16 states (the full ones: exp_avg; the factored stay f32) against the
/// f32 run: a few bf16 roundings (2^-9 relative) of the states per step.
TEST_P(MatrixRule, Bf16StatesFollowTheF32Run) {
  std::map<std::string, double> hypers = test::kBranchHypers.at(GetParam());
  Training f32Run(5), bf16Run(5);
  optrt::Optimizer f32(kernelsOf(GetParam()));
  optrt::Optimizer bf16(kernelsOf(GetParam(), {"state=bf16"}), {.layout = "state=bf16"});
  f32.addGroup(f32Run.pointers(), kSizes, hypers, kShapes);
  bf16.addGroup(bf16Run.pointers(), kSizes, hypers, kShapes);
  std::vector<std::vector<float>> start = f32Run.params;
  for (int step = 1; step <= 3; ++step) {
    f32Run.step(f32, step);
    bf16Run.step(bf16, step);
  }
  double largest = 0;
  for (size_t t = 0; t < kSizes.size(); ++t)
    for (size_t i = 0; i < kSizes[t]; ++i)
      largest = std::max(largest, std::fabs(double(f32Run.params[t][i]) - start[t][i]));
  size_t differs = 0;
  for (size_t t = 0; t < kSizes.size(); ++t)
    for (size_t i = 0; i < kSizes[t]; ++i) {
      double a = f32Run.params[t][i], b = bf16Run.params[t][i];
      // Three steps through a bf16 momentum (2^-9 relative each), and the
      // params' own f32 rounding, which the two runs may take differently.
      double bound = 0x1p-6 * largest + 4 * std::ldexp(std::fabs(a), -24);
      differs += a != b;
      ASSERT_LE(std::fabs(a - b), bound) << "tensor " << t << " element " << i << " (largest change " << largest << ")";
    }
  EXPECT_GT(differs, 0u); // the momentum is rounded to bf16
  EXPECT_EQ(bf16.readState("exp_avg_sq_col", 0, 0).size(), 700u);
}

/// bf16 params with an f32 master against the f32 run from the same
/// values: the master computes exactly as the f32 params do (the same f32
/// arithmetic on the same values), and the stored params are the master
/// rounded to bf16.
TEST_P(MatrixRule, Bf16ParamsWithAnF32MasterStepAsTheF32Run) {
  std::map<std::string, double> hypers = test::kBranchHypers.at(GetParam());
  const std::string layout = "param=bf16,master=f32";
  Training f32Run(8);
  std::vector<std::vector<uint16_t>> stored;
  std::vector<void *> pointers;
  for (auto &p : f32Run.params) {
    // The f32 run starts from exactly the bf16 values.
    for (float &x : p)
      x = optrt::bf16ToF32(optrt::f32ToBf16(x));
    stored.emplace_back();
    for (float x : p)
      stored.back().push_back(optrt::f32ToBf16(x));
    pointers.push_back(stored.back().data());
  }
  optrt::Optimizer f32(kernelsOf(GetParam()));
  optrt::Optimizer mixed(kernelsOf(GetParam(), {layout}), {.layout = layout});
  f32.addGroup(f32Run.pointers(), kSizes, hypers, kShapes);
  mixed.addGroupStored(pointers, kSizes, hypers, kShapes);
  std::vector<std::vector<float>> start = f32Run.params;
  for (int step = 1; step <= 3; ++step) {
    f32Run.step(f32, step);
    std::vector<std::vector<float>> g = Training::grads(step);
    std::vector<const float *> grads;
    for (const auto &values : g)
      grads.push_back(values.data());
    mixed.step({grads});
  }
  size_t moved = 0;
  for (size_t t = 0; t < kSizes.size(); ++t) {
    std::vector<float> master = mixed.master(0, t);
    for (size_t i = 0; i < kSizes[t]; ++i) {
      moved += f32Run.params[t][i] != start[t][i];
      ASSERT_EQ(f32Run.params[t][i], master[i]) << "tensor " << t << " element " << i;
      ASSERT_EQ(stored[t][i], optrt::f32ToBf16(master[i])) << "tensor " << t << " element " << i;
    }
  }
  EXPECT_GT(moved, 0u);
}

INSTANTIATE_TEST_SUITE_P(Rules, MatrixRule, ::testing::ValuesIn(test::kMatrixRules),
                         [](const auto &info) { return info.param; });

// Reductions over the tensor (and the group) of values per row, per column
// and per matrix: each value counts for the elements of its row (column,
// matrix); a row's sum of a value per row is the value times the row's
// length.
constexpr const char *kReducedAxes = R"(optimizer reduced_axes {
  hyper lr = 0.01;
  state vr[rows];
  state vc[cols];
  vr = 0.5 * vr + row_mean(grad * grad);
  vc = 0.5 * vc + col_mean(grad * grad);
  let s = mean(vr) + norm(vc) + max(vr) + group_sum(vc) / 1000;
  let t = row_sum(vr) / 100 + col_sum(vc) / 100 + row_mean(vr) + col_mean(vc) + sum(col_mean(vr)) / 1000 +
          max(row_sum(vc));
  param = param - lr * grad / sqrt(s + 1e-8) - 1e-3 * sum(vr) - 1e-3 * t;
})";

TEST(MatrixKernels, ReductionsOfValuesPerRowAndColumnMatchTheInterpreter) {
  CheckedRule rule = test::checkedText(kReducedAxes, "reduced_axes.opt");
  optrt::Optimizer optimizer(jitCompile(rule), {2, 1000});
  Training run(7);
  optimizer.addGroup(run.pointers(), kSizes, {}, kShapes);
  Interpreter interpreter(rule);
  HyperValues hypers = interpreter.defaultHypers();
  std::vector<TensorState> reference;
  for (size_t k = 0; k < kSizes.size(); ++k)
    reference.push_back(interpreter.initTensor(std::vector<double>(run.params[k].begin(), run.params[k].end()), hypers,
                                               std::vector<int64_t>(kShapes[k].begin(), kShapes[k].end())));
  for (int step = 1; step <= 3; ++step) {
    run.step(optimizer, step);
    std::vector<std::vector<double>> wide;
    for (const auto &g : Training::grads(step))
      wide.emplace_back(g.begin(), g.end());
    interpreter.step(reference, wide, step, hypers);
  }
  for (size_t k = 0; k < kSizes.size(); ++k)
    for (size_t i = 0; i < kSizes[k]; ++i)
      ASSERT_NEAR(run.params[k][i], reference[k].param[i], 1e-5 * (1 + std::fabs(reference[k].param[i])))
          << "tensor " << k << " element " << i;
}

/// q8 states (exp_avg; the factored states stay f32) against the f32 run of
/// each step from the same start: every state the step writes from exact
/// values is the reference encoding of the f32 result (optrt's bitsandbytes
/// codec), bit for bit. The q8 kernels cut each row at the q8 blocks, and
/// their lanes follow the element's index, so the row sums are the f32
/// kernels' to the bit. Adafactor's params (its momentum is written in the
/// last pass, from exact values) are the f32 run's too; CAME's last pass
/// reads its q8 momentum back, so its params must only stay finite. The
/// tensors under 4096 elements keep their states in f32 (the small-tensor
/// fallback).
TEST_P(MatrixRule, Q8StatesAreTheReferenceEncodingOfTheF32Step) {
  const std::string layout = "state=q8";
  std::map<std::string, double> hypers = test::kBranchHypers.at(GetParam());
  Training q8Run(11), f32Run(11);
  // Chunks of whole q8 blocks: 64 rows of 700, 256 rows of 17; the f32 run
  // cuts the same (its column sums are added per chunk).
  optrt::Optimizer q8(kernelsOf(GetParam(), {layout}), {.threads = 2, .chunkElements = 4096, .layout = layout});
  optrt::Optimizer f32(kernelsOf(GetParam()), {.threads = 2, .chunkElements = 256 * 17});
  q8.addGroup(q8Run.pointers(), kSizes, hypers, kShapes);
  f32.addGroup(f32Run.pointers(), kSizes, hypers, kShapes);
  EXPECT_EQ(q8.tensorLayout(0, 0), layout);
  EXPECT_EQ(q8.tensorLayout(0, 2), "f32");
  bool paramsExact = GetParam() == "adafactor";
  for (int step = 1; step <= 4; ++step) {
    SCOPED_TRACE("step " + std::to_string(step));
    // The f32 run starts from exactly what the q8 run holds (in the buffers
    // it was given).
    for (size_t t = 0; t < kSizes.size(); ++t)
      std::copy(q8Run.params[t].begin(), q8Run.params[t].end(), f32Run.params[t].begin());
    for (const optrt::StateInfo &state : kernelsOf(GetParam())->states)
      if (!state.scalar && !state.scratch)
        for (size_t t = 0; t < kSizes.size(); ++t)
          f32.writeState(state.name, 0, t, q8.readState(state.name, 0, t));
    q8Run.step(q8, step);
    f32Run.step(f32, step);
    for (size_t t = 0; t < kSizes.size(); ++t) {
      SCOPED_TRACE("tensor " + std::to_string(t));
      for (size_t i = 0; i < kSizes[t]; ++i) {
        ASSERT_TRUE(std::isfinite(q8Run.params[t][i])) << i;
        if (paramsExact)
          ASSERT_EQ(q8Run.params[t][i], f32Run.params[t][i]) << i;
      }
      for (const optrt::StateInfo &state : kernelsOf(GetParam())->states) {
        if (state.scalar || state.scratch)
          continue;
        std::vector<float> exact = f32.readState(state.name, 0, t), ours = q8.readState(state.name, 0, t);
        std::vector<float> reference = exact;
        bool quantised = state.span == optrt::StateSpan::Elements && kSizes[t] >= 4096;
        if (quantised) {
          // exp_avg can take either sign: the signed map.
          std::vector<uint8_t> codes(exact.size());
          std::vector<float> absmax(optrt::q8Blocks(exact.size()));
          optrt::quantizeBlockwise(optrt::q8MapFor(optrt::Dtype::Q8Signed), exact, codes, absmax);
          optrt::dequantizeBlockwise(optrt::q8MapFor(optrt::Dtype::Q8Signed), codes, absmax, reference);
        }
        size_t differ = 0, moved = 0;
        for (size_t i = 0; i < exact.size(); ++i) {
          differ += std::memcmp(&ours[i], &reference[i], sizeof(float)) != 0;
          moved += reference[i] != 0;
        }
        EXPECT_EQ(differ, 0u) << state.name << (quantised ? " (q8)" : "") << " differs from "
                              << (quantised ? "the q8 encoding of " : "") << "the f32 step";
        EXPECT_GT(moved, 0u) << state.name;
      }
    }
  }
}

} // namespace
} // namespace optdsl
