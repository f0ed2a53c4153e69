// The JIT's per-layout kernels (bf16/f16 params and grads, f32 master, bf16,
// f16 and q8 states) against the same rule's f32 kernels and the storage
// reference (optrt/Storage.h).
//
// Bit for bit, per step: an f32 "shadow" optimizer is given, before every
// step, exactly the values the layout's optimizer holds (decoded params or
// master, decoded states, decoded grads). Arithmetic is always f32 and the
// element code is the same, so after the step the layout's stored bits must
// be exactly the storage reference applied to the shadow's new f32 values:
// f32ToBf16 / f32ToF16 of each value (round to nearest even), the master equal
// to the shadow's param, and q8 states equal to quantizeBlockwise of the
// shadow's new state (compared decoded: the maps are strictly increasing, so
// equal decoded values with equal absmax are equal codes). Gradients include
// +-Inf and NaN in one block, which the q8 policy keeps from its neighbours.
//
// Per-step error bounds that follow from the formats are then asserted on
// the same data: bf16 within 2^-8 |x| of the f32 value (half an ulp of 8
// significant bits), f16 within 2^-11 |x| + 2^-25 (normal / subnormal),
// q8 within optrt::q8ErrorBound of the value in its block.
#include "optdsl/JIT.h"
#include "optdsl/Sema.h"
#include "optrt/Optimizer.h"
#include "optrt/Storage.h"

#include "common/JitKernels.h"
#include "common/Q8BoundaryValues.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <iostream>

