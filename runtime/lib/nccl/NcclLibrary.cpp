#include "NcclLibrary.h"

#include <cstdlib>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <type_traits>

#include <dlfcn.h>

namespace optrt::nccl {

void Library::check(ncclResult_t result, const char *call, ncclComm_t comm) const {
  if (result == ncclSuccess)
    return;
  std::string why = ncclGetErrorString ? ncclGetErrorString(result) : "";
  if (why.empty())
    why = "ncclResult_t " + std::to_string(result);
  if (ncclGetLastError) {
    const char *last = ncclGetLastError(comm);
    if (last && *last)
      why += " (" + std::string(last) + ")";
  }
  throw std::runtime_error(std::string("optrt NCCL communicator: ") + call + " failed: " + why);
}

namespace {

Library load(const std::string &name) {
  // Never unloaded: NCCL keeps threads for the process.
  void *handle = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    const char *why = dlerror();
    throw std::runtime_error("optrt NCCL communicator: NCCL is not available (" + name +
                             " not found: " + (why ? why : "dlopen failed") +
                             "); install NCCL 2.10 or later (Debian: libnccl2) or set OPTDSL_LIBNCCL to its path");
  }
  Library l{};
  auto resolve = [&](auto &fn, const char *symbol, bool required) {
    fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(handle, symbol));
    if (!fn && required)
      throw std::runtime_error("optrt NCCL communicator: " + name + " lacks " + symbol +
                               " (NCCL 2.10 or later is needed)");
  };
#define OPTRT_RESOLVE(symbol) resolve(l.symbol, #symbol, true)
  OPTRT_RESOLVE(ncclGetVersion);
  OPTRT_RESOLVE(ncclGetErrorString);
  resolve(l.ncclGetLastError, "ncclGetLastError", false);
  OPTRT_RESOLVE(ncclGetUniqueId);
  OPTRT_RESOLVE(ncclCommInitRank);
  OPTRT_RESOLVE(ncclCommDestroy);
  OPTRT_RESOLVE(ncclCommCount);
  OPTRT_RESOLVE(ncclCommUserRank);
  OPTRT_RESOLVE(ncclCommCuDevice);
  OPTRT_RESOLVE(ncclGroupStart);
  OPTRT_RESOLVE(ncclGroupEnd);
  OPTRT_RESOLVE(ncclAllGather);
  OPTRT_RESOLVE(ncclReduceScatter);
  OPTRT_RESOLVE(ncclReduce);
  OPTRT_RESOLVE(ncclBroadcast);
#undef OPTRT_RESOLVE
  int version = 0;
  l.check(l.ncclGetVersion(&version), "ncclGetVersion");
  if (version < kOldestVersion)
    throw std::runtime_error("optrt NCCL communicator: " + name + " is NCCL version code " +
                             std::to_string(version) + "; bf16 reductions need NCCL 2.10 or later (" +
                             std::to_string(kOldestVersion) + ")");
  return l;
}

} // namespace

const Library &library() {
  static std::mutex mutex;
  static std::optional<Library> loaded;
  std::lock_guard<std::mutex> lock(mutex);
  if (!loaded) {
    const char *override = std::getenv("OPTDSL_LIBNCCL");
    loaded = load(override && *override ? override : "libnccl.so.2");
  }
  return *loaded;
}

} // namespace optrt::nccl
