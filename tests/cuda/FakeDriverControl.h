// The fake driver's control functions (FakeDriver.cpp), looked up in the
// library the runtime loads too ($OPTDSL_LIBCUDA), for the host-side tests.
#pragma once

#include "optrt/CudaOptimizer.h"

#include <cstdlib>
#include <dlfcn.h>
#include <stdexcept>
#include <string>
#include <type_traits>

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

} // namespace optdsl::test