namespace optdsl {
namespace {

using optrt::Dtype;

std::shared_ptr<const optrt::RuleKernels> kernelsFor(const std::string &rule,
                                                     const std::vector<std::string> &layouts,
                                                     const FixedHypers &fixed = {}) {
  return test::jitKernels(rule, layouts, fixed);
}

std::string readRuleSource(const std::string &rule) {
  std::ifstream in(std::string(OPTDSL_DSL_DIR) + "/" + rule + ".opt");
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

/// The kernels of a rule given as text (a variant of a library rule).
std::shared_ptr<const optrt::RuleKernels> kernelsForSource(const std::string &text,
                                                           const std::vector<std::string> &layouts,
                                                           const FixedHypers &fixed = {}) {
  std::ostringstream rendered;
  auto rule = compileSource(std::make_shared<SourceFile>("variant.opt", text), rendered);
  if (!rule)
    throw std::runtime_error(rendered.str());
  return jitCompile(*rule, fixed, layouts);
}

bool isQ8(Dtype d) { return d == Dtype::Q8Signed || d == Dtype::Q8Unsigned; }

/// Caller-owned storage of one tensor in the layout's dtype.
struct Stored {
  Dtype dtype;
  std::vector<uint16_t> half;
  std::vector<float> full;
  void *data() { return dtype == Dtype::F32 ? static_cast<void *>(full.data()) : half.data(); }
  void encode(const std::vector<float> &values) {
    if (dtype == Dtype::F32)
      full = values;
    else {
      half.resize(values.size());
      optrt::encodeF32(dtype, values, half.data(), nullptr);
    }
  }
  std::vector<float> decode() const {
    if (dtype == Dtype::F32)
      return full;
    std::vector<float> out(half.size());
    optrt::decodeToF32(dtype, half.data(), nullptr, out);
    return out;
  }
};

uint32_t bits(float x) { return std::bit_cast<uint32_t>(x); }

/// Per-step bound of a value stored in `dtype` from the exact f32 value x
/// (block absmax a for q8).
double formatBound(Dtype dtype, float x, float absmax) {
  switch (dtype) {
  case Dtype::F32:
    return 0;
  case Dtype::BF16:
    return std::ldexp(std::fabs(x), -8);
  case Dtype::F16:
    return std::ldexp(std::fabs(x), -11) + std::ldexp(1.0, -25);
  default:
    return optrt::q8ErrorBound(optrt::q8MapFor(dtype), x, absmax);
  }
}

/// The reference encoding of one tensor's buffer as the kernel must write
/// it: round to nearest, or for rounding=stochastic bf16 the stochastic
/// rounding with the documented bits (Optimizer.h: key =
/// stochasticBits(seed, step, tensor), buffer b's stream key ^ b*0x9E3779B9).
std::vector<uint16_t> reference16(Dtype dtype, const std::vector<float> &x, bool stochastic, uint32_t seed,
                                  uint64_t step, size_t tensor, size_t buffer) {
  std::vector<uint16_t> out(x.size());
  if (stochastic && dtype != Dtype::F32) {
    uint32_t key = optrt::stochasticBits(seed, step, tensor) ^ static_cast<uint32_t>(buffer * 0x9E3779B9u);
    for (size_t i = 0; i < x.size(); ++i) {
      uint32_t random = optrt::stochasticBitsFromKey(key, i);
      out[i] = dtype == Dtype::BF16 ? optrt::f32ToBf16Stochastic(x[i], random)
                                    : optrt::f32ToF16Stochastic(x[i], random);
    }
  } else {
    optrt::encodeF32(dtype, x, out.data(), nullptr);
  }
  return out;
}

/// The index of the buffer with `role` (and state `state`) in layout `name`.
size_t bufferIndex(const optrt::RuleKernels &k, const std::string &name, optrt::BufferRole role,
                   int state = -1) {
  for (const auto &layout : k.layouts)
    if (layout.name == name)
      for (size_t b = 0; b < layout.buffers.size(); ++b)
        if (layout.buffers[b].role == role && (state < 0 || layout.buffers[b].state == state))
          return b;
  ADD_FAILURE() << "no such buffer in " << name;
  return 0;
}

size_t stateIndex(const optrt::RuleKernels &k, const std::string &name) {
  for (size_t s = 0; s < k.states.size(); ++s)
    if (k.states[s].name == name)
      return s;
  return k.states.size();
}

/// Stochastic rounding is within one ulp, not half: 2^-7 |x| for bf16,
/// 2^-10 |x| + 2^-24 for f16.
double stochasticBound(Dtype dtype, float x) {
  if (dtype == Dtype::BF16)
    return std::ldexp(std::fabs(x), -7);
  if (dtype == Dtype::F16)
    return std::ldexp(std::fabs(x), -10) + std::ldexp(1.0, -24);
  return 0;
}

struct LayoutCase {
  std::string rule;
  std::string layout;
};

void PrintTo(const LayoutCase &c, std::ostream *os) { *os << c.rule << " / " << c.layout; }

class LayoutKernel : public ::testing::TestWithParam<LayoutCase> {};

void checkAgainstShadow(const std::shared_ptr<const optrt::RuleKernels> &kernels, const std::string &text,
                        unsigned threads = 2, bool checkParams = true) {
  optrt::Layout layout = optrt::Layout::parse(text);
  const uint32_t seed = 1234;
  // 100: under the small-tensor threshold (q8 states stay f32); 5000: a
  // partial last block with a scalar tail; 70001: several chunks.
  std::vector<size_t> sizes = {100, 5000, 70001};
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;

  std::vector<Stored> params;
  std::vector<std::vector<float>> shadowParams;
  for (size_t n : sizes) {
    std::vector<float> values(n);
    for (float &v : values)
      v = normal(rng);
    params.push_back({layout.param, {}, {}});
    params.back().encode(values);
    shadowParams.push_back(params.back().decode());
  }
  optrt::Optimizer optimizer(kernels, {.threads = threads, .chunkElements = 4096, .layout = text, .seed = seed});
  optrt::Optimizer shadow(kernels, {.threads = 1, .chunkElements = 4096, .layout = "f32"});
  std::vector<void *> stored;
  std::vector<float *> shadowPointers;
  for (size_t k = 0; k < sizes.size(); ++k) {
    stored.push_back(params[k].data());
    shadowPointers.push_back(shadowParams[k].data());
  }
  optimizer.addGroupStored(stored, sizes);
  shadow.addGroup(shadowPointers, sizes);
  EXPECT_EQ(optimizer.tensorLayout(0, 0),
            optrt::hasQ8States(layout, kernels->states) ? optrt::smallTensorLayout(layout).str()
                                                        : layout.str());
  EXPECT_EQ(optimizer.tensorLayout(0, 2), layout.str());

  std::vector<std::string> states;
  for (const optrt::StateInfo &s : kernels->states)
    if (!s.scalar)
      states.push_back(s.name);

  for (int step = 1; step <= 4; ++step) {
    SCOPED_TRACE("step " + std::to_string(step));
    // The shadow starts from exactly what the layout holds.
    for (size_t k = 0; k < sizes.size(); ++k) {
      std::vector<float> start = layout.master ? optimizer.master(0, k) : params[k].decode();
      shadowParams[k] = start;
      for (const std::string &s : states) {
        std::vector<float> value = optimizer.readState(s, 0, k);
        std::copy(value.begin(), value.end(), shadow.state(s, 0, k).begin());
      }
    }
    std::vector<Stored> grads;
    std::vector<std::vector<float>> shadowGrads;
    for (size_t k = 0; k < sizes.size(); ++k) {
      std::vector<float> g(sizes[k]);
      float scale = std::pow(10.0f, static_cast<float>((k + step) % 5) - 3.0f);
      for (float &v : g)
        v = normal(rng) * scale;
      if (k == 2 && step == 3) { // non-finite gradients inside one block
        g[2 * 256 + 5] = INFINITY;
        g[2 * 256 + 9] = -INFINITY;
        g[2 * 256 + 77] = NAN;
      }
      grads.push_back({layout.grad, {}, {}});
      grads.back().encode(g);
      shadowGrads.push_back(grads.back().decode());
    }
    std::vector<const void *> g;
    std::vector<const float *> sg;
    for (size_t k = 0; k < sizes.size(); ++k) {
      g.push_back(grads[k].data());
      sg.push_back(shadowGrads[k].data());
    }
    optimizer.stepStored({g});
    shadow.step({sg});

    for (size_t k = 0; k < sizes.size(); ++k) {
      SCOPED_TRACE("tensor " + std::to_string(k));
      size_t n = sizes[k];
      // Params (and master).
      std::vector<float> expected = shadowParams[k];
      if (!checkParams) {
        for (float p : params[k].decode())
          ASSERT_FALSE(std::isinf(p));
        expected = layout.master ? optimizer.master(0, k) : params[k].decode();
      }
      if (layout.master) {
        std::vector<float> master = optimizer.master(0, k);
        size_t bad = 0;
        for (size_t i = 0; i < n; ++i)
          bad += bits(master[i]) != bits(expected[i]);
        EXPECT_EQ(bad, 0u) << "master differs from the f32 step";
      }
      size_t bad = 0;
      std::string tensorLayout = optimizer.tensorLayout(0, k);
      if (layout.param == Dtype::F32) {
        for (size_t i = 0; i < n; ++i)
          bad += bits(params[k].full[i]) != bits(expected[i]);
      } else if (layout.master == Dtype::Remainder) {
        // The param is the master's high half rounded on the low half.
        for (size_t i = 0; i < n; ++i)
          bad += params[k].half[i] != optrt::splitMaster(expected[i]).param;
      } else {
        std::vector<uint16_t> reference =
            reference16(layout.param, expected, layout.stochastic, seed, step, k,
                        bufferIndex(*kernels, tensorLayout, optrt::BufferRole::Param));
        for (size_t i = 0; i < n; ++i)
          bad += params[k].half[i] != reference[i];
      }
      EXPECT_EQ(bad, 0u) << "param bits differ from the reference rounding of the f32 step";
      std::vector<float> decoded = params[k].decode();
      for (size_t i = 0, reported = 0; i < n; ++i)
        if (std::isfinite(expected[i]) &&
            !(std::fabs(decoded[i] - expected[i]) <=
              (layout.stochastic ? stochasticBound(layout.param, expected[i]) : formatBound(layout.param, expected[i], 0))) &&
            reported++ < 3)
          ADD_FAILURE() << "param " << i << ": " << decoded[i] << " vs f32 " << expected[i];

      // States.
      for (const std::string &s : states) {
        std::string small = optimizer.tensorLayout(0, k);
        Dtype dtype = optrt::Layout::parse(small).stateDtype(s);
        std::vector<float> exact(shadow.state(s, 0, k).begin(), shadow.state(s, 0, k).end());
        std::vector<float> ours = optimizer.readState(s, 0, k);
        std::vector<float> ref(n);
        std::vector<float> absmax(optrt::q8Blocks(n));
        if (isQ8(dtype)) {
          // The kernel's own choice of map (the descriptor's dtype).
          Dtype actual = Dtype::Q8Signed;
          for (const auto &layoutKernels : kernels->layouts)
            if (layoutKernels.name == small)
              for (const auto &b : layoutKernels.buffers)
                if (b.role == optrt::BufferRole::State && kernels->states[b.state].name == s)
                  actual = b.dtype;
          dtype = actual;
          std::vector<uint8_t> codes(n);
          optrt::quantizeBlockwise(optrt::q8MapFor(dtype), exact, codes, absmax);
          optrt::dequantizeBlockwise(optrt::q8MapFor(dtype), codes, absmax, ref);
        } else {
          if (dtype == Dtype::F32)
            ref = exact;
          else {
            size_t buffer = bufferIndex(*kernels, small, optrt::BufferRole::State,
                                        static_cast<int>(stateIndex(*kernels, s)));
            std::vector<uint16_t> raw = reference16(dtype, exact, layout.stochastic, seed, step, k, buffer);
            optrt::decodeToF32(dtype, raw.data(), nullptr, ref);
          }
        }
        size_t differ = 0;
        for (size_t i = 0; i < n; ++i)
          differ += bits(ours[i]) != bits(ref[i]);
        EXPECT_EQ(differ, 0u) << "state " << s << " (" << optrt::dtypeName(dtype)
                              << ") differs from the reference encoding of the f32 step";
        for (size_t i = 0, reported = 0; i < n; ++i) {
          if (!std::isfinite(exact[i]))
            continue;
          float a = isQ8(dtype) ? absmax[i / 256] : 0.0f;
          double bound = layout.stochastic && !isQ8(dtype) ? stochasticBound(dtype, exact[i])
                                                           : formatBound(dtype, exact[i], a);
          if (!(std::fabs(ours[i] - exact[i]) <= bound) && reported++ < 3)
            ADD_FAILURE() << "state " << s << " element " << i << ": " << ours[i] << " vs f32 " << exact[i];
        }
      }
    }
  }
}

TEST_P(LayoutKernel, StoresTheReferenceRoundingOfTheF32Step) {
  const LayoutCase &c = GetParam();
  checkAgainstShadow(kernelsFor(c.rule, {"f32", c.layout}), c.layout);
}

/// LAMB with 16-bit and q8 states: its second phase reloads the stored
/// (rounded) states, so only the states, written in the first phase from
/// exact inputs, are checked bit for bit; the params must stay finite where
/// the gradients are (no block's NaN spreads).
TEST(LayoutKernelMultiPhase, LambStatesAreTheReferenceEncoding) {
  for (std::string layout : {"state=bf16", "state=q8", "param=bf16,master=f32,state=q8"}) {
    SCOPED_TRACE(layout);
    checkAgainstShadow(kernelsFor("lamb", {"f32", layout}), layout, 2, /*checkParams=*/false);
  }
}

std::vector<LayoutCase> cases() {
  std::vector<LayoutCase> result;
  for (std::string layout : {"param=bf16,master=f32", "param=bf16", "param=f16,grad=f16", "grad=bf16",
                             "state=bf16", "state=f16", "state=q8", "param=bf16,master=f32,state=q8",
                             "param=bf16,master=remainder", "param=bf16,grad=bf16,master=remainder,state=q8"})
    for (std::string rule : {"adamw", "ademamix", "sgd", "lion", "rmsprop", "nadam"})
      result.push_back({rule, layout});
  result.push_back({"ademamix", "m1=q8,m2=bf16,nu=f32"});
  // LAMB's second phase reloads its states: only layouts that keep states
  // in f32 see the f32 shadow's exact values there (the others reload what
  // they stored, by design), and without q8 the reductions run in the same
  // order, so params and master must still match bit for bit.
  for (std::string layout : {"param=bf16,master=f32", "param=bf16", "param=f16,grad=f16", "grad=bf16",
                             "param=bf16,master=remainder"})
    result.push_back({"lamb", layout});
  for (std::string rule : {"adamw", "ademamix", "sgd"}) {
    result.push_back({rule, "param=bf16,state=bf16,rounding=stochastic"});
    result.push_back({rule, "param=f16,grad=f16,state=f16,rounding=stochastic"});
    result.push_back({rule, "param=bf16,master=f32,state=q8,rounding=stochastic"});
  }
  return result;
}

INSTANTIATE_TEST_SUITE_P(Rules, LayoutKernel, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<LayoutCase> &info) {
                           std::string name = info.param.rule + "_" + info.param.layout;
                           for (char &ch : name)
                             if (!std::isalnum(static_cast<unsigned char>(ch)))
                               ch = '_';
                           return name;
                         });

/// The unsigned map is used exactly where the sign analysis proves the state
/// non-negative: AdamW's exp_avg_sq, from beta2's declared range [0, 1)
/// (or, in a copy of the rule without ranges, once beta2 is fixed), never
/// exp_avg.
TEST(LayoutKernelSign, UnsignedMapOnlyWhereProved) {
  auto dtypes = [](const optrt::RuleKernels &k) {
    std::map<std::string, Dtype> result;
    for (const auto &layout : k.layouts)
      if (layout.name == "state=q8")
        for (const auto &b : layout.buffers)
          if (b.role == optrt::BufferRole::State)
            result[k.states[b.state].name] = b.dtype;
    return result;
  };
  auto ranged = dtypes(*kernelsFor("adamw", {"state=q8"}));
  EXPECT_EQ(ranged.at("exp_avg"), Dtype::Q8Signed);
  EXPECT_EQ(ranged.at("exp_avg_sq"), Dtype::Q8Unsigned);
  EXPECT_EQ(ranged.at("max_exp_avg_sq"), Dtype::Q8Unsigned);
  // Without the ranges beta2 is any number: 1 - beta2 could be negative.
  std::string source = readRuleSource("adamw");
  for (size_t at; (at = source.find(" in [")) != std::string::npos;)
    source.erase(at, source.find(';', at) - at);
  auto unranged = dtypes(*kernelsForSource(source, {"state=q8"}));
  EXPECT_EQ(unranged.at("exp_avg"), Dtype::Q8Signed);
  EXPECT_EQ(unranged.at("exp_avg_sq"), Dtype::Q8Signed);
  auto fixed = dtypes(*kernelsForSource(source, {"state=q8"}, {{"beta1", 0.9}, {"beta2", 0.999}, {"amsgrad", 0}}));
  EXPECT_EQ(fixed.at("exp_avg"), Dtype::Q8Signed);
  EXPECT_EQ(fixed.at("exp_avg_sq"), Dtype::Q8Unsigned);
}

/// The fixed-beta build runs with the unsigned map, bit for bit as the
/// reference (the map choice is part of the kernel).
TEST(LayoutKernelSign, UnsignedStateMatchesTheReference) {
  checkAgainstShadow(kernelsFor("adamw", {"f32", "state=q8"}, {{"beta1", 0.9}, {"beta2", 0.999}, {"amsgrad", 0}}),
                     "state=q8");
}

/// Stochastic rounding gives the same bits for any number of threads (the
/// bits depend on seed, step, tensor and element only).
TEST(LayoutKernelStochastic, SameBitsFor1To3Threads) {
  auto kernels = kernelsFor("adamw", {"f32", "param=bf16,state=bf16,rounding=stochastic"});
  std::vector<std::vector<uint16_t>> results;
  for (unsigned threads : {1u, 2u, 3u}) {
    std::vector<uint16_t> a(70001, optrt::f32ToBf16(0.5f)), b(5000, optrt::f32ToBf16(-2.0f));
    optrt::Optimizer optimizer(kernels, {.threads = threads, .chunkElements = 1024,
                                         .layout = "param=bf16,state=bf16,rounding=stochastic", .seed = 9});
    optimizer.addGroupStored({a.data(), b.data()}, {a.size(), b.size()});
    std::mt19937 rng(5);
    std::normal_distribution<float> normal;
    for (int step = 0; step < 3; ++step) {
      std::vector<float> ga(a.size()), gb(b.size());
      for (float &g : ga)
        g = normal(rng);
      for (float &g : gb)
        g = normal(rng);
      std::vector<uint16_t> sa(ga.size()), sb(gb.size());
      optimizer.step({{ga.data(), gb.data()}});
    }
    std::vector<uint16_t> all = a;
    all.insert(all.end(), b.begin(), b.end());
    for (const char *state : {"exp_avg", "exp_avg_sq"})
      for (size_t t = 0; t < 2; ++t)
        for (float v : optimizer.readState(state, 0, t))
          all.push_back(static_cast<uint16_t>(bits(v) >> 16));
    results.push_back(all);
  }
  EXPECT_EQ(results[0], results[1]);
  EXPECT_EQ(results[0], results[2]);
}

/// In the kernel, stochastic rounding is unbiased where round-to-nearest is
/// stuck: SGD steps of 2^-10 from a bf16 1.0 (a quarter of the spacing
/// 2^-8 below 1) never move a round-to-nearest param; stochastically the
/// mean over 2^16 elements lands on 1 - 2^-10 within 6 standard deviations
/// of the mean (each element is 1 with probability 3/4, else 1 - 2^-8).
TEST(LayoutKernelStochastic, UnbiasedWhereNearestIsStuck) {
  auto kernels = kernelsFor("sgd", {"f32", "param=bf16", "param=bf16,rounding=stochastic"});
  const size_t n = 65536;
  std::vector<float> grad(n, 0x1p-10f);
  for (bool stochastic : {false, true}) {
    std::vector<uint16_t> param(n, optrt::f32ToBf16(1.0f));
    std::string layout = stochastic ? "param=bf16,rounding=stochastic" : "param=bf16";
    optrt::Optimizer optimizer(kernels, {.threads = 2, .layout = layout, .seed = 77});
    optimizer.addGroupStored({param.data()}, {n}, {{"lr", 1.0}, {"momentum", 0}, {"weight_decay", 0}});
    optimizer.step({{grad.data()}});
    double mean = 0;
    for (uint16_t p : param)
      mean += optrt::bf16ToF32(p);
    mean /= n;
    if (!stochastic) {
      EXPECT_EQ(mean, 1.0) << "round to nearest absorbs the step";
    } else {
      double sigma = std::ldexp(1.0, -8) * std::sqrt(0.75 * 0.25 / n);
      EXPECT_NEAR(mean, 1.0 - std::ldexp(1.0, -10), 6 * sigma);
    }
  }
}

/// The runtime's report is optrt::memoryReport over its own tensors: a
/// 100-element tensor keeps q8 states in f32, a 5000-element one pays 1 byte
/// plus an f32 absmax per block of 256 for each of AdamW's three states.
TEST(LayoutKernelMemory, OptimizerReportsItsTensors) {
  auto kernels = kernelsFor("adamw", {"param=bf16,master=f32,state=q8"});
  std::vector<uint16_t> a(100), b(5000);
  optrt::Optimizer optimizer(kernels, {.layout = "param=bf16,master=f32,state=q8"});
  optimizer.addGroupStored({a.data(), b.data()}, {100, 5000});
  optrt::MemoryReport r = optimizer.memoryReport();
  EXPECT_EQ(r.numParams, 5100u);
  EXPECT_DOUBLE_EQ(r.param, 2.0);
  EXPECT_DOUBLE_EQ(r.grad, 4.0);
  EXPECT_DOUBLE_EQ(r.master, 4.0);
  EXPECT_DOUBLE_EQ(r.state, (3 * 400.0 + 3 * (5000.0 + 4 * 20)) / 5100);
  EXPECT_EQ(optimizer.tensorLayout(0, 0), "param=bf16,master=f32");
  // What the arena holds (padded to cache lines) is at least that.
  EXPECT_GE(optimizer.stateBytes(), static_cast<size_t>((r.master + r.state) * 5100));
}

/// State saved with its layout tag: restored bit for bit under the same
/// layout, refused by name under another unless converting, converted
/// exactly (decoded) into f32; a damaged stream changes nothing.
TEST(LayoutKernelState, SaveAndLoadWithTheLayoutTag) {
  auto kernels = kernelsFor("ademamix", {"f32", "param=bf16,master=f32,state=q8"});
  const std::string q8 = "param=bf16,master=f32,state=q8";
  std::vector<size_t> sizes = {100, 5000};
  std::mt19937 rng(8);
  std::normal_distribution<float> normal;
  auto randomVector = [&](size_t n, float scale) {
    std::vector<float> v(n);
    for (float &x : v)
      x = normal(rng) * scale;
    return v;
  };
  std::vector<std::vector<uint16_t>> params;
  for (size_t n : sizes) {
    params.emplace_back(n);
    optrt::encodeF32(Dtype::BF16, randomVector(n, 1), params.back().data(), nullptr);
  }
  auto pointers = [](std::vector<std::vector<uint16_t>> &p) {
    return std::vector<void *>{p[0].data(), p[1].data()};
  };
  optrt::Optimizer source(kernels, {.threads = 2, .layout = q8});
  source.addGroupStored(pointers(params), sizes);
  for (int step = 0; step < 3; ++step) {
    std::vector<float> g0 = randomVector(100, 0.1f), g1 = randomVector(5000, 0.1f);
    source.step({{g0.data(), g1.data()}});
  }
  std::stringstream saved;
  source.saveState(saved);
  std::string bytes = saved.str();

  // Same layout: every bit back, then the same next step.
  std::vector<std::vector<uint16_t>> copy = params;
  optrt::Optimizer restored(kernels, {.threads = 3, .layout = q8});
  restored.addGroupStored(pointers(copy), sizes);
  std::stringstream in(bytes);
  restored.loadState(in);
  EXPECT_EQ(restored.stepCount(), 3);
  for (size_t t = 0; t < 2; ++t)
    for (const char *state : {"m1", "m2", "nu"})
      EXPECT_EQ(restored.readState(state, 0, t), source.readState(state, 0, t)) << state;
  std::vector<float> g0 = randomVector(100, 0.1f), g1 = randomVector(5000, 0.1f);
  source.step({{g0.data(), g1.data()}});
  restored.step({{g0.data(), g1.data()}});
  EXPECT_EQ(copy, params);
  EXPECT_EQ(restored.readState("nu", 0, 1), source.readState("nu", 0, 1));

  // Another layout: refused by name, nothing changed.
  std::vector<float> f32Params(5100, 0.5f);
  optrt::Optimizer other(kernels, {.threads = 1, .layout = "f32"});
  other.addGroup({f32Params.data(), f32Params.data() + 100}, sizes);
  std::vector<float> before = other.readState("m1", 0, 1);
  std::stringstream again(bytes);
  try {
    other.loadState(again);
    FAIL() << "loaded q8 state into f32 without convert";
  } catch (const std::invalid_argument &e) {
    EXPECT_NE(std::string(e.what()).find("saved under layout '" + q8 + "'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("convert = true"), std::string::npos) << e.what();
  }
  EXPECT_EQ(other.readState("m1", 0, 1), before);
  EXPECT_EQ(other.stepCount(), 0);
  // Converting: the f32 optimizer holds exactly the decoded q8 values.
  std::stringstream third(bytes);
  other.loadState(third, /*convert=*/true);
  std::stringstream fourth(bytes);
  optrt::Optimizer check(kernels, {.threads = 1, .layout = q8});
  std::vector<std::vector<uint16_t>> copy2 = params;
  check.addGroupStored(pointers(copy2), sizes);
  // (source has stepped since; the reference is a fresh load of the bytes)
  check.loadState(fourth);
  EXPECT_EQ(other.readState("m1", 0, 1), check.readState("m1", 0, 1));
  EXPECT_EQ(other.readState("nu", 0, 0), check.readState("nu", 0, 0));
  EXPECT_EQ(other.stepCount(), 3);

  // A truncated stream: a named error, nothing changed.
  std::vector<float> kept = check.readState("m2", 0, 1);
  std::stringstream cut(bytes.substr(0, bytes.size() - 10));
  EXPECT_THROW(check.loadState(cut), std::invalid_argument);
  EXPECT_EQ(check.readState("m2", 0, 1), kept);
  std::stringstream foreign("not a state stream at all");
  EXPECT_THROW(check.loadState(foreign), std::invalid_argument);
}

/// A rule whose q8 states hold the gradient itself: `s = grad` (signed map)
/// and `v = max(grad, 0)` (proved non-negative: unsigned), so a kernel's
/// stored codes are its quantiser's verdict on the values given as grads.
std::shared_ptr<const optrt::RuleKernels> copyGradKernels() {
  static const char *source = R"(optimizer copy_grad {
  hyper lr = 0;
  state s;
  state v;
  s = grad;
  v = max(grad, 0);
  param = param - lr * s;
})";
  auto rule = compileSource(std::make_shared<const SourceFile>("copy_grad.opt", source), std::cerr);
  return rule ? jitCompile(*rule, {{"lr", 0}}, {"state=q8"}) : nullptr;
}

/// Steps copyGradKernels() on `grad` and expects its state s (signed map) or
/// v (unsigned) to decode exactly as quantizeBlockwise of the same values.
void expectReferenceCodes(const std::shared_ptr<const optrt::RuleKernels> &kernels, const std::vector<float> &grad,
                          bool isSigned) {
  std::vector<float> param(grad.size(), 0.0f);
  optrt::Optimizer optimizer(kernels, {.threads = 2, .layout = "state=q8"});
  optimizer.addGroup({param.data()}, {param.size()});
  optimizer.step({{grad.data()}});
  std::vector<float> exact = grad;
  if (!isSigned)
    for (float &x : exact)
      x = std::isnan(x) ? x : std::fmax(x, 0.0f);
  const optrt::Q8Map &map = optrt::q8Map(isSigned);
  std::vector<uint8_t> codes(exact.size());
  std::vector<float> absmax(optrt::q8Blocks(exact.size())), ref(exact.size());
  optrt::quantizeBlockwise(map, exact, codes, absmax);
  optrt::dequantizeBlockwise(map, codes, absmax, ref);
  std::vector<float> ours = optimizer.readState(isSigned ? "s" : "v", 0, 0);
  size_t differ = 0;
  for (size_t i = 0; i < ours.size(); ++i)
    if (bits(ours[i]) != bits(ref[i]) && differ++ < 5)
      ADD_FAILURE() << (isSigned ? "signed" : "unsigned") << " element " << i << " = " << exact[i] << " (absmax "
                    << absmax[i / 256] << "): kernel " << ours[i] << ", reference " << ref[i];
  EXPECT_EQ(differ, 0u);
}

/// The kernel's quantiser at every decision boundary of both maps: a rule
/// that stores the gradient as its q8 state (`s = grad`), blocks whose first
/// element is 1 (so absmax is 1 and n is the value itself), filled with every
/// threshold, its f32 neighbours, every map entry, their negatives, 0, -0,
/// tiny and subnormal values, +-1, +-Inf, NaN and a dense log-uniform sweep
/// (the quantiser estimates the code from the map's decade structure and
/// settles it with two threshold lookups: this is its proof). Codes must be
/// quantizeBlockwise's exactly.
TEST(LayoutKernelQ8, QuantiserAtEveryBoundary) {
  auto kernels = copyGradKernels();
  ASSERT_TRUE(kernels);
  ASSERT_EQ(kernels->layouts[0].buffers[2].dtype, Dtype::Q8Signed);   // s
  ASSERT_EQ(kernels->layouts[0].buffers[3].dtype, Dtype::Q8Unsigned); // v
  for (bool isSigned : {true, false}) {
    const optrt::Q8Map &map = optrt::q8Map(isSigned);
    std::vector<float> values = test::q8BoundaryValues(map, 12);
    // Blocks of 256 starting with 1.0 (absmax 1 whatever follows).
    std::vector<float> grad;
    for (size_t i = 0; i < values.size(); ++i) {
      if (grad.size() % 256 == 0)
        grad.push_back(1.0f);
      grad.push_back(values[i]);
    }
    while (grad.size() < 4096)
      grad.push_back(0.25f);
    // v = max(grad, 0) is proved non-negative: it runs the unsigned map, s
    // the signed one.
    expectReferenceCodes(kernels, grad, isSigned);
  }
}

/// The same boundaries with absmax far from a power of two, where the
/// 64-lane quantiser's x * fl(1 / absmax) often differs from fl(x / absmax)
/// by an ulp or two (it divides again only for groups with a value within a
/// few ulps of a threshold), and with absmax where it always divides
/// (subnormal, above 2^126) and where it must give the division's NaN and
/// +-Inf (absmax 0): per absmax a, blocks starting with a and holding fl(t a)
/// and its 6 f32 neighbours either side for every threshold t, both signs,
/// and uniform values in [-a, a]; and a block of zeros with +-Inf and NaN.
/// Codes must be quantizeBlockwise's exactly.
TEST(LayoutKernelQ8, QuantiserWithReciprocalAtEveryBoundary) {
  auto kernels = copyGradKernels();
  ASSERT_TRUE(kernels);
  std::mt19937 rng(34);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  for (bool isSigned : {true, false}) {
    const optrt::Q8Map &map = optrt::q8Map(isSigned);
    std::vector<float> grad;
    for (float a : {0.7f, 3.3f, 1.0f / 3.0f, 0.9999999f, 1.37e-20f, 6.1e25f, 0x1.8p-126f, 0x1.8p-130f, 0x1.8p126f,
                    0x1.fffffep127f, 0.0f}) {
      std::vector<float> values;
      for (float t : map.thresholds())
        for (float sign : {1.0f, -1.0f}) {
          float x = sign * t * a;
          for (int step = 0; step < 6; ++step)
            x = std::nextafter(x, -2.0f * std::fabs(x));
          for (int step = 0; step < 13; ++step, x = std::nextafter(x, 2.0f * std::fabs(x) + 1e-45f))
            if (std::fabs(x) <= a)
              values.push_back(x);
        }
      for (int i = 0; i < 2000; ++i)
        values.push_back(uniform(rng) * a);
      // Blocks of 256 starting with a (absmax a whatever follows), padded
      // with 0 to whole blocks.
      for (size_t i = 0; i < values.size(); ++i) {
        if (grad.size() % 256 == 0)
          grad.push_back(a);
        grad.push_back(values[i]);
      }
      while (grad.size() % 256 != 0)
        grad.push_back(0.0f);
    }
    // A block of absmax 0 holding +-Inf and NaN (0 * Inf: the reciprocal of
    // 0 is Inf, and x * Inf must give x / 0's codes).
    size_t zeroBlock = grad.size();
    grad.resize(zeroBlock + 256, 0.0f);
    grad[zeroBlock + 1] = -0.0f;
    grad[zeroBlock + 70] = INFINITY;
    grad[zeroBlock + 130] = -INFINITY;
    grad[zeroBlock + 200] = NAN;
    expectReferenceCodes(kernels, grad, isSigned);
  }
}

/// f16 and bf16 stochastic rounding in the kernel over every range: f16
/// normals, subnormals, values far below the smallest subnormal, above the
/// largest finite value, f32 subnormals, zeros, +-Inf and NaN, each stored by
/// `s = grad` and compared with the reference at the documented bits.
TEST(LayoutKernelStochastic, EveryRangeLikeTheReference) {
  static const char *source = R"(optimizer copy_grad {
  hyper lr = 0;
  state s;
  s = grad;
  param = param - lr * s;
})";
  auto rule = compileSource(std::make_shared<const SourceFile>("copy_grad.opt", source), std::cerr);
  ASSERT_TRUE(rule);
  std::vector<float> grad = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, 65504.0f, 65519.0f, 65520.0f, 65535.0f,
                             65536.0f, -70000.0f, 1e-45f, 1e-40f, 0x1p-24f, 0x1p-25f, 0x1p-14f, 6.1e-5f};
  std::mt19937 rng(21);
  std::uniform_real_distribution<float> exponent(-48.0f, 17.0f);
  while (grad.size() < 60000)
    grad.push_back((grad.size() % 2 ? -1.0f : 1.0f) * std::exp2(exponent(rng)));
  for (std::string dtype : {"f16", "bf16"}) {
    SCOPED_TRACE(dtype);
    std::string layout = "state=" + dtype + ",rounding=stochastic";
    auto kernels = jitCompile(*rule, {{"lr", 0}}, {layout});
    std::vector<float> param(grad.size(), 0.0f);
    optrt::Optimizer optimizer(kernels, {.threads = 3, .chunkElements = 4096, .layout = layout, .seed = 5});
    optimizer.addGroup({param.data()}, {param.size()});
    optimizer.step({{grad.data()}});
    std::vector<uint16_t> ref = reference16(dtype == "f16" ? Dtype::F16 : Dtype::BF16, grad, true, 5, 1, 0, 2);
    std::vector<float> decoded(grad.size());
    optrt::decodeToF32(dtype == "f16" ? Dtype::F16 : Dtype::BF16, ref.data(), nullptr, decoded);
    std::vector<float> ours = optimizer.readState("s", 0, 0);
    size_t differ = 0;
    for (size_t i = 0; i < ours.size(); ++i)
      if (bits(ours[i]) != bits(decoded[i]) && differ++ < 5)
        ADD_FAILURE() << "element " << i << " = " << grad[i] << ": kernel " << ours[i] << ", reference " << decoded[i];
    EXPECT_EQ(differ, 0u);
  }
}

