// CudaOptimizer's host side against a fake driver (FakeDriver.cpp): which
// image is loaded, the named errors, the checks on device pointers, the
// launch sequence of a step, and that a failing call leaves the optimizer as
// it was. Runs without a GPU; what the kernels compute is tested on a GPU
// (CudaKernelTest.cpp).
#include "common/BranchHypers.h"
#include "common/RuleLibrary.h"
#include "optdsl/CUDACompile.h"
#include "optdsl/JIT.h"
#include "optrt/CudaOptimizer.h"
#include "optrt/Optimizer.h"

#include "cuda/FakeDriverControl.h"
#include "cuda/ModuleCache.h"

#include <gtest/gtest.h>

#include <sstream>

#include <cstdlib>
#include <dlfcn.h>
#include <functional>

namespace {

using optrt::CudaErrc;
using optrt::CudaError;
using optrt::DevicePtr;
using optdsl::test::Fake;

struct Rule {
  std::shared_ptr<const optrt::RuleKernels> host;
  optrt::CudaKernels device;
};

const Rule &compiled(const std::string &name) {
  // Never destroyed: JIT engines must not outlive LLVM's globals.
  static auto &cache = *new std::map<std::string, Rule>();
  auto it = cache.find(name);
  if (it == cache.end()) {
    optdsl::CheckedRule rule = optdsl::loadRuleFile(optdsl::test::ruleLibraryDir() + "/" + name + ".opt");
    optdsl::FixedHypers fixed = optdsl::test::cudaFixedHypers(name);
    it = cache.emplace(name, Rule{optdsl::jitCompile(rule, fixed), optdsl::cudaCompile(rule, fixed)}).first;
  }
  return it->second;
}

/// A fresh copy of the device code: the module cache is keyed by its address.
std::shared_ptr<const optrt::CudaKernels> deviceCopy(const std::string &name,
                                                     const std::function<void(optrt::CudaKernels &)> &edit = {}) {
  auto copy = std::make_shared<optrt::CudaKernels>(compiled(name).device);
  if (edit)
    edit(*copy);
  return copy;
}

class FakeDriverTest : public optdsl::test::FakeDriverFixture<::testing::Test> {
protected:
  template <typename F> CudaError expectCudaError(CudaErrc code, F &&f) {
    try {
      f();
    } catch (const CudaError &e) {
      EXPECT_EQ(e.code(), code) << e.what();
      return e;
    }
    ADD_FAILURE() << "no CudaError " << optrt::cudaErrcName(code);
    return CudaError(code, "");
  }
};

TEST(ChooseImage, PrefersTheCubinOfTheSameMajorThenThePtx) {
  optrt::CudaKernels k;
  k.images = {{"sm_80", "ptx80", 70, "cubin80"}, {"sm_90", "ptx90", 78, "cubin90"}};
  auto pick = [&](int major, int minor) {
    optrt::cuda::ImageChoice c = optrt::cuda::chooseImage(k, major, minor);
    return c.index < 0 ? std::string("none") : k.images[c.index].arch + (c.cubin ? " cubin" : " ptx");
  };
  EXPECT_EQ(pick(9, 0), "sm_90 cubin");
  EXPECT_EQ(pick(8, 6), "sm_80 cubin"); // sm_80 cubins run on sm_86
  EXPECT_EQ(pick(8, 0), "sm_80 cubin");
  EXPECT_EQ(pick(12, 0), "sm_90 ptx");  // a newer GPU JITs the newest PTX
  EXPECT_EQ(pick(7, 5), "none");
  k.images[1].cubin.clear();
  EXPECT_EQ(pick(9, 0), "sm_90 ptx");   // never an sm_80 cubin on sm_90
}

TEST_F(FakeDriverTest, MalformedKernelsAreRefusedBeforeTheDriver) {
  fake().set("device_count", 0); // a driver call would fail with NoDevice instead
  EXPECT_THROW(optrt::CudaOptimizer(compiled("sgd").host, nullptr), std::invalid_argument);
  EXPECT_THROW(optrt::CudaOptimizer(compiled("sgd").host, deviceCopy("adamw")), std::invalid_argument);
  EXPECT_THROW(optrt::CudaOptimizer(compiled("lamb").host,
                                    deviceCopy("lamb", [](auto &k) { k.finishEntries[0].clear(); })),
               std::invalid_argument);
  EXPECT_THROW(optrt::CudaOptimizer(compiled("sgd").host, deviceCopy("sgd", [](auto &k) { k.images.clear(); })),
               std::invalid_argument);
  // Built with amsgrad fixed on one side only.
  EXPECT_THROW(optrt::CudaOptimizer(compiled("adamw").host,
                                    deviceCopy("adamw", [](auto &k) { k.fixedHypers = {{"amsgrad", 0.0}}; })),
               std::invalid_argument);
}

TEST_F(FakeDriverTest, FixedHypersAgreeWhenBuiltAlike) {
  optdsl::CheckedRule rule = optdsl::loadRuleFile(optdsl::test::ruleLibraryDir() + "/adamw.opt");
  optdsl::FixedHypers fixed = {{"amsgrad", 0}};
  auto device = std::make_shared<optrt::CudaKernels>(optdsl::cudaCompile(rule, fixed));
  ASSERT_EQ(device->fixedHypers, (std::vector<std::pair<std::string, double>>{{"amsgrad", 0.0}}));
  optrt::CudaOptimizer optimizer(optdsl::jitCompile(rule, fixed), device);
  EXPECT_THROW(optimizer.setHyper("amsgrad", 1), std::invalid_argument); // folded into the code
  EXPECT_THROW(optrt::CudaOptimizer(compiled("adamw").host, device), std::invalid_argument);
}

// random() needs each tensor's key in the slot after the rule's uniforms,
// as stochastic rounding does: the device code leaves room for it (the
// optimizer checks the launch facts against the rule) and steps.
TEST_F(FakeDriverTest, ARuleDrawingRandomNumbersHasItsKeySlot) {
  auto file = std::make_shared<const optdsl::SourceFile>(
      "noisy.opt", "optimizer noisy { hyper lr = 0.1; param = param - lr * grad + 0.01 * random(0); }");
  std::ostringstream diagnostics;
  std::optional<optdsl::CheckedRule> rule = optdsl::compileSource(file, diagnostics);
  ASSERT_TRUE(rule) << diagnostics.str();
  auto host = optdsl::jitCompile(*rule);
  auto device = std::make_shared<optrt::CudaKernels>(optdsl::cudaCompile(*rule));
  ASSERT_TRUE(host->usesRandom);
  EXPECT_GE(device->uniformStride, host->numUniforms[0] + 1);
  optrt::CudaOptimizer optimizer(host, device);
  DevicePtr param = fake().alloc(1000 * sizeof(float)), grad = fake().alloc(1000 * sizeof(float));
  optimizer.addGroup({param}, {1000});
  optimizer.step({{grad}});
  EXPECT_EQ(optimizer.stepCount(), 1);
  // Device code whose uniform table has no room for the key is refused.
  auto cramped = std::make_shared<optrt::CudaKernels>(*device);
  cramped->uniformStride = host->numUniforms[0];
  EXPECT_THROW(optrt::CudaOptimizer(host, cramped), std::invalid_argument);
}

TEST_F(FakeDriverTest, NoDeviceIsNamed) {
  fake().set("device_count", 0);
  CudaError e = expectCudaError(CudaErrc::NoDevice, [&] { optrt::CudaOptimizer(compiled("sgd").host, deviceCopy("sgd")); });
  EXPECT_NE(std::string(e.what()).find("no CUDA GPU"), std::string::npos) << e.what();
  fake().set("device_count", 1);
  expectCudaError(CudaErrc::NoDevice, [&] { optrt::CudaOptimizer(compiled("sgd").host, deviceCopy("sgd"), {3}); });
}

TEST_F(FakeDriverTest, OlderGpuHasNoBinary) {
  fake().set("cc_major", 7);
  fake().set("cc_minor", 5);
  CudaError e = expectCudaError(CudaErrc::NoBinaryForGpu,
                                [&] { optrt::CudaOptimizer(compiled("sgd").host, deviceCopy("sgd")); });
  EXPECT_NE(std::string(e.what()).find("sm_75 GPU (built for: sm_80, sm_90)"), std::string::npos) << e.what();
}

TEST_F(FakeDriverTest, DriverTooOldForThePtxIsNamed) {
  fake().set("ptx_result", 222); // CUDA_ERROR_UNSUPPORTED_PTX_VERSION
  fake().set("driver_version", 11040);
  auto ptxOnly = deviceCopy("sgd", [](auto &k) {
    for (auto &image : k.images)
      image.cubin.clear();
  });
  CudaError e = expectCudaError(CudaErrc::DriverTooOld, [&] { optrt::CudaOptimizer(compiled("sgd").host, ptxOnly); });
  EXPECT_EQ(e.call(), "cuModuleLoadDataEx");
  EXPECT_EQ(e.result(), 222);
  std::string message = e.what();
  for (const char *part : {"CUDA 11.4", "ISA 7.8", "CUDA 11.8", "CUDA_ERROR_UNSUPPORTED_PTX_VERSION"})
    EXPECT_NE(message.find(part), std::string::npos) << part << " not in: " << message;
}

TEST_F(FakeDriverTest, RefusedCubinFallsBackToPtx) {
  if (compiled("sgd").device.images.back().cubin.empty())
    GTEST_SKIP() << "ptxas absent: the kernels hold no cubin";
  optrt::CudaOptimizer withCubin(compiled("sgd").host, deviceCopy("sgd"));
  EXPECT_EQ(withCubin.imageInUse(), "cubin sm_90");
  fake().set("cubin_result", 209); // CUDA_ERROR_NO_BINARY_FOR_GPU
  optrt::CudaOptimizer fallback(compiled("sgd").host, deviceCopy("sgd"));
  EXPECT_EQ(fallback.imageInUse(), "ptx sm_90 (JIT)");
}

TEST_F(FakeDriverTest, BadParamPointersAreNamedAndChangeNothing) {
  optrt::CudaOptimizer optimizer(compiled("adamw").host, deviceCopy("adamw"));
  DevicePtr good = fake().alloc(100 * sizeof(float));
  std::vector<float> host(100);
  size_t live = fake().liveBytes();
  auto hostPointer = reinterpret_cast<DevicePtr>(host.data());
  CudaError e = expectCudaError(CudaErrc::BadPointer, [&] { optimizer.addGroup({hostPointer}, {100}); });
  EXPECT_NE(std::string(e.what()).find("is not a device pointer"), std::string::npos) << e.what();
  EXPECT_EQ(e.call(), "cuPointerGetAttribute");
  e = expectCudaError(CudaErrc::BadPointer, [&] { optimizer.addGroup({good}, {101}); });
  EXPECT_NE(std::string(e.what()).find("needs 404 bytes but its allocation has only 400"), std::string::npos)
      << e.what();
  expectCudaError(CudaErrc::BadPointer, [&] { optimizer.addGroup({good + 2}, {10}); });
  expectCudaError(CudaErrc::WrongContext, [&] { optimizer.addGroup({fake().allocForeign(400)}, {100}); });
  CudaError other = expectCudaError(CudaErrc::WrongContext, [&] { optimizer.addGroup({fake().allocMapped(400, 1)}, {100}); });
  EXPECT_NE(std::string(other.what()).find("memory of CUDA device 1"), std::string::npos) << other.what();
  EXPECT_EQ(optimizer.numGroups(), 0);
  EXPECT_EQ(optimizer.stateBytes(), 0u);
  EXPECT_EQ(fake().liveBytes(), live + 800); // only the foreign and the other device's allocations
  EXPECT_EQ(optimizer.addGroup({good}, {100}), 0);
  EXPECT_EQ(optimizer.state("exp_avg", 0, 0), std::vector<float>(100, 0.0f));
  // Virtual-memory-API memory of this device (no context) is accepted.
  EXPECT_EQ(optimizer.addGroup({fake().allocMapped(400, 0)}, {100}), 1);
}

// A rule with a group-wide reduction (adamw_clip's group_norm) compiles for
// CUDA, but the device optimizer refuses it by name: it has no cross-tensor
// combination yet.
/// A rule with group-wide reductions steps with the same launches as any
/// other: the uniforms and scalars kernels combine a group's tensors (each
/// thread over the tensor table), so no kernel is added.
TEST_F(FakeDriverTest, GroupWideReductionsTakeNoExtraLaunch) {
  auto device = deviceCopy("prodigy");
  optrt::CudaOptimizer optimizer(compiled("prodigy").host, device, {-1, 1000});
  DevicePtr a = fake().alloc(3000 * sizeof(float)), b = fake().alloc(17 * sizeof(float)),
            c = fake().alloc(17 * sizeof(float)), grad = fake().alloc(3000 * sizeof(float));
  optimizer.addGroup({a, b}, {3000, 17});
  optimizer.addGroup({c}, {17});
  fake().reset();
  optimizer.step({{grad, grad}, {grad}});
  EXPECT_EQ(optdsl::test::launchedKernels(), optdsl::test::stepLaunches(*device));
  EXPECT_FALSE(device->scalarsEntry.empty()); // d and its companions
  EXPECT_EQ(optimizer.stepCount(), 1);
}

/// Inputs reach the device: each group's given() flag (a hidden hyper in
/// device memory) follows the step's inputs, and misuse is named before
/// anything is enqueued or changed.
TEST_F(FakeDriverTest, InputsAndTheirGivenFlagsReachTheDevice) {
  optrt::CudaOptimizer optimizer(compiled("sophia").host, deviceCopy("sophia"));
  auto floats = [&](size_t n) { return fake().alloc(n * sizeof(float)); };
  DevicePtr a = floats(1000), b = floats(500), gradA = floats(1000), gradB = floats(500);
  DevicePtr hessianA = floats(1000), shortHessian = floats(999);
  optimizer.addGroup({a}, {1000});
  optimizer.addGroup({b}, {500});
  auto given = [&](int group) {
    // The fake's device memory is host memory.
    return *reinterpret_cast<const double *>(optimizer.hyperAddress("given(hessian_estimate)", group));
  };
  optimizer.step({{gradA}, {gradB}}, nullptr, {{"hessian_estimate", {{hessianA}, {}}}});
  EXPECT_EQ(given(0), 1.0);
  EXPECT_EQ(given(1), 0.0);
  optimizer.step({{gradA}, {gradB}});
  EXPECT_EQ(given(0), 0.0);

  fake().reset();
  try {
    optimizer.step({{gradA}, {gradB}}, nullptr, {{"hessian", {{hessianA}, {}}}});
    ADD_FAILURE() << "an unknown input was taken";
  } catch (const std::invalid_argument &e) {
    EXPECT_EQ(std::string(e.what()), "optrt::CudaOptimizer::step: rule 'sophia' has no input 'hessian' (its inputs: "
                                     "'hessian_estimate')");
  }
  EXPECT_THROW(optimizer.step({{gradA}, {gradB}}, nullptr, {{"hessian_estimate", {{hessianA, hessianA}, {}}}}),
               std::invalid_argument);
  CudaError e = expectCudaError(CudaErrc::BadPointer, [&] {
    optimizer.step({{gradA}, {gradB}}, nullptr, {{"hessian_estimate", {{shortHessian}, {}}}});
  });
  EXPECT_NE(std::string(e.what()).find("input 'hessian_estimate' of tensor 0 of group 0"), std::string::npos)
      << e.what();
  EXPECT_EQ(fake().numLaunches(), 0u);
  EXPECT_EQ(optimizer.stepCount(), 2);
  EXPECT_EQ(given(0), 0.0);
}

TEST_F(FakeDriverTest, OutOfMemoryLeavesTheStateAsItWas) {
  optrt::CudaOptimizer optimizer(compiled("adagrad").host, deviceCopy("adagrad"));
  DevicePtr first = fake().alloc(1000 * sizeof(float)), second = fake().alloc(1 << 20);
  optimizer.addGroup({first}, {1000}, {{"initial_accumulator_value", 0.25}});
  std::vector<float> before = optimizer.state("sum", 0, 0);
  ASSERT_EQ(before, std::vector<float>(1000, 0.25f));
  size_t live = fake().liveBytes(), bytes = optimizer.stateBytes();
  fake().set("memory_limit", static_cast<long long>(live + 4096));
  CudaError e = expectCudaError(CudaErrc::OutOfMemory, [&] { optimizer.addGroup({second}, {1 << 18}); });
  EXPECT_NE(std::string(e.what()).find("state is unchanged"), std::string::npos) << e.what();
  EXPECT_EQ(optimizer.numGroups(), 1);
  EXPECT_EQ(optimizer.stateBytes(), bytes);
  EXPECT_EQ(fake().liveBytes(), live);
  EXPECT_EQ(optimizer.state("sum", 0, 0), before);
}

TEST_F(FakeDriverTest, StepLaunchesEveryPhaseOverAllTensorsOnce) {
  fake().set("multiprocessors", 2);
  fake().set("blocks_per_sm", 8); // 16 resident blocks, read when the module loads
  auto device = deviceCopy("lamb");
  optrt::CudaOptimizer optimizer(compiled("lamb").host, device, {-1, 1000});
  std::vector<size_t> sizes = {1, 999, 1001, 20000};
  std::vector<DevicePtr> params, grads;
  for (size_t size : sizes) {
    params.push_back(fake().alloc(size * sizeof(float)));
    grads.push_back(fake().alloc(size * sizeof(float)));
  }
  optimizer.addGroup({params[0], params[1]}, {sizes[0], sizes[1]});
  optimizer.addGroup({params[2], params[3]}, {sizes[2], sizes[3]}, {{"lr", 0.01}});
  fake().reset();
  fake().set("multiprocessors", 2);
  optimizer.step({{grads[0], grads[1]}, {grads[2], grads[3]}});
  EXPECT_EQ(optdsl::test::launchedKernels(), optdsl::test::stepLaunches(*device));
  // 1 + 1 + 2 + 20 = 24 chunks of at most 1000 elements, 16 blocks striding over them.
  EXPECT_EQ(fake().launchGrid(1), 16u);
  EXPECT_EQ(fake().launchGrid(0), 1u); // 4 tensors, one thread each
  EXPECT_EQ(optimizer.stepCount(), 1);
}

/// Each group counts its own steps, as on the CPU: a group added after two
/// steps has taken one after the next, and checkpoints carry the counts both
/// ways between the CPU and the GPU optimizer.
TEST_F(FakeDriverTest, GroupsCountTheirOwnSteps) {
  optrt::CudaOptimizer optimizer(compiled("adamw").host, deviceCopy("adamw"));
  DevicePtr a = fake().alloc(64 * sizeof(float)), b = fake().alloc(64 * sizeof(float)),
            grad = fake().alloc(64 * sizeof(float));
  optimizer.addGroup({a}, {64});
  optimizer.step({{grad}});
  optimizer.step({{grad}});
  optimizer.addGroup({b}, {64});
  EXPECT_EQ(optimizer.stepCount(1), 0);
  optimizer.step({{grad}, {grad}});
  EXPECT_EQ(optimizer.stepCount(), 3);
  EXPECT_EQ(optimizer.stepCount(0), 3);
  EXPECT_EQ(optimizer.stepCount(1), 1);
  EXPECT_THROW(optimizer.stepCount(2), std::out_of_range);

  std::stringstream saved;
  optimizer.saveState(saved);
  std::vector<float> hostA(64, 0.5f), hostB(64, 0.25f);
  optrt::Optimizer cpu(compiled("adamw").host);
  cpu.addGroup({hostA.data()}, {64});
  cpu.addGroup({hostB.data()}, {64});
  cpu.loadState(saved);
  EXPECT_EQ(cpu.stepCount(0), 3);
  EXPECT_EQ(cpu.stepCount(1), 1);

  cpu.step({{hostA.data()}, {hostB.data()}});
  std::stringstream back;
  cpu.saveState(back);
  optimizer.loadState(back);
  EXPECT_EQ(optimizer.stepCount(), 4);
  EXPECT_EQ(optimizer.stepCount(0), 4);
  EXPECT_EQ(optimizer.stepCount(1), 2);
}

TEST_F(FakeDriverTest, HypersLiveInDeviceMemoryPerGroup) {
  optrt::CudaOptimizer optimizer(compiled("adamw").host, deviceCopy("adamw"));
  DevicePtr a = fake().alloc(64), b = fake().alloc(64), grad = fake().alloc(64);
  optimizer.addGroup({a}, {16}, {{"lr", 0.5}});
  optimizer.addGroup({b}, {16}, {{"lr", 0.25}});
  auto deviceValue = [&](const char *name, int group) {
    return *reinterpret_cast<const double *>(optimizer.hyperAddress(name, group)); // fake: host memory
  };
  EXPECT_EQ(deviceValue("lr", 0), 0.5);
  EXPECT_EQ(deviceValue("lr", 1), 0.25);
  EXPECT_EQ(deviceValue("beta2", 1), 0.999);
  optimizer.setHyper("lr", 0.125, 1);
  EXPECT_EQ(deviceValue("lr", 1), 0.25); // reaches the device with the next step
  optimizer.step({{grad}, {grad}});
  EXPECT_EQ(deviceValue("lr", 1), 0.125);
  EXPECT_EQ(deviceValue("lr", 0), 0.5);
  EXPECT_THROW(optimizer.hyperAddress("learning_rate", 0), std::invalid_argument);
  EXPECT_THROW(optimizer.hyperAddress("lr", 2), std::out_of_range);
}

TEST_F(FakeDriverTest, ShapesReachTheDevicesScalarStates) {
  // mars reads `rank` (pytorch-optimizer's 1-D path): the runtime writes each
  // tensor's dimensions into its hidden scalar states in device memory.
  optrt::CudaOptimizer optimizer(compiled("mars").host, deviceCopy("mars"));
  DevicePtr matrix = fake().alloc(24 * sizeof(float)), vector = fake().alloc(7 * sizeof(float));
  try {
    optimizer.addGroup({matrix, vector}, {24, 7}, {}, {{4, 5}, {7}});
    ADD_FAILURE() << "a 4x5 shape for 24 elements was accepted";
  } catch (const std::invalid_argument &e) {
    EXPECT_EQ(std::string(e.what()), "optrt::CudaOptimizer::addGroup: group 0: tensor 0 has shape 4x5, which does "
                                     "not hold its 24 elements");
  }
  EXPECT_EQ(optimizer.numGroups(), 0);
  optimizer.addGroup({matrix, vector}, {24, 7}, {}, {{2, 3, 4}, {7}});
  EXPECT_EQ(optimizer.scalarState("shape(rank)", 0, 0), 3.0);
  EXPECT_EQ(optimizer.scalarState("shape(rank)", 0, 1), 1.0);
  // Only what the rule reads is kept: mars reads the rank alone.
  EXPECT_THROW(optimizer.scalarState("shape(rows)", 0, 0), std::invalid_argument);
}

TEST_F(FakeDriverTest, BadGradientIsNamedBeforeAnyLaunch) {
  optrt::CudaOptimizer optimizer(compiled("nadam").host, deviceCopy("nadam"));
  DevicePtr param = fake().alloc(64 * sizeof(float)), grad = fake().alloc(64 * sizeof(float)),
            shortGrad = fake().alloc(63 * sizeof(float));
  optimizer.addGroup({param}, {64});
  fake().reset();
  CudaError e = expectCudaError(CudaErrc::BadPointer, [&] { optimizer.step({{shortGrad}}); });
  EXPECT_NE(std::string(e.what()).find("the gradient of tensor 0 of group 0"), std::string::npos) << e.what();
  EXPECT_EQ(fake().numLaunches(), 0u);
  EXPECT_EQ(optimizer.stepCount(), 0);
  EXPECT_THROW(optimizer.step({{0}}), std::invalid_argument);
  EXPECT_THROW(optimizer.step({{grad, grad}}), std::invalid_argument);
  optimizer.step({{grad}});
  EXPECT_EQ(optimizer.stepCount(), 1);
  EXPECT_EQ(std::string(fake().launch(fake().numLaunches() - 2)), compiled("nadam").device.scalarsEntry);
  EXPECT_DOUBLE_EQ(optimizer.scalarState("mu_product", 0, 0), 1.0); // no kernel ran: the initial value
}

} // namespace
