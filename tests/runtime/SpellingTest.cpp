// "Did you mean": the shared suggestion of the compiler, the runtime and
// the trainers.
#include "optrt/Spelling.h"

#include <gtest/gtest.h>

namespace {

TEST(Spelling, EditDistanceCountsSwapsAsOneEdit) {
  EXPECT_EQ(optrt::editDistance("beta1", "beta1"), 0u);
  EXPECT_EQ(optrt::editDistance("bta1", "beta1"), 1u);   // a deletion
  EXPECT_EQ(optrt::editDistance("alpah", "alpha"), 1u);  // a swap
  EXPECT_EQ(optrt::editDistance("lr", "eps"), 3u);
  EXPECT_EQ(optrt::editDistance("", "abc"), 3u);
}

TEST(Spelling, SuggestsTheClosestNameOnlyWhenClose) {
  std::vector<std::string> hypers{"lr", "beta1", "beta2", "alpha", "weight_decay"};
  EXPECT_EQ(optrt::didYouMean("alpah", hypers), "; did you mean 'alpha'?");
  EXPECT_EQ(optrt::didYouMean("weight_decy", hypers), "; did you mean 'weight_decay'?");
  EXPECT_EQ(optrt::didYouMean("bta1", hypers), "; did you mean 'beta1'?");
  // Ties go to the earlier candidate.
  EXPECT_EQ(optrt::didYouMean("beta", hypers), "; did you mean 'beta1'?");
  // Too far, or too short to guess from.
  EXPECT_EQ(optrt::didYouMean("momentum", hypers), "");
  EXPECT_EQ(optrt::didYouMean("m", hypers), "");
  EXPECT_EQ(optrt::didYouMean("lr", {}), "");
}

} // namespace
