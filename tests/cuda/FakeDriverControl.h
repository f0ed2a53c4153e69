// The fake driver's control functions (FakeDriver.cpp), looked up in the
// library the runtime loads too ($OPTDSL_LIBCUDA), for the host-side tests.
#pragma once

#include "common/BranchHypers.h"
#include "common/RuleLibrary.h"
#include "optdsl/CUDACompile.h"
#include "optdsl/JIT.h"
#include "optrt/CudaOptimizer.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <dlfcn.h>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace optdsl::test {

using optrt::DevicePtr;

/// The fake's control functions, from the library the runtime loads too.
struct Fake {
  void (*reset)();
  void (*set)(const char *, long long);
  size_t (*numLaunches)();
  const char *(*launch)(size_t);
  unsigned (*launchGrid)(size_t);
  size_t (*liveBytes)();
  DevicePtr (*allocForeign)(size_t);
  DevicePtr (*alloc)(size_t);
  DevicePtr (*allocMapped)(size_t, int);

  static Fake &get() {
    static Fake fake = [] {
      void *handle = dlopen(std::getenv("OPTDSL_LIBCUDA"), RTLD_NOW | RTLD_LOCAL);
      if (!handle)
        throw std::runtime_error("the fake driver is not loadable: set OPTDSL_LIBCUDA");
      Fake f{};
      auto sym = [&](auto &fn, const char *name) {
        fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(handle, name));
        if (!fn)
          throw std::runtime_error(std::string("fake driver lacks ") + name);
      };
      sym(f.reset, "fake_cuda_reset");
      sym(f.set, "fake_cuda_set");
      sym(f.numLaunches, "fake_cuda_num_launches");
      sym(f.launch, "fake_cuda_launch");
      sym(f.launchGrid, "fake_cuda_launch_grid");
      sym(f.liveBytes, "fake_cuda_live_bytes");
      sym(f.allocForeign, "fake_cuda_alloc_foreign");
      sym(f.alloc, "fake_cuda_alloc");
      sym(f.allocMapped, "fake_cuda_alloc_mapped");
      return f;
    }();
    return fake;
  }
};

/// A test against the fake driver (`Base`: ::testing::Test or a
/// TestWithParam): skipped where there is no CUDA toolkit to build kernels
/// with, the fake reset before each test.
template <typename Base> class FakeDriverFixture : public Base {
protected:
  void SetUp() override {
    if (!optdsl::findCudaToolkit())
      GTEST_SKIP() << "no CUDA toolkit (libdevice) to build the kernels with";
    Fake::get().reset();
  }
  Fake &fake() { return Fake::get(); }
};

/// A library rule's host kernels for `layouts` and the CUDA kernels of each
/// layout (q8 layouts bring their small-tensor fallback), not assembled.
struct LayoutRule {
  std::shared_ptr<const optrt::RuleKernels> host;
  std::vector<std::shared_ptr<const optrt::CudaKernels>> device;
};

inline LayoutRule compileLayouts(const std::string &name, const std::vector<std::string> &layouts) {
  optdsl::CheckedRule rule = optdsl::loadRuleFile(ruleLibraryDir() + "/" + name + ".opt");
  optdsl::FixedHypers fixed = cudaFixedHypers(name);
  LayoutRule result{optdsl::jitCompile(rule, fixed, layouts), {}};
  for (const optrt::LayoutKernels &layout : result.host->layouts) {
    optdsl::CudaCompileOptions options;
    options.layout = layout.name;
    options.assemble = false;
    result.device.push_back(std::make_shared<optrt::CudaKernels>(optdsl::cudaCompile(rule, fixed, options)));
  }
  return result;
}

/// The kernels one step launches, in order (optrt/CudaKernels.h): per phase
/// its uniforms, element and (where it has one) finish kernel, then scalars
/// (where the rule has scalar states) and advance.
inline std::vector<std::string> stepLaunches(const optrt::CudaKernels &k) {
  std::vector<std::string> names;
  for (size_t p = 0; p < k.uniformsEntries.size(); ++p) {
    names.push_back(k.uniformsEntries[p]);
    names.push_back(k.elementEntries[p]);
    if (!k.finishEntries[p].empty())
      names.push_back(k.finishEntries[p]);
  }
  if (!k.scalarsEntry.empty())
    names.push_back(k.scalarsEntry);
  names.push_back(k.advanceEntry);
  return names;
}

/// The kernels the fake driver launched since its last reset.
inline std::vector<std::string> launchedKernels() {
  std::vector<std::string> names;
  for (size_t i = 0; i < Fake::get().numLaunches(); ++i)
    names.push_back(Fake::get().launch(i));
  return names;
}

} // namespace optdsl::test
