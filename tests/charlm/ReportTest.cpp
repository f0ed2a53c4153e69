// "Tokens to match": where one run's validation curve first reaches
// another's final loss, linear between curve points.
#include "Report.h"

#include <gtest/gtest.h>

#include <sstream>

namespace charlm {
namespace {

RunResult run(const std::string &rule, const std::string &layout, std::vector<CurvePoint> curve) {
  RunResult result;
  result.rule = rule;
  result.layout = layout;
  result.label = layout == "f32" ? rule : rule + " " + layout;
  result.steps = curve.back().step;
  result.curve = std::move(curve);
  return result;
}

TEST(TokensToMatch, InterpolatesBetweenPointsAndSaysNever) {
  // fast ends at 1.5 and crosses slow's final 2.0 halfway from step 100
  // (2.5) to step 200 (1.5): step 150. slow never reaches 1.5.
  std::vector<RunResult> results{run("fast", "f32", {{0, 0, 4.0}, {100, 0, 2.5}, {200, 0, 1.5}}),
                                 run("slow", "f32", {{0, 0, 4.0}, {100, 0, 3.0}, {200, 0, 2.0}}),
                                 // Another layout: never compared with the f32 runs.
                                 run("slow", "state=q8", {{0, 0, 4.0}, {200, 0, 1.0}})};
  std::vector<Match> matches = tokensToMatch(results);
  ASSERT_EQ(matches.size(), 2u);
  EXPECT_EQ(matches[0].reacher->rule, "fast");
  EXPECT_EQ(matches[0].targetLoss, 2.0);
  ASSERT_TRUE(matches[0].reachedAtStep);
  EXPECT_DOUBLE_EQ(*matches[0].reachedAtStep, 150);
  EXPECT_EQ(matches[1].reacher->rule, "slow");
  EXPECT_FALSE(matches[1].reachedAtStep);

  std::ostringstream text;
  printTokensToMatch(matches, 1000, text);
  EXPECT_NE(text.str().find("fast                   reaches slow's final 2.0000 after 150k characters (step 150): "
                            "75% of the 200k it needed"),
            std::string::npos)
      << text.str();
  EXPECT_NE(text.str().find("slow                   never reaches fast's final 1.5000 in its 200k characters (its "
                            "last: 2.0000)"),
            std::string::npos)
      << text.str();
}

} // namespace
} // namespace charlm
