// Layouts a rule cannot take are refused with a message that names the
// problem.
#include "optrt/LayoutCheck.h"

#include <gtest/gtest.h>

namespace {

using namespace optrt;

const std::vector<StateInfo> kStates = {{"m1", false}, {"nu", false}, {"mu_product", true}};

std::string errorOf(const std::string &text) {
  try {
    validateLayout(Layout::parse(text), kStates, "ademamix");
  } catch (const std::invalid_argument &e) {
    return e.what();
  }
  return "";
}

TEST(LayoutCheck, AcceptsWhatTheRuleCanTake) {
  for (const char *ok : {"f32", "state=q8", "state=bf16,nu=f32", "m1=q8,nu=f16",
                         "param=bf16,master=f32", "param=f16,master=f32,state=q8",
                         "param=bf16", "mu_product=f32", "grad=bf16"})
    EXPECT_EQ(errorOf(ok), "") << ok;
}

TEST(LayoutCheck, UnknownStateListsTheRulesStates) {
  std::string e = errorOf("m2=q8");
  EXPECT_NE(e.find("no state 'm2'"), std::string::npos) << e;
  EXPECT_NE(e.find("m1, nu, mu_product (scalar)"), std::string::npos) << e;
  EXPECT_NE(e.find("ademamix"), std::string::npos) << e;
}

TEST(LayoutCheck, ScalarStateCannotBeNarrowed) {
  for (const char *dtype : {"q8", "bf16", "f16"}) {
    std::string e = errorOf(std::string("mu_product=") + dtype);
    EXPECT_NE(e.find("'mu_product' is a per-tensor scalar"), std::string::npos) << e;
    EXPECT_NE(e.find(std::string("cannot be ") + dtype), std::string::npos) << e;
  }
}

TEST(LayoutCheck, MasterWithF32ParamsIsAnError) {
  std::string e = errorOf("master=f32");
  EXPECT_NE(e.find("master=f32 with f32 params"), std::string::npos) << e;
  EXPECT_NE(errorOf("param=f32,master=f32,state=q8"), "");
}

TEST(LayoutCheck, UnknownDtypeIsRefusedByTheParser) {
  try {
    Layout::parse("state=q4");
    FAIL() << "q4 accepted";
  } catch (const std::invalid_argument &e) {
    EXPECT_NE(std::string(e.what()).find("unknown dtype 'q4'"), std::string::npos) << e.what();
  }
}

} // namespace
