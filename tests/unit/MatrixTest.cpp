// Matrix-shaped tensors in the language (dsl/README.md "Matrices"): sema's
// axes and errors for `state v[rows];`, row_*/col_* and rank/rows/cols, and
// the reference interpreter's meaning of them, checked against sums written
// out here over random matrices of rank 1, 2 and 3.
#include "optdsl/Interpreter.h"
#include "optdsl/Parser.h"

#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>

namespace optdsl {
namespace {

using Vec = std::vector<double>;

struct Checked {
  std::unique_ptr<DiagnosticEngine> diags;
  std::shared_ptr<const SourceFile> file;
  std::optional<CheckedRule> rule;

  std::string messages() const {
    std::ostringstream out;
    diags->print(out);
    return out.str();
  }
};

Checked check(const std::string &text) {
  Checked checked;
  checked.file = std::make_shared<const SourceFile>("test.opt", text);
  checked.diags = std::make_unique<DiagnosticEngine>(*checked.file);
  if (std::optional<ast::Rule> parsed = parseRule(*checked.file, *checked.diags))
    checked.rule = checkRule(std::move(*parsed), checked.file, *checked.diags);
  return checked;
}

Vec randomVector(std::mt19937 &rng, size_t n) {
  std::normal_distribution<double> normal;
  Vec values(n);
  for (double &x : values)
    x = normal(rng);
  return values;
}

// --- Sema -----------------------------------------------------------------

TEST(MatrixSema, StatesSpanRowsOrColumnsAndValuesCarryTheirAxes) {
  Checked c = check(R"(optimizer t {
  state vr[rows];
  state vc[cols];
  state m;
  vr = 0.9 * vr + row_mean(grad * grad);
  vc = 0.9 * vc + col_sum(grad);
  let both = vr * vc;
  let per_matrix = col_mean(vr);
  m = both + per_matrix;
  param = param - m * rows / cols / rank;
})");
  ASSERT_TRUE(c.rule) << c.messages();
  const CheckedRule &rule = *c.rule;
  EXPECT_TRUE(rule.matrixShaped);
  EXPECT_EQ(rule.symbol(rule.states[0]).axes, kBatchAxis | kRowAxis);
  EXPECT_EQ(rule.symbol(rule.states[1]).axes, kBatchAxis | kColAxis);
  EXPECT_EQ(rule.symbol(rule.states[2]).axes, kElementAxes);
  const ast::Stmt &both = rule.ast.stmts[5];
  EXPECT_EQ(both.value->axes, kElementAxes); // a row value times a column value
  const ast::Stmt &perMatrix = rule.ast.stmts[6];
  EXPECT_EQ(perMatrix.value->axes, kBatchAxis);
  // The row and column means of grad end the first pass; the mean over the
  // rows of a [rows] state is taken between passes: two in all.
  EXPECT_EQ(both.phase, 1);
  EXPECT_EQ(perMatrix.phase, 1);
  EXPECT_EQ(rule.numPhases, 2);
}

TEST(MatrixSema, ARuleWithoutThemIsNotMatrixShaped) {
  Checked c = check("optimizer t { state m; m = grad; param = param - m; }");
  ASSERT_TRUE(c.rule) << c.messages();
  EXPECT_FALSE(c.rule->matrixShaped);
}

TEST(MatrixSema, DimensionsAloneAreHiddenScalarStatesTheKernelsTake) {
  Checked c = check(R"(optimizer t {
  state m;
  m = rank >= 2 ? grad / rows : grad;
  param = param - m * rank;
})");
  ASSERT_TRUE(c.rule) << c.messages();
  const CheckedRule &rule = *c.rule;
  EXPECT_FALSE(rule.matrixShaped);
  // One hidden scalar per dimension read, declared on its first read.
  ASSERT_EQ(rule.scalarStates.size(), 2u);
  EXPECT_EQ(rule.symbol(rule.scalarStates[0]).name, "shape(rank)");
  EXPECT_EQ(rule.symbol(rule.scalarStates[0]).shapeDimension, 0);
  EXPECT_EQ(rule.symbol(rule.scalarStates[1]).name, "shape(rows)");
  EXPECT_EQ(rule.symbol(rule.scalarStates[1]).shapeDimension, 1);
  // The interpreter fills them as the runtime does.
  Interpreter interpreter(rule);
  TensorState tensor = interpreter.initTensor(Vec(24, 1.0), interpreter.defaultHypers(), {2, 3, 4});
  EXPECT_EQ(tensor.scalarStates, (Vec{3, 3}));
}