TEST(LayoutKernelErrors, NamedErrors) {
  auto kernels = kernelsFor("adamw", {"f32", "param=bf16,master=f32", "state=q8"});
  std::vector<float> param(10, 0.0f);
  // A float* call on a bf16-param layout.
  optrt::Optimizer bf16(kernels, {.layout = "param=bf16,master=f32"});
  try {
    bf16.addGroup({param.data()}, {10});
    FAIL() << "float params accepted on a bf16 layout";
  } catch (const std::invalid_argument &e) {
    EXPECT_NE(std::string(e.what()).find("addGroupStored"), std::string::npos) << e.what();
  }
  // Direct f32 access to a q8 state.
  std::vector<float> big(5000, 1.0f);
  optrt::Optimizer q8(kernels, {.layout = "state=q8"});
  q8.addGroup({big.data()}, {big.size()});
  EXPECT_THROW(q8.state("exp_avg", 0, 0), std::invalid_argument);
  EXPECT_EQ(q8.readState("exp_avg", 0, 0).size(), 5000u);
  // q8 needs chunks of whole blocks.
  EXPECT_THROW(optrt::Optimizer(kernels, {.chunkElements = 1000, .layout = "state=q8"}), std::invalid_argument);
  // Not compiled.
  EXPECT_THROW(optrt::Optimizer(kernels, {.layout = "state=bf16"}), std::invalid_argument);
  // A layout the rule cannot take, at compile time: nothing to round
  // stochastically; q8 on a scalar state; an unknown dtype.
  EXPECT_THROW(kernelsFor("adamw", {"state=q8,rounding=stochastic"}), std::invalid_argument);
  EXPECT_THROW(kernelsFor("nadam", {"mu_product=q8"}), std::invalid_argument);
  EXPECT_THROW(kernelsFor("adamw", {"state=q4"}), std::invalid_argument);
}

} // namespace
} // namespace optdsl
