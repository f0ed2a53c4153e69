// Artifacts built at build time by optdsl_add_rule, loaded through the C ABI,
// against the same rules compiled in-process by the JIT. Both run the same
// IEEE f32 code from the same pipeline, so the descriptor must say what the
// JIT's table says and every step must give the same bits, whatever
// instruction set the artifact was compiled for.
#include "common/BranchHypers.h"
#include "optdsl/JIT.h"
#include "optrt/Artifact.h"
#include "optrt/Optimizer.h"
#include "optrt/Storage.h"
#include "optrt/Layout.h"

#include <gtest/gtest.h>

#include <algorithm>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>

namespace optdsl {
namespace {

std::string artifactPath(const std::string &name) {
  return std::string(ARTIFACT_DIR) + "/libopt_" + name + ".so";
}

std::shared_ptr<const optrt::RuleKernels> jit(const std::string &rule, const FixedHypers &fixed = {}) {
  // Never destroyed: JIT engines torn down during static destruction would
  // run after LLVM's own globals are gone.
  static auto &cache = *new std::map<std::string, std::shared_ptr<const optrt::RuleKernels>>();
  std::string key = rule + (fixed.empty() ? "" : "+fixed");
  auto &slot = cache[key];
  if (!slot)
    slot = jitCompileFile(std::string(OPTDSL_DSL_DIR) + "/" + rule + ".opt", fixed);
  return slot;
}

void expectSameDescription(const optrt::RuleKernels &a, const optrt::RuleKernels &b) {
  EXPECT_EQ(a.name, b.name);
  ASSERT_EQ(a.hypers.size(), b.hypers.size());
  for (size_t i = 0; i < a.hypers.size(); ++i) {
    EXPECT_EQ(a.hypers[i].name, b.hypers[i].name);
    EXPECT_EQ(a.hypers[i].defaultValue, b.hypers[i].defaultValue) << a.hypers[i].name;
    EXPECT_EQ(a.hypers[i].fixed, b.hypers[i].fixed) << a.hypers[i].name;
  }
  ASSERT_EQ(a.states.size(), b.states.size());
  for (size_t i = 0; i < a.states.size(); ++i) {
    EXPECT_EQ(a.states[i].name, b.states[i].name);
    EXPECT_EQ(a.states[i].scalar, b.states[i].scalar) << a.states[i].name;
    EXPECT_EQ(a.states[i].span, b.states[i].span) << a.states[i].name;
    EXPECT_EQ(a.states[i].scratch, b.states[i].scratch) << a.states[i].name;
  }
  EXPECT_EQ(a.phaseDomains, b.phaseDomains);
  EXPECT_EQ(a.columnSlots, b.columnSlots);
  ASSERT_EQ(a.axisReductions.size(), b.axisReductions.size());
  for (size_t i = 0; i < a.axisReductions.size(); ++i) {
    EXPECT_EQ(a.axisReductions[i].phase, b.axisReductions[i].phase);
    EXPECT_EQ(a.axisReductions[i].state, b.axisReductions[i].state);
    EXPECT_EQ(a.axisReductions[i].alongRows, b.axisReductions[i].alongRows);
    EXPECT_EQ(a.axisReductions[i].mean, b.axisReductions[i].mean);
  }
  ASSERT_EQ(a.reductions.size(), b.reductions.size());
  for (size_t i = 0; i < a.reductions.size(); ++i) {
    EXPECT_EQ(a.reductions[i].kind, b.reductions[i].kind);
    EXPECT_EQ(a.reductions[i].phase, b.reductions[i].phase);
  }
  EXPECT_EQ(a.usesRandom, b.usesRandom);
  ASSERT_EQ(a.inputs.size(), b.inputs.size());
  for (size_t i = 0; i < a.inputs.size(); ++i) {
    EXPECT_EQ(a.inputs[i].name, b.inputs[i].name);
    EXPECT_EQ(a.inputs[i].optional, b.inputs[i].optional) << a.inputs[i].name;
  }
  EXPECT_EQ(a.numPhases, b.numPhases);
  EXPECT_EQ(a.numUniforms, b.numUniforms);
  ASSERT_EQ(a.layouts.size(), 1u);
  ASSERT_EQ(b.layouts.size(), 1u);
  EXPECT_EQ(a.layouts[0].name, "f32");
  EXPECT_EQ(a.layouts[0].buffers, b.layouts[0].buffers);
}

/// Steps both tables over the same 50 odd-sized, misaligned tensors (some
/// read as matrices, some as stacks of them, the rest as vectors) and
/// requires identical params and states after every step.
void expectSameSteps(std::shared_ptr<const optrt::RuleKernels> artifact,
                     std::shared_ptr<const optrt::RuleKernels> reference,
                     const std::map<std::string, double> &hypers, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<size_t> sizes;
  size_t total = 1;
  for (int k = 0; k < 50; ++k)
    total += sizes.emplace_back(1 + rng() % 3000) + 1;
  std::normal_distribution<float> normal;
  std::vector<float> storageA(total), grads(total), inputValues(total);
  for (float &x : storageA)
    x = normal(rng);
  std::vector<float> storageB = storageA;
  std::vector<float *> paramsA, paramsB;
  std::vector<const float *> gradPointers;
  std::vector<const void *> inputPointers;
  for (size_t k = 0, offset = 1; k < sizes.size(); offset += sizes[k++] + 1) {
    paramsA.push_back(storageA.data() + offset);
    paramsB.push_back(storageB.data() + offset);
    gradPointers.push_back(grads.data() + offset);
    inputPointers.push_back(inputValues.data() + offset);
  }
  std::vector<std::vector<size_t>> shapes;
  for (size_t n : sizes)
    shapes.push_back(n % 21 == 0 ? std::vector<size_t>{3, n / 21, 7}
                     : n % 7 == 0 ? std::vector<size_t>{n / 7, 7}
                     : n % 2 == 0 ? std::vector<size_t>{2, n / 2}
                                  : std::vector<size_t>{n});
  optrt::Optimizer a(artifact, {2, 4096}), b(reference, {2, 4096});
  a.addGroup(paramsA, sizes, hypers, shapes);
  b.addGroup(paramsB, sizes, hypers, shapes);
  for (int step = 1; step <= 4; ++step) {
    for (float &g : grads)
      g = normal(rng) * 1e-2f;
    // Each input (Sophia's Hessian estimate, g_hat^2) on odd steps.
    optrt::StepOptions options;
    if (step % 2 == 1)
      for (const optrt::InputInfo &input : artifact->inputs) {
        for (float &x : inputValues)
          x = normal(rng) * normal(rng) * 1e-4f;
        options.inputs.push_back({input.name, {inputPointers}});
      }
    a.step({gradPointers}, options);
    b.step({gradPointers}, options);
    ASSERT_EQ(std::memcmp(storageA.data(), storageB.data(), total * sizeof(float)), 0)
        << "params differ after step " << step;
    for (const optrt::StateInfo &state : artifact->states) {
      for (size_t k = 0; k < sizes.size(); ++k) {
        if (state.scalar) {
          double sa = a.scalarState(state.name, 0, k), sb = b.scalarState(state.name, 0, k);
          ASSERT_EQ(std::memcmp(&sa, &sb, sizeof sa), 0) << state.name << " of tensor " << k;
        } else {
          auto sa = a.state(state.name, 0, k), sb = b.state(state.name, 0, k);
          ASSERT_EQ(std::memcmp(sa.data(), sb.data(), sa.size_bytes()), 0)
              << state.name << " of tensor " << k << " after step " << step;
        }
      }
    }
  }
}

class EveryRuleArtifact : public testing::TestWithParam<std::string> {};

TEST_P(EveryRuleArtifact, DescribesWhatTheJitDescribes) {
  auto artifact = optrt::loadArtifact(artifactPath(GetParam()));
  expectSameDescription(*artifact, *jit(GetParam()));
}

TEST_P(EveryRuleArtifact, StepsBitwiseLikeTheJit) {
  expectSameSteps(optrt::loadArtifact(artifactPath(GetParam())), jit(GetParam()),
                  test::kBranchHypers.at(GetParam()), 7);
}

// random() through the C ABI: the flag, and the same draws as the JIT.
TEST(Artifact, RandomDrawsStepLikeTheJit) {
  auto artifact = optrt::loadArtifact(artifactPath("noisy_sgd"));
  auto reference = jitCompileFile(std::string(ARTIFACT_RULES_DIR) + "/noisy_sgd.opt");
  EXPECT_TRUE(artifact->usesRandom);
  EXPECT_TRUE(reference->usesRandom);
  EXPECT_FALSE(jit("adamw")->usesRandom);
  expectSameDescription(*artifact, *reference);
  expectSameSteps(artifact, reference, {{"noise_eta", 0.3}}, 9);
}

INSTANTIATE_TEST_SUITE_P(Rules, EveryRuleArtifact,
                         testing::ValuesIn(test::kernelRules()));

TEST(Artifact, AnotherInstructionSetGivesTheSameBits) {
  auto sse = optrt::loadArtifact(artifactPath("ademamix_sse"));
  EXPECT_EQ(sse->cpu, "x86-64-v2");
  expectSameSteps(sse, jit("ademamix"), test::kBranchHypers.at("ademamix"), 11);
}

/// Every layout of a precision-layout artifact (the q8 ones with their
/// small-tensor fallbacks) has the JIT's buffers and steps to the JIT's bits.
TEST(Artifact, PrecisionLayoutsStepLikeTheJit) {
  auto artifact = optrt::loadArtifact(artifactPath("ademamix_layouts"));
  std::vector<std::string> written = {"f32", "param=bf16,master=f32,state=q8", "m1=q8,m2=bf16,nu=f32",
                                      "param=f16,grad=f16,state=f16", "param=bf16,state=bf16,rounding=stochastic"};
  auto reference = jitCompileFile(std::string(OPTDSL_DSL_DIR) + "/ademamix.opt", {}, written);
  ASSERT_EQ(artifact->layouts.size(), reference->layouts.size());
  for (size_t l = 0; l < artifact->layouts.size(); ++l) {
    EXPECT_EQ(artifact->layouts[l].name, reference->layouts[l].name);
    EXPECT_EQ(artifact->layouts[l].buffers, reference->layouts[l].buffers) << artifact->layouts[l].name;
  }
  // The fallbacks came along: q8 layouts' names with q8 states in f32.
  std::vector<std::string> names;
  for (const auto &layout : artifact->layouts)
    names.push_back(layout.name);
  EXPECT_NE(std::find(names.begin(), names.end(), "param=bf16,master=f32"), names.end());
  EXPECT_NE(std::find(names.begin(), names.end(), "m2=bf16"), names.end());

  for (const std::string &text : written) {
    SCOPED_TRACE(text);
    optrt::Layout layout = optrt::Layout::parse(text);
    std::vector<size_t> sizes = {300, 5000, 9001};
    std::mt19937 rng(4);
    std::normal_distribution<float> normal;
    std::vector<std::vector<float>> init;
    for (size_t n : sizes) {
      init.emplace_back(n);
      for (float &x : init.back())
        x = normal(rng);
    }
    auto encode = [&](optrt::Dtype dtype, const std::vector<float> &x) {
      std::vector<uint32_t> raw(x.size()); // room for any dtype
      optrt::encodeF32(dtype, x, raw.data(), nullptr);
      return raw;
    };
    std::vector<std::vector<uint32_t>> pa, pb;
    std::vector<void *> va, vb;
    for (auto &x : init) {
      pa.push_back(encode(layout.param, x));
      pb.push_back(pa.back());
    }
    for (size_t k = 0; k < sizes.size(); ++k) {
      va.push_back(pa[k].data());
      vb.push_back(pb[k].data());
    }
    optrt::Optimizer a(artifact, {.threads = 2, .chunkElements = 4096, .layout = text, .seed = 3});
    optrt::Optimizer b(reference, {.threads = 3, .chunkElements = 4096, .layout = text, .seed = 3});
    a.addGroupStored(va, sizes);
    b.addGroupStored(vb, sizes);
    for (int step = 1; step <= 3; ++step) {
      std::vector<std::vector<uint32_t>> grads;
      std::vector<const void *> g;
      for (size_t n : sizes) {
        std::vector<float> x(n);
        for (float &v : x)
          v = normal(rng) * 1e-2f;
        grads.push_back(encode(layout.grad, x));
        g.push_back(grads.back().data());
      }
      a.stepStored({g});
      b.stepStored({g});
      EXPECT_EQ(pa, pb) << "params differ after step " << step;
      for (const char *state : {"m1", "m2", "nu"})
        for (size_t k = 0; k < sizes.size(); ++k) {
          std::vector<float> sa = a.readState(state, 0, k), sb = b.readState(state, 0, k);
          ASSERT_EQ(std::memcmp(sa.data(), sb.data(), sa.size() * sizeof(float)), 0) << state << " " << k;
        }
    }
  }
}

/// The q8 kernels of an AVX-512F target without VBMI (x86-64-v4: 16-lane
/// vpermi2ps lookups, x / absmax) step to the bits of the JIT's (on a VBMI
/// host: 64-lane byte permutes, x * (1 / absmax) with its fix-up), over
/// whole and partial blocks, several chunks and a block of zeros.
/// The q8 layouts of an AdamW artifact (amsgrad fixed off) step to the bits
/// of the JIT's, over whole and partial blocks, several chunks and a block
/// of zeros.
void expectQ8LayoutsStepLikeTheJit(std::shared_ptr<const optrt::RuleKernels> artifact) {
  std::vector<std::string> written = {"state=q8", "param=bf16,master=f32,state=q8"};
  auto reference = jitCompileFile(std::string(OPTDSL_DSL_DIR) + "/adamw.opt", {{"amsgrad", 0}}, written);
  for (const std::string &text : written) {
    SCOPED_TRACE(text);
    optrt::Layout layout = optrt::Layout::parse(text);
    std::vector<size_t> sizes = {5000, 70001};
    std::mt19937 rng(9);
    std::normal_distribution<float> normal;
    std::vector<std::vector<uint32_t>> pa, pb;
    std::vector<void *> va, vb;
    for (size_t n : sizes) {
      std::vector<float> x(n);
      for (float &v : x)
        v = normal(rng);
      std::vector<uint32_t> raw(n);
      optrt::encodeF32(layout.param, x, raw.data(), nullptr);
      pa.push_back(raw);
      pb.push_back(raw);
    }
    for (size_t k = 0; k < sizes.size(); ++k) {
      va.push_back(pa[k].data());
      vb.push_back(pb[k].data());
    }
    optrt::Optimizer a(artifact, {.threads = 2, .chunkElements = 4096, .layout = text});
    optrt::Optimizer b(reference, {.threads = 2, .chunkElements = 4096, .layout = text});
    a.addGroupStored(va, sizes);
    b.addGroupStored(vb, sizes);
    for (int step = 1; step <= 3; ++step) {
      std::vector<std::vector<float>> grads;
      std::vector<const void *> g;
      for (size_t n : sizes) {
        grads.emplace_back(n);
        for (size_t i = 0; i < n; ++i)
          grads.back()[i] = i / 256 == 3 ? 0.0f : normal(rng) * std::exp2(static_cast<float>(i % 40) - 20.0f);
        g.push_back(grads.back().data());
      }
      a.stepStored({g});
      b.stepStored({g});
      EXPECT_EQ(pa, pb) << "params differ after step " << step;
      for (const char *state : {"exp_avg", "exp_avg_sq"})
        for (size_t k = 0; k < sizes.size(); ++k) {
          std::vector<float> sa = a.readState(state, 0, k), sb = b.readState(state, 0, k);
          ASSERT_EQ(std::memcmp(sa.data(), sb.data(), sa.size() * sizeof(float)), 0) << state << " " << k;
        }
    }
  }
}

/// The q8 kernels of an AVX-512F target without VBMI (x86-64-v4: 16-lane
/// vpermi2ps lookups, x / absmax) against the JIT's (on a VBMI host: 64-lane
/// byte permutes, x * (1 / absmax) with its fix-up).
TEST(Artifact, Q8WithoutVbmiStepsLikeTheJit) {
  auto artifact = optrt::loadArtifact(artifactPath("adamw_q8_v4"));
  EXPECT_EQ(artifact->cpu, "x86-64-v4");
  expectQ8LayoutsStepLikeTheJit(artifact);
}

/// The CPUs a portable artifact carries (optdsl::portableCpus), best first.
const std::vector<std::string> kPortableCpus = {"x86-64-v4+avx512vbmi+avx512bf16", "x86-64-v4", "x86-64-v3",
                                                "x86-64-v2"};

/// Loads artifact `name` once per CPU variant this machine can run
/// (OPTDSL_CPU_VARIANT), checks it runs that variant, and calls `check`;
/// returns the variants it ran.
template <typename Check> std::vector<std::string> forEachVariant(const std::string &name, Check check) {
  std::vector<std::string> ran;
  for (const std::string &cpu : kPortableCpus) {
    setenv("OPTDSL_CPU_VARIANT", cpu.c_str(), 1);
    std::shared_ptr<const optrt::RuleKernels> artifact;
    try {
      artifact = optrt::loadArtifact(artifactPath(name));
    } catch (const std::runtime_error &e) {
      unsetenv("OPTDSL_CPU_VARIANT");
      // Only a CPU that lacks the variant's features may skip it.
      EXPECT_NE(std::string(e.what()).find("this CPU lacks"), std::string::npos) << e.what();
      continue;
    }
    unsetenv("OPTDSL_CPU_VARIANT");
    EXPECT_EQ(artifact->cpu, cpu);
    SCOPED_TRACE(cpu);
    check(artifact);
    ran.push_back(cpu);
  }
  return ran;
}

/// A portable artifact (the default) carries kernels for every x86-64
/// level; each variant this CPU can run steps to the JIT's bits, and without
/// OPTDSL_CPU_VARIANT the loader picks the best.
TEST_P(EveryRuleArtifact, EveryCpuVariantStepsBitwiseLikeTheJit) {
  std::vector<std::string> ran = forEachVariant(GetParam(), [&](auto artifact) {
    expectSameSteps(artifact, jit(GetParam()), test::kBranchHypers.at(GetParam()), 13);
  });
  ASSERT_FALSE(ran.empty());
  EXPECT_EQ(ran.back(), "x86-64-v2"); // every x86-64 CPU runs the baseline
  EXPECT_EQ(optrt::loadArtifact(artifactPath(GetParam()))->cpu, ran.front());
}

TEST(Artifact, EveryCpuVariantOfQ8KernelsStepsLikeTheJit) {
  std::vector<std::string> ran = forEachVariant("adamw_q8_portable", expectQ8LayoutsStepLikeTheJit);
  EXPECT_GE(ran.size(), 2u);
}

TEST(Artifact, AMissingVariantIsRefusedWithTheListOfVariants) {
  setenv("OPTDSL_CPU_VARIANT", "x86-64-v9", 1);
  try {
    optrt::loadArtifact(artifactPath("adamw"));
    ADD_FAILURE() << "loaded a variant that does not exist";
  } catch (const std::runtime_error &e) {
    std::string message = e.what();
    EXPECT_NE(message.find("has no variant 'x86-64-v9'"), std::string::npos) << message;
    for (const std::string &cpu : kPortableCpus)
      EXPECT_NE(message.find("\n  " + cpu), std::string::npos) << message;
  }
  unsetenv("OPTDSL_CPU_VARIANT");
}

TEST(Artifact, FixedHyperIsFixedInTheDescriptor) {
  auto artifact = optrt::loadArtifact(artifactPath("adamw_no_amsgrad"));
  expectSameDescription(*artifact, *jit("adamw", {{"amsgrad", 0}}));
  expectSameSteps(artifact, jit("adamw", {{"amsgrad", 0}}), {{"weight_decay", 0.1}}, 3);
  float param = 1;
  optrt::Optimizer optimizer(artifact);
  optimizer.addGroup({&param}, {1});
  EXPECT_THROW(optimizer.setHyper("amsgrad", 1), std::invalid_argument);
}

TEST(Artifact, StaysLoadedWhileAnOptimizerUsesIt) {
  std::vector<float> params(100, 1.0f), grads(100, 0.5f);
  optrt::Optimizer optimizer(optrt::loadArtifact(artifactPath("sgd")));
  optimizer.addGroup({params.data()}, {params.size()}, {{"lr", 0.1}});
  optimizer.step({{grads.data()}});
  EXPECT_FLOAT_EQ(params[0], 1.0f - 0.1f * 0.5f);
}

} // namespace
} // namespace optdsl
