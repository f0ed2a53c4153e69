// Bytes per parameter per layout, on GPT-2 small's tensors; also prints the
// table of docs/layouts.md (run: optdsl-layout-tests --gtest_filter='*Table*').
#include "optrt/MemoryReport.h"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <regex>
#include <sstream>

namespace {

using namespace optrt;

std::vector<size_t> gpt2Small() { return gpt2SmallTensorSizes(); }

// A rule's states as its .opt file declares them (`state NAME;`, `scalar
// NAME = ...;`), so the table follows the rule library.
std::vector<StateInfo> statesOf(const std::string &rule) {
  std::ifstream in(std::string(OPTDSL_DSL_DIR) + "/" + rule + ".opt");
  EXPECT_TRUE(in) << rule;
  std::stringstream text;
  text << in.rdbuf();
  std::vector<StateInfo> states;
  std::regex decl(R"((?:^|\n)\s*(state|scalar)\s+([A-Za-z_]\w*)\s*[;=])");
  std::string s = text.str();
  for (auto it = std::sregex_iterator(s.begin(), s.end(), decl); it != std::sregex_iterator(); ++it)
    states.push_back({(*it)[2], (*it)[1] == "scalar"});
  return states;
}

TEST(MemoryReport, GptSmallParameterCount) {
  MemoryReport r = memoryReport({}, Layout::parse("f32"), gpt2Small());
  EXPECT_EQ(r.numParams, 124439808u); // GPT-2 small's published count
  EXPECT_EQ(r.numTensors, 2u + 12 * 12 + 2);
  EXPECT_EQ(r.total(), 8.0);
}

TEST(MemoryReport, AdemamixQ8StatesUnder3Point1BytesPerParam) {
  std::vector<StateInfo> states = statesOf("ademamix");
  ASSERT_EQ(states.size(), 3u);
  MemoryReport f32 = memoryReport(states, Layout::parse("f32"), gpt2Small());
  EXPECT_EQ(f32.state, 12.0);
  MemoryReport q8 = memoryReport(states, Layout::parse("state=q8"), gpt2Small());
  EXPECT_LE(q8.state, 3.1);
  // Straightforward count: 1 byte + 4 per 256-block for big tensors, 4 bytes
  // for tensors under 4096 elements, three states.
  double bytes = 0;
  for (size_t n : gpt2Small())
    bytes += n < 4096 ? 4.0 * n : n + 4.0 * std::ceil(n / 256.0);
  EXPECT_DOUBLE_EQ(q8.state, 3 * bytes / 124439808.0);
  EXPECT_GT(q8.state, 3 * (1 + 4.0 / 256)); // the small-tensor fallback costs a little
  EXPECT_EQ(q8.param, 4.0);
  EXPECT_EQ(q8.master, 0.0);
}

TEST(MemoryReport, PartsFollowTheLayout) {
  std::vector<StateInfo> states = {{"m", false}, {"v", false}, {"count", true}};
  std::vector<size_t> sizes = {100000, 1000};
  MemoryReport r = memoryReport(states, Layout::parse("param=bf16,grad=bf16,master=f32,m=q8,v=bf16"),
                                sizes);
  double params = 101000;
  EXPECT_EQ(r.param, 2.0);
  EXPECT_EQ(r.grad, 2.0);
  EXPECT_EQ(r.master, 4.0);
  EXPECT_DOUBLE_EQ(r.states[0].bytesPerParam, (100000 + 4 * 391 + 4 * 1000) / params);
  EXPECT_DOUBLE_EQ(r.states[1].bytesPerParam, 2.0);
  EXPECT_DOUBLE_EQ(r.states[2].bytesPerParam, 16 / params); // one f64 per tensor
  EXPECT_DOUBLE_EQ(r.state, r.states[0].bytesPerParam + 2.0 + 16 / params);
  // The small-tensor threshold is configurable: 0 quantises every tensor.
  MemoryReport all = memoryReport(states, Layout::parse("state=q8"), sizes, {0, 256});
  EXPECT_DOUBLE_EQ(all.states[0].bytesPerParam, (100000 + 4 * 391 + 1000 + 4 * 4) / params);
  EXPECT_NE(r.str().find("master"), std::string::npos);
}

// bitsandbytes quantises a tensor of exactly min_8bit_size elements.
TEST(MemoryReport, SmallTensorThresholdIsExclusive) {
  std::vector<StateInfo> states = {{"m", false}};
  MemoryReport at = memoryReport(states, Layout::parse("state=q8"), {4096});
  EXPECT_DOUBLE_EQ(at.state, (4096 + 4 * 16) / 4096.0);
  MemoryReport below = memoryReport(states, Layout::parse("state=q8"), {4095});
  EXPECT_DOUBLE_EQ(below.state, 4.0);
}

TEST(MemoryReport, RefusesBadInput) {
  std::vector<StateInfo> states = {{"m", false}, {"count", true}};
  EXPECT_THROW(memoryReport(states, Layout::parse("f32"), {}), std::invalid_argument);
  EXPECT_THROW(memoryReport(states, Layout::parse("f32"), {10, 0}), std::invalid_argument);
  EXPECT_THROW(memoryReport(states, Layout::parse("count=q8"), {10}), std::invalid_argument);
  EXPECT_THROW(memoryReport(states, Layout::parse("master=f32"), {10}), std::invalid_argument);
}

// The memory table of docs/layouts.md.
TEST(MemoryReport, PrintTable) {
  const char *layouts[] = {"f32",
                           "state=bf16",
                           "state=q8",
                           "param=bf16,master=f32",
                           "param=bf16,master=f32,state=bf16",
                           "param=bf16,master=f32,state=q8",
                           "param=bf16,grad=bf16,state=q8"};
  std::printf("| rule (states) | layout | param | grad | master | state | total |\n"
              "| --- | --- | ---: | ---: | ---: | ---: | ---: |\n");
  for (const char *rule : {"adamw", "ademamix"}) {
    std::vector<StateInfo> states = statesOf(rule);
    std::string names;
    for (const StateInfo &s : states)
      names += (names.empty() ? "" : ", ") + s.name;
    for (const char *text : layouts) {
      MemoryReport r = memoryReport(states, Layout::parse(text), gpt2Small());
      std::printf("| %s (%s) | `%s` | %.3f | %.3f | %.3f | %.3f | %.3f |\n", rule, names.c_str(),
                  text, r.param, r.grad, r.master, r.state, r.total());
    }
  }
}

} // namespace
