// NCCL that cannot be loaded, or is older than the engine needs: named
// errors before anything else happens (no MPI needed); and the installed
// NCCL, where there is one, resolved as the engine declares it.
#include "optrt/NcclCommunicator.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <stdexcept>
#include <string>

namespace {

std::string messageOf(ncclComm_t comm) {
  try {
    optrt::ncclCommunicator(comm);
  } catch (const std::runtime_error &e) {
    return e.what();
  }
  ADD_FAILURE() << "no std::runtime_error";
  return "";
}

// Never used by a collective: the library's checks come first.
ncclComm_t anyComm() { return reinterpret_cast<ncclComm_t>(0x1); }

TEST(NcclMissing, NamesTheLibraryAndHowToGetIt) {
  setenv("OPTDSL_LIBNCCL", "/nonexistent/libnccl.so.2", 1);
  std::string message = messageOf(anyComm());
  EXPECT_NE(message.find("NCCL is not available (/nonexistent/libnccl.so.2 not found"), std::string::npos) << message;
  EXPECT_NE(message.find("OPTDSL_LIBNCCL"), std::string::npos) << message;
}

TEST(NcclTooOld, NamesTheVersionNeeded) {
  setenv("OPTDSL_LIBNCCL", OPTDSL_FAKE_NCCL, 1);
  setenv("FAKE_NCCL_VERSION", "20903", 1); // 2.9.3: no bf16 reductions
  std::string message = messageOf(anyComm());
  EXPECT_NE(message.find("is NCCL version code 20903; bf16 reductions need NCCL 2.10 or later"), std::string::npos)
      << message;
}

// The NCCL installed here (the CUDA toolkit's, where present) loads: every
// function the engine resolves is there with the declared names, and its
// version is new enough; the next thing missing is the GPU (the driver).
// Last: a library loaded once stays loaded.
TEST(NcclInstalled, LoadsAndTheDriverIsWhatIsMissing) {
  unsetenv("OPTDSL_LIBNCCL");
  unsetenv("FAKE_NCCL_VERSION");
  setenv("OPTDSL_LIBCUDA", "/nonexistent/libcuda.so.1", 1);
  std::string message = messageOf(anyComm());
  if (message.find("NCCL is not available") != std::string::npos)
    GTEST_SKIP() << "no libnccl.so.2 installed: " << message;
  EXPECT_NE(message.find("no CUDA driver"), std::string::npos) << message;
}

} // namespace
