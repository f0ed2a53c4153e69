// Without libcuda.so.1 (OPTDSL_LIBCUDA points at a file that does not exist,
// so this holds on GPU machines too), making a CudaOptimizer is a named
// error that says what is missing.
#include "common/RuleLibrary.h"
#include "optdsl/CUDACompile.h"
#include "optdsl/JIT.h"
#include "optrt/CudaOptimizer.h"

#include "cuda/Driver.h"

#include <gtest/gtest.h>

namespace {

TEST(NoDriver, LoadingAMissingLibraryIsNamed) {
  try {
    optrt::cuda::loadDriver("libcuda-that-does-not-exist.so.1");
    FAIL() << "no error";
  } catch (const optrt::CudaError &e) {
    EXPECT_EQ(e.code(), optrt::CudaErrc::NoDriver);
    EXPECT_NE(std::string(e.what()).find("no CUDA driver (libcuda-that-does-not-exist.so.1 not found)"),
              std::string::npos)
        << e.what();
  }
}

TEST(NoDriver, CudaOptimizerSaysSo) {
  if (!optdsl::findCudaToolkit())
    GTEST_SKIP() << "no CUDA toolkit (libdevice) to build the kernels with";
  optdsl::CheckedRule rule = optdsl::loadRuleFile(optdsl::test::ruleLibraryDir() + "/adamw.opt");
  auto host = optdsl::jitCompile(rule);
  auto device = std::make_shared<optrt::CudaKernels>(optdsl::cudaCompile(rule));
  try {
    optrt::CudaOptimizer optimizer(host, device);
    FAIL() << "no error";
  } catch (const optrt::CudaError &e) {
    EXPECT_EQ(e.code(), optrt::CudaErrc::NoDriver);
    EXPECT_NE(std::string(e.what()).find("no CUDA driver ("), std::string::npos) << e.what();
  }
  // Malformed arguments are still reported as such, before the driver.
  EXPECT_THROW(optrt::CudaOptimizer(host, nullptr), std::invalid_argument);
}

} // namespace
