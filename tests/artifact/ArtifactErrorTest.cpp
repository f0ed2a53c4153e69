// The loader's refusals: each names the file and the problem, and a refused
// layout changes nothing.
#include "optrt/Artifact.h"
#include "optrt/Optimizer.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

namespace optrt {
namespace {

std::string fake(const std::string &name) { return std::string(FAKE_DIR) + "/lib" + name + ".so"; }

/// The message of the std::runtime_error loadArtifact(path) throws.
std::string loadError(const std::string &path) {
  try {
    loadArtifact(path);
  } catch (const std::runtime_error &e) {
    return e.what();
  }
  ADD_FAILURE() << "loadArtifact(" << path << ") did not throw";
  return "";
}

void expectParts(const std::string &message, const std::vector<std::string> &parts) {
  for (const std::string &part : parts)
    EXPECT_NE(message.find(part), std::string::npos) << "'" << part << "' not in: " << message;
}

TEST(ArtifactErrors, MissingFile) {
  std::string path = std::string(FAKE_DIR) + "/libopt_nothing_here.so";
  expectParts(loadError(path), {path, "cannot load", "No such file"});
}

TEST(ArtifactErrors, NotASharedLibrary) {
  std::string path = std::string(FAKE_DIR) + "/text_file.so";
  std::ofstream(path) << "optimizer sgd { }\n";
  expectParts(loadError(path), {path, "cannot load"});
  std::remove(path.c_str());
}

TEST(ArtifactErrors, ALibraryThatIsNoArtifact) {
  expectParts(loadError(fake("fake_not_an_artifact")),
              {"not an OptDSL kernel artifact", "optdsl_abi_version", "--emit=so"});
}

TEST(ArtifactErrors, AnotherAbiVersion) {
  expectParts(loadError(fake("fake_future_abi")),
              {"ABI version 7", "reads version 6", "rebuild"});
}

// Version 5 added matrices (state spans, phase domains, row and column
// reductions) to the descriptor: an artifact built before them is refused by
// its version, not read with a shorter struct.
TEST(ArtifactErrors, AnArtifactOfTheVersionBeforeMatrices) {
  expectParts(loadError(fake("fake_abi_v4")), {"ABI version 4", "reads version 6", "rebuild"});
}

TEST(ArtifactErrors, AMalformedDescriptor) {
  expectParts(loadError(fake("fake_null_rule")), {"malformed descriptor", "rule is null"});
}

TEST(ArtifactErrors, ADefaultOutsideItsRange) {
  expectParts(loadError(fake("fake_default_outside")),
              {"malformed descriptor", "hyper 'lr'", "default 0.5", "outside its range (0, 0.25]"});
}

TEST(ArtifactErrors, ACpuFeatureThisMachineLacks) {
  // "madeup512" stands for a feature this CPU lacks (e.g. avx512f on an
  // AVX2 machine): refused before any kernel could raise SIGILL.
  std::string message = loadError(fake("fake_missing_feature"));
  expectParts(message, {"madeup512", "this CPU lacks", "--cpu"});
  EXPECT_EQ(message.find("sse4.2"), std::string::npos) << "sse4.2 is present: " << message;
}

TEST(ArtifactErrors, AFatArtifactWithNoVariantForThisCpu) {
  // The message lists what the artifact has and what this CPU lacks for each.
  std::string message = loadError(fake("fake_variants"));
  expectParts(message, {"has no kernels this CPU can run", "future-cpu (this CPU lacks madeup512)",
                        "future-baseline (this CPU lacks madeup128)"});
}

TEST(ArtifactErrors, HandWrittenDescriptorLoadsAndSteps) {
  // The C header's structs, filled by a C compiler, read back field by field.
  auto rule = loadArtifact(fake("fake_hand_written"));
  EXPECT_EQ(rule->name, "hand_sgd");
  EXPECT_EQ(rule->cpu, "x86-64");
  ASSERT_EQ(rule->hypers.size(), 1u);
  EXPECT_EQ(rule->hypers[0].name, "lr");
  EXPECT_EQ(rule->hypers[0].defaultValue, 0.5);
  EXPECT_EQ(rule->hypers[0].range.str(), "(0, 1]");
  std::vector<float> params = {1, 2, 3}, grads = {1, 1, -2};
  Optimizer optimizer(rule);
  optimizer.addGroup({params.data()}, {3});
  optimizer.step({{grads.data()}});
  EXPECT_EQ(params, (std::vector<float>{0.5f, 1.5f, 4.0f}));
}

TEST(ArtifactErrors, ALayoutTheArtifactWasNotBuiltFor) {
  auto rule = loadArtifact(fake("fake_hand_written"));
  try {
    Optimizer optimizer(rule, {.layout = "param=bf16,master=f32"});
    FAIL() << "a bf16 layout was accepted";
  } catch (const std::invalid_argument &e) {
    expectParts(e.what(), {"hand_sgd", "not compiled for layout 'param=bf16,master=f32'",
                           "its layouts are: f32"});
  }
}

TEST(ArtifactErrors, AnUnwrittenLayout) {
  auto rule = loadArtifact(fake("fake_hand_written"));
  EXPECT_THROW(Optimizer(rule, {.layout = "param=f64"}), std::invalid_argument);
}

} // namespace
} // namespace optrt
