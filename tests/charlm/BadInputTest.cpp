// The trainer's answers to bad input: a clear message, a non-zero exit
// status, and nothing trained. Runs the program's entry point in-process.
#include "App.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <unistd.h>

namespace charlm {
namespace {

struct Outcome {
  int status;
  std::string out, err;
};

Outcome runCharlm(std::vector<std::string> args) {
  std::ostringstream out, err;
  // Tiny settings, so that a run that wrongly goes ahead is still quick.
  std::vector<std::string> all{"--steps", "3", "--hidden", "8", "--eval-chars", "64",
                               "--plot", (std::filesystem::temp_directory_path() / ("charlm-test-" + std::to_string(getpid()) + ".svg")).string()};
  all.insert(all.end(), args.begin(), args.end());
  int status = runTrainer(all, out, err);
  return {status, out.str(), err.str()};
}

// Training prints "step" lines; none may appear when the input is bad.
bool trained(const Outcome &run) { return run.out.find(" step ") != std::string::npos; }

const std::string kData = CHARLM_TEST_DATA;

/// The trainer refuses `args` before training, exiting with `status` (2: the
/// command line; 1: the input) and a message holding `text`.
void expectRefused(const std::vector<std::string> &args, int status, const std::string &text) {
  Outcome run = runCharlm(args);
  EXPECT_EQ(run.status, status) << run.err;
  EXPECT_NE(run.err.find(text), std::string::npos) << run.err;
  EXPECT_FALSE(trained(run)) << run.out;
}

TEST(BadInput, MissingCorpus) {
  Outcome run = runCharlm({"--corpus", "/nonexistent/corpus"});
  EXPECT_EQ(run.status, 1);
  EXPECT_NE(run.err.find("charlm: error: cannot read corpus '/nonexistent/corpus': No such file or directory"),
            std::string::npos)
      << run.err;
  EXPECT_FALSE(trained(run));
}

TEST(BadInput, UnreadableCorpusFile) {
  if (geteuid() == 0)
    GTEST_SKIP() << "root reads any file";
  auto dir = std::filesystem::temp_directory_path() / ("charlm-unreadable-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  { std::ofstream(dir / "text") << std::string(5000, 'a'); }
  std::filesystem::permissions(dir / "text", std::filesystem::perms::none);
  Outcome run = runCharlm({"--corpus", dir.string()});
  std::filesystem::remove_all(dir);
  EXPECT_EQ(run.status, 1);
  EXPECT_NE(run.err.find("cannot read corpus file '" + (dir / "text").string() + "': Permission denied"),
            std::string::npos)
      << run.err;
  EXPECT_FALSE(trained(run));
}

TEST(BadInput, EmptyCorpusDirectory) {
  auto dir = std::filesystem::temp_directory_path() / ("charlm-empty-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  Outcome run = runCharlm({"--corpus", dir.string()});
  std::filesystem::remove_all(dir);
  EXPECT_EQ(run.status, 1);
  EXPECT_NE(run.err.find("holds no regular file"), std::string::npos) << run.err;
}

// Both errors of the file are printed, clang-style, before anything trains.
TEST(BadInput, RuleFileWithErrors) {
  Outcome run = runCharlm({"--rule", kData + "/bad_rule.opt"});
  EXPECT_EQ(run.status, 1);
  EXPECT_NE(run.err.find("bad_rule.opt:6:7: error: unknown name 'bta1'; did you mean 'beta1'?"), std::string::npos)
      << run.err;
  EXPECT_NE(run.err.find("error: unknown name 'undefined_name'"), std::string::npos) << run.err;
  EXPECT_FALSE(trained(run));
  EXPECT_EQ(run.out.find("corpus"), std::string::npos) << "the corpus was read before the rule was checked";
}

TEST(BadInput, MissingRuleFile) {
  Outcome run = runCharlm({"--rule", "/nonexistent/rule.opt"});
  EXPECT_EQ(run.status, 1);
  EXPECT_NE(run.err.find("/nonexistent/rule.opt"), std::string::npos) << run.err;
  EXPECT_FALSE(trained(run));
}

TEST(BadInput, UnknownHyperIsNamed) {
  Outcome run = runCharlm({"--hyper", "bta1=0.9"});
  EXPECT_EQ(run.status, 2);
  EXPECT_NE(run.err.find("charlm: error: unknown hyper 'bta1'; did you mean 'beta1'? (adamw has lr beta1"),
            std::string::npos)
      << run.err;
  EXPECT_NE(run.err.find("ademamix has lr beta1 beta2 beta3 alpha"), std::string::npos) << run.err;
  EXPECT_FALSE(trained(run));
}

TEST(BadInput, HyperOfAnotherRule) {
  // alpha is AdEMAMix's: fine for the default run, unknown for AdamW alone.
  expectRefused({"--rule", "adamw", "--hyper", "alpha=3"}, 2, "unknown hyper 'alpha'");
  expectRefused({"--hyper", "adamw:alpha=3"}, 2, "unknown hyper 'alpha' for adamw");
  expectRefused({"--hyper", "lion:lr=1e-4"}, 2, "no rule named 'lion' in this run (rules: adamw, ademamix)");
  expectRefused({"--hyper", "adamx:lr=1e-4"}, 2, "no rule named 'adamx' in this run; did you mean 'adamw'?");
  expectRefused({"--hyper", "ademamix:alpah=3"}, 2, "unknown hyper 'alpah' for ademamix; did you mean 'alpha'?");
}

TEST(BadInput, MisspeltRuleGetsASuggestion) {
  expectRefused({"--rule", "adamx"}, 1,
                "unknown rule 'adamx'; did you mean 'adamw'? (built-in rules: adamw, ademamix; any other --rule is "
                "the path of a .opt file)");
  expectRefused({"--rule", "sophia"}, 1, "unknown rule 'sophia' (built-in rules");
}

TEST(BadInput, HyperFixedAtBuildTime) {
  expectRefused({"--hyper", "amsgrad=1"}, 2, "adamw was compiled with amsgrad fixed to 0");
}

TEST(BadInput, MalformedOptions) {
  expectRefused({"--stepz", "3"}, 2, "unknown option '--stepz'; did you mean '--steps'?");
  // The hint to --help comes once, under the message.
  Outcome run = runCharlm({"--stepz", "3"});
  EXPECT_EQ(run.err, "charlm: error: unknown option '--stepz'; did you mean '--steps'?\n"
                     "(charlm --help lists the options)\n");
  expectRefused({"--hyper", "lr"}, 2, "--hyper expects [RULE:]NAME=VALUE, got 'lr'");
  expectRefused({"--hyper", "lr=fast"}, 2, "--hyper lr expects a number, got 'fast'");
  expectRefused({"--steps", "-5"}, 2, "--steps expects an integer");
  expectRefused({"--clip", "0"}, 2, "--clip expects a finite positive norm");
  expectRefused({"--loss-scale", "-4"}, 2, "--loss-scale expects 'dynamic' or a finite positive scale, got '-4'");
  expectRefused({"--loss-scale", "auto"}, 2, "--loss-scale expects a number, got 'auto'");
}

TEST(BadInput, LayoutsTheTrainerCannotRun) {
  expectRefused({"--layout", "param=bf16"}, 2, "charlm keeps 16-bit params with an f32 master (master=f32)");
  expectRefused({"--layout", "state=q4"}, 2, "--layout: ");
  expectRefused({"--layout", "state=q4"}, 2, "unknown dtype 'q4'");
  expectRefused({"--layout", "state=q8", "--layout", "state=q8"}, 2, "--layout state=q8 is given twice");
  // A layout the built-in artifacts were not compiled for: named, with theirs.
  expectRefused({"--layout", "state=f16"}, 1,
                "adamw (built-in) has no kernels for layout state=f16 (it has: f32, state=bf16, state=q8, "
                "param=bf16,master=f32, param=f16,grad=f16,master=f32");
}

TEST(BadInput, HyperOutsideItsDeclaredRange) {
  expectRefused({"--hyper", "beta2=1"}, 2, "--hyper beta2: adamw allows beta2 in [0, 1) only");
}

// The good path of the same entry point, with a user's rule file compiled at
// run time next to a built-in one: both train, the table and plot come out.
// A rule from a file takes the trainer's value of every hyper it declares,
// as the built-in ones do, and the banner shows each rule's every value.
TEST(GoodInput, UserRuleFileTrainsNextToABuiltInRule) {
  std::string rule = kData + "/../../../examples/charlm/rules/cautious_adamw.opt";
  Outcome run = runCharlm({"--rule", "adamw", "--rule", rule, "--hyper", "cautious_adamw:eps=1e-07"});
  ASSERT_EQ(run.status, 0) << run.err;
  EXPECT_NE(run.out.find("rule       adamw (built-in): lr=0.003 beta1=0.9 beta2=0.99 eps=1e-08 weight_decay=0.1 "
                         "amsgrad=0(fixed)\n"),
            std::string::npos)
      << run.out;
  EXPECT_NE(run.out.find("rule       cautious_adamw (" + rule + "): lr=0.003 beta1=0.9 beta2=0.99 eps=1e-07 "
                         "weight_decay=0.1\n"),
            std::string::npos)
      << run.out;
  EXPECT_NE(run.out.find("loss curves: "), std::string::npos) << run.out;
  EXPECT_TRUE(trained(run));
}

// The plot comes out as SVG and PNG through gnuplot, with a legend entry
// per run and the data and script beside the pictures.
TEST(GoodInput, PlotIsDrawnAsSvgAndPng) {
  auto stem = std::filesystem::temp_directory_path() / ("charlm-plot-" + std::to_string(getpid()));
  Outcome run = runCharlm({"--plot", stem.string() + ".svg", "--layout", "f32", "--layout", "state=q8"});
  ASSERT_EQ(run.status, 0) << run.err;
  std::ifstream svgFile(stem.string() + ".svg"), png(stem.string() + ".png", std::ios::binary);
  std::stringstream svg;
  svg << svgFile.rdbuf();
  for (const char *label : {"adamw state=q8", "ademamix state=q8", "unigram entropy", "validation loss"})
    EXPECT_NE(svg.str().find(label), std::string::npos) << label;
  char magic[8] = {};
  png.read(magic, 8);
  EXPECT_EQ(std::string(magic + 1, 3), "PNG");
  EXPECT_TRUE(std::filesystem::exists(stem.string() + ".gp"));
  EXPECT_TRUE(std::filesystem::exists(stem.string() + ".dat"));
  for (const char *suffix : {".svg", ".png", ".gp", ".dat"})
    std::filesystem::remove(stem.string() + suffix);
}

// The table gives each run's bytes per parameter by part, from the
// runtime's memory report: bf16 params and grads with an f32 master and two
// f32 states are the mission's 16 bytes; 8-bit states bring it to ~10.
TEST(GoodInput, MemoryTableByPart) {
  Outcome run = runCharlm({"--rule", "adamw", "--layout", "f32", "--layout", "param=bf16,grad=bf16,master=f32",
                           "--layout", "param=bf16,grad=bf16,master=f32,state=q8"});
  ASSERT_EQ(run.status, 0) << run.err;
  auto row = [&](const std::string &name) {
    size_t at = run.out.find("\n" + name + " ");
    return at == std::string::npos ? std::string() : run.out.substr(at + 1, run.out.find('\n', at + 1) - at - 1);
  };
  std::istringstream f32(row("adamw")), mixed(row("adamw param=bf16,grad=bf16,master=f32"));
  std::string name, layout;
  double loss, bits, param, grad, master, state, total;
  ASSERT_TRUE(f32 >> name >> loss >> bits >> param >> grad >> master >> state >> total) << run.out;
  EXPECT_EQ(param, 4);
  EXPECT_EQ(grad, 4);
  EXPECT_EQ(master, 0);
  EXPECT_EQ(total, 16);
  ASSERT_TRUE(mixed >> name >> layout >> loss >> bits >> param >> grad >> master >> state >> total) << run.out;
  EXPECT_EQ(param, 2);
  EXPECT_EQ(grad, 2);
  EXPECT_EQ(master, 4);
  EXPECT_EQ(state, 8);
  EXPECT_EQ(total, 16);
  EXPECT_NE(row("adamw param=bf16,grad=bf16,master=f32,state=q8"), "") << run.out;
}

// Each rule once per layout: the runs are named by both, and the table gives
// each its state bytes per parameter (8-bit states: about 2 for AdamW's two
// states, plus the small tensors kept in f32).
TEST(GoodInput, EveryRuleRunsUnderEveryLayout) {
  Outcome run = runCharlm({"--layout", "f32", "--layout", "state=q8"});
  ASSERT_EQ(run.status, 0) << run.err;
  for (const char *name : {"adamw  ", "adamw state=q8", "ademamix  ", "ademamix state=q8"})
    EXPECT_NE(run.out.find(name), std::string::npos) << name << "\n" << run.out;
  EXPECT_TRUE(trained(run));
}

} // namespace
} // namespace charlm