TEST(MatrixSema, AStateGetsOnlyWhatVariesAlongItsAxes) {
  Checked c = check(R"(optimizer t {
  state vr[rows];
  state vc[cols];
  vr = grad;
  vc = row_mean(grad);
  param = param - vr - vc;
})");
  EXPECT_FALSE(c.rule);
  std::string text = c.messages();
  EXPECT_NE(text.find("test.opt:4:8: error: state 'vr' holds one value per row, but this value varies along the "
                      "columns; reduce it with row_mean() or row_sum()"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("test.opt:5:8: error: state 'vc' holds one value per column, but this value varies along the "
                      "rows; reduce it with col_mean() or col_sum()"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("test.opt:2:9: note: declared here"), std::string::npos) << text;
}

TEST(MatrixSema, ShapesAreForStatesAndNameRowsOrCols) {
  Checked c = check(R"(optimizer t {
  hyper lr[rows] = 1;
  state a[diagonal];
  input h[cols];
  param = param - lr * grad * a * h;
})");
  EXPECT_FALSE(c.rule);
  std::string text = c.messages();
  EXPECT_NE(text.find("test.opt:2:12: error: only a state has a shape ('state NAME[rows];'); 'lr' is a hyper"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("test.opt:3:11: error: a state spans 'rows' (one value per row of each matrix) or 'cols' (one "
                      "per column), not 'diagonal'"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("test.opt:4:11: error: only a state has a shape ('state NAME[rows];'); 'h' is an input"),
            std::string::npos)
      << text;
}

TEST(MatrixSema, DimensionsAreBuiltInAndReadOnly) {
  Checked c = check(R"(optimizer t {
  hyper rows = 2;
  state vr[rows] = param;
  cols = 3;
  param = param - grad * vr;
})");
  EXPECT_FALSE(c.rule);
  std::string text = c.messages();
  EXPECT_NE(text.find("test.opt:2:9: error: 'rows' is a built-in name and cannot be redeclared"), std::string::npos)
      << text;
  EXPECT_NE(text.find("test.opt:3:20: error: the initial value of 'vr' may use only numbers and hypers, not built-in "
                      "'param'"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("test.opt:4:3: error: cannot assign to 'cols': it is read-only"), std::string::npos) << text;
}

TEST(MatrixSema, ARowReductionInAScalarIsAnElementwiseValue) {
  Checked c = check(R"(optimizer t {
  scalar s = 0;
  s = row_sum(grad);
  param = param - s;
})");
  EXPECT_FALSE(c.rule);
  EXPECT_NE(c.messages().find("test.opt:3:7: error: scalar state 's' is assigned an elementwise value"),
            std::string::npos)
      << c.messages();
}

// --- Interpreter ------------------------------------------------------------

/// Runs `text` for one step on a tensor of `shape` and returns its params.
Vec stepOnce(const std::string &text, const Vec &param, const Vec &grad, std::vector<int64_t> shape,
             TensorState *after = nullptr) {
  Checked c = check(text);
  EXPECT_TRUE(c.rule) << c.messages();
  if (!c.rule)
    return {};
  Interpreter interpreter(*c.rule);
  HyperValues hypers = interpreter.defaultHypers();
  std::vector<TensorState> tensors{interpreter.initTensor(param, hypers, std::move(shape))};
  interpreter.step(tensors, {grad}, 1, hypers);
  if (after)
    *after = tensors[0];
  return tensors[0].param;
}

struct Dims {
  size_t batch, rows, cols;
};

/// Each element's expected value: f(b, r, c).
template <typename F>
Vec perElement(const Dims &d, F f) {
  Vec out;
  for (size_t b = 0; b < d.batch; ++b)
    for (size_t r = 0; r < d.rows; ++r)
      for (size_t c = 0; c < d.cols; ++c)
        out.push_back(f(b, r, c));
  return out;
}

void expectNear(const Vec &got, const Vec &want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_NEAR(got[i], want[i], 1e-12 * (1 + std::fabs(want[i]))) << "element " << i;
}

class MatrixInterpreter : public ::testing::TestWithParam<std::vector<int64_t>> {
protected:
  Dims dims() const {
    const std::vector<int64_t> &shape = GetParam();
    Dims d{1, 1, static_cast<size_t>(shape.back())};
    if (shape.size() >= 2)
      d.rows = static_cast<size_t>(shape[shape.size() - 2]);
    for (size_t k = 0; k + 2 < shape.size(); ++k)
      d.batch *= static_cast<size_t>(shape[k]);
    return d;
  }
  size_t at(const Dims &d, size_t b, size_t r, size_t c) const { return (b * d.rows + r) * d.cols + c; }
};

TEST_P(MatrixInterpreter, RowAndColumnReductionsBroadcastBack) {
  Dims d = dims();
  std::mt19937 rng(7 + static_cast<uint32_t>(GetParam().size()));
  Vec param = randomVector(rng, d.batch * d.rows * d.cols);
  Vec grad = randomVector(rng, param.size());
  // param + row_sum(grad) + 10 * col_mean(grad * grad)
  Vec got = stepOnce("optimizer t { param = param + row_sum(grad) + 10 * col_mean(grad * grad); }", param, grad,
                     GetParam());
  Vec want = perElement(d, [&](size_t b, size_t r, size_t c) {
    double rowSum = 0, colMean = 0;
    for (size_t k = 0; k < d.cols; ++k)
      rowSum += grad[at(d, b, r, k)];
    for (size_t k = 0; k < d.rows; ++k)
      colMean += grad[at(d, b, k, c)] * grad[at(d, b, k, c)];
    colMean /= static_cast<double>(d.rows);
    return param[at(d, b, r, c)] + rowSum + 10 * colMean;
  });
  expectNear(got, want);
}

TEST_P(MatrixInterpreter, FactoredStatesKeepOneValuePerRowOrColumn) {
  Dims d = dims();
  std::mt19937 rng(11 + static_cast<uint32_t>(GetParam().size()));
  Vec param = randomVector(rng, d.batch * d.rows * d.cols);
  Vec grad = randomVector(rng, param.size());
  TensorState after;
  // Adafactor's factored estimate: rsqrt(vr / mean over rows of vr) * rsqrt(vc).
  Vec got = stepOnce(R"(optimizer t {
  state vr[rows] = 2;
  state vc[cols] = 3;
  vr = vr + row_mean(grad * grad);
  vc = vc + col_mean(grad * grad);
  param = param - rsqrt(vr / col_mean(vr)) * rsqrt(vc) * grad;
})",
                     param, grad, GetParam(), &after);
  Vec vr(d.batch * d.rows, 2.0), vc(d.batch * d.cols, 3.0);
  for (size_t b = 0; b < d.batch; ++b)
    for (size_t r = 0; r < d.rows; ++r)
      for (size_t c = 0; c < d.cols; ++c) {
        double g2 = grad[at(d, b, r, c)] * grad[at(d, b, r, c)];
        vr[b * d.rows + r] += g2 / static_cast<double>(d.cols);
        vc[b * d.cols + c] += g2 / static_cast<double>(d.rows);
      }
  Vec rowMeanOfVr(d.batch, 0.0); // per matrix
  for (size_t b = 0; b < d.batch; ++b) {
    for (size_t r = 0; r < d.rows; ++r)
      rowMeanOfVr[b] += vr[b * d.rows + r];
    rowMeanOfVr[b] /= static_cast<double>(d.rows);
  }
  Vec want = perElement(d, [&](size_t b, size_t r, size_t c) {
    double estimate = 1 / std::sqrt(vr[b * d.rows + r] / rowMeanOfVr[b]) / std::sqrt(vc[b * d.cols + c]);
    return param[at(d, b, r, c)] - estimate * grad[at(d, b, r, c)];
  });
  expectNear(got, want);
  ASSERT_EQ(after.states.size(), 2u);
  expectNear(after.states[0], vr);
  expectNear(after.states[1], vc);
}

TEST_P(MatrixInterpreter, DimensionsAreTheLastTwoAndTheRank) {
  Dims d = dims();
  Vec param(d.batch * d.rows * d.cols, 1.0), grad(param.size(), 0.5);
  Vec got = stepOnce("optimizer t { param = 1000 * rank + 100 * rows + cols + grad; }", param, grad, GetParam());
  double rank = static_cast<double>(GetParam().size());
  for (double x : got)
    EXPECT_EQ(x, 1000 * rank + 100 * static_cast<double>(d.rows) + static_cast<double>(d.cols) + 0.5);
}

// A vector is one row; a matrix; a stack of 2 x 3 matrices of 5 columns.
INSTANTIATE_TEST_SUITE_P(Shapes, MatrixInterpreter,
                         ::testing::Values(std::vector<int64_t>{7}, std::vector<int64_t>{4, 6},
                                           std::vector<int64_t>{2, 3, 5}),
                         [](const auto &info) { return "rank" + std::to_string(info.param.size()); });

TEST(MatrixInterpreterErrors, AShapeMustHoldTheTensorsElements) {
  Checked c = check("optimizer t { state vr[rows]; vr = row_mean(grad); param = param - vr; }");
  ASSERT_TRUE(c.rule) << c.messages();
  Interpreter interpreter(*c.rule);
  HyperValues hypers = interpreter.defaultHypers();
  try {
    interpreter.initTensor(Vec(12, 1.0), hypers, {5, 2});
    FAIL() << "a 5x2 shape for 12 elements was accepted";
  } catch (const std::invalid_argument &e) {
    EXPECT_STREQ(e.what(), "the tensor has shape 5x2, which holds 10 elements, not its 12");
  }
  // A shape changed after initTensor is refused by step, before anything changes.
  std::vector<TensorState> tensors{interpreter.initTensor(Vec(12, 1.0), hypers, {3, 4})};
  tensors[0].shape = {4, 3};
  TensorState before = tensors[0];
  try {
    interpreter.step(tensors, {Vec(12, 0.5)}, 1, hypers);
    FAIL() << "a state of 3 rows was stepped as 4";
  } catch (const std::invalid_argument &e) {
    EXPECT_STREQ(e.what(), "state 'vr' of tensor 0 has 3 values, not the 4 its shape needs");
  }
  EXPECT_EQ(tensors[0].param, before.param);
  EXPECT_EQ(tensors[0].states, before.states);
}

} // namespace
} // namespace optdsl
