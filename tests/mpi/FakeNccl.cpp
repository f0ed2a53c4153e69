// A stand-in for libnccl.so.2 over MPI, for the NCCL engine's tests
// (tests/mpi/NcclCommunicatorTest.cpp) on machines without GPUs: the fake
// CUDA driver's device memory is host memory, so each NCCL collective is
// done with MPI on the same addresses. It is strict where NCCL is: every
// buffer must be device memory (asked of the fake driver loaded by the
// runtime), reduce needs a receive buffer at the root, grouped calls run at
// ncclGroupEnd; and it reduces as NCCL does: 16-bit values added in f32 with
// each sum rounded, and ncclAvg multiplying each value by 1/N before the sum
// (the engine must not use it). Calls are recorded by name and stream, and a
// call can be made to fail (fake_nccl_fail). Loaded through OPTDSL_LIBNCCL.
#include <mpi.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <dlfcn.h>

struct ncclComm {
  MPI_Comm mpi;
  int rank, size, device;
};

namespace {

using ncclResult_t = int;
constexpr ncclResult_t kSuccess = 0, kInvalidArgument = 4, kInvalidUsage = 5;
constexpr int kUint8 = 1, kFloat16 = 6, kFloat32 = 7, kBfloat16 = 9;
constexpr int kSum = 0, kAvg = 4;
constexpr char kIdMagic[] = "optdsl fake NCCL unique id";

struct UniqueId {
  char internal[128];
};

struct State {
  std::map<std::string, int> failures; // call -> result it returns
  std::vector<std::string> calls;      // "ncclReduce" ...
  std::vector<void *> streams;         // the stream of each collective
  std::vector<std::function<void()>> pending; // a group's collectives
  int groupDepth = 0;
  int liveComms = 0;
  std::string lastError;
};

State &state() {
  static State &s = *new State(); // never destroyed: used until exit
  return s;
}

ncclResult_t fail(const std::string &why, ncclResult_t result) {
  state().lastError = why;
  return result;
}

// The fake driver's answer to "is this device memory?".
bool isDeviceMemory(const void *p) {
  using Query = int (*)(void *, int, unsigned long long);
  static Query query = [] {
    const char *path = std::getenv("OPTDSL_LIBCUDA");
    void *driver = path ? dlopen(path, RTLD_NOW | RTLD_NOLOAD) : nullptr;
    return driver ? reinterpret_cast<Query>(dlsym(driver, "cuPointerGetAttribute")) : nullptr;
  }();
  unsigned long long start = 0;
  return query && query(&start, 11 /* RANGE_START_ADDR */, reinterpret_cast<unsigned long long>(p)) == 0;
}

size_t unitOf(int type) { return type == kFloat32 ? 4 : type == kUint8 ? 1 : 2; }

float decode(int type, const char *at) {
  if (type == kFloat32) {
    float f;
    std::memcpy(&f, at, 4);
    return f;
  }
  uint16_t h;
  std::memcpy(&h, at, 2);
  if (type == kFloat16) {
    _Float16 x;
    std::memcpy(&x, &h, 2);
    return static_cast<float>(x);
  }
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

void encode(int type, float value, char *at) {
  if (type == kFloat32) {
    std::memcpy(at, &value, 4);
    return;
  }
  uint16_t h;
  if (type == kFloat16) {
    auto x = static_cast<_Float16>(value);
    std::memcpy(&h, &x, 2);
  } else {
    uint32_t bits;
    std::memcpy(&bits, &value, 4);
    h = static_cast<uint16_t>((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16); // to nearest even (finite values)
  }
  std::memcpy(at, &h, 2);
}

// out = the ranks' values (contributions[r] at r * stride) combined in rank
// order as NCCL combines them: each sum rounded in the type; ncclAvg
// multiplies each value by 1/N first.
void combine(int type, int op, const std::vector<char> &contributions, size_t stride, int ranks, size_t count,
             char *out) {
  size_t unit = unitOf(type);
  for (size_t i = 0; i < count; ++i) {
    char sum[4];
    for (int r = 0; r < ranks; ++r) {
      float value = decode(type, contributions.data() + static_cast<size_t>(r) * stride + i * unit);
      if (op == kAvg) {
        char scaled[4];
        encode(type, value * (1.0f / static_cast<float>(ranks)), scaled);
        value = decode(type, scaled);
      }
      encode(type, r == 0 ? value : decode(type, sum) + value, sum);
    }
    std::memcpy(out + i * unit, sum, unit);
  }
}

bool addable(int type) { return type == kFloat32 || type == kFloat16 || type == kBfloat16; }

// Runs `collective` now, or at ncclGroupEnd inside a group; records it.
ncclResult_t enqueue(const char *call, void *stream, std::function<void()> collective) {
  auto it = state().failures.find(call);
  if (it != state().failures.end())
    return fail(std::string("fake NCCL: ") + call + " was told to fail", it->second);
  state().calls.push_back(call);
  state().streams.push_back(stream);
  if (state().groupDepth > 0)
    state().pending.push_back(std::move(collective));
  else
    collective();
  return kSuccess;
}

} // namespace

extern "C" {

// --- control, for the tests -------------------------------------------------
void fake_nccl_reset() {
  state().failures.clear();
  state().calls.clear();
  state().streams.clear();
}
void fake_nccl_fail(const char *call, int result) { state().failures[call] = result; }
size_t fake_nccl_num_calls() { return state().calls.size(); }
const char *fake_nccl_call(size_t i) { return state().calls.at(i).c_str(); }
void *fake_nccl_stream(size_t i) { return state().streams.at(i); }
int fake_nccl_live_comms() { return state().liveComms; }

// --- the NCCL API subset the runtime resolves --------------------------------
ncclResult_t ncclGetVersion(int *version) {
  const char *forced = std::getenv("FAKE_NCCL_VERSION");
  *version = forced ? std::atoi(forced) : 21903;
  return kSuccess;
}
const char *ncclGetErrorString(ncclResult_t result) {
  switch (result) {
  case 0: return "no error";
  case 1: return "unhandled cuda error (run with NCCL_DEBUG=INFO for details)";
  case 2: return "unhandled system error (run with NCCL_DEBUG=INFO for details)";
  case 3: return "internal error - please report this issue to the NCCL developers";
  case 4: return "invalid argument (run with NCCL_DEBUG=WARN for details)";
  case 5: return "invalid usage (run with NCCL_DEBUG=WARN for details)";
  case 6: return "remote process exited or there was a network error";
  }
  return "unknown result code";
}
const char *ncclGetLastError(ncclComm *) { return state().lastError.c_str(); }
ncclResult_t ncclGetUniqueId(UniqueId *id) {
  auto it = state().failures.find("ncclGetUniqueId");
  if (it != state().failures.end())
    return fail("fake NCCL: ncclGetUniqueId was told to fail", it->second);
  std::memset(id, 0, sizeof *id);
  std::memcpy(id->internal, kIdMagic, sizeof kIdMagic);
  return kSuccess;
}
ncclResult_t ncclCommInitRank(ncclComm **comm, int ranks, UniqueId id, int rank) {
  if (std::memcmp(id.internal, kIdMagic, sizeof kIdMagic) != 0)
    return fail("fake NCCL: not a unique id from ncclGetUniqueId", kInvalidArgument);
  auto *made = new ncclComm{MPI_COMM_NULL, rank, ranks, 0};
  MPI_Comm_split(MPI_COMM_WORLD, 0, rank, &made->mpi);
  int size = 0;
  MPI_Comm_size(made->mpi, &size);
  if (size != ranks) {
    MPI_Comm_free(&made->mpi);
    delete made;
    return fail("fake NCCL: a communicator of all the MPI world's ranks only", kInvalidUsage);
  }
  *comm = made;
  ++state().liveComms;
  return kSuccess;
}
ncclResult_t ncclCommDestroy(ncclComm *comm) {
  MPI_Comm_free(&comm->mpi);
  delete comm;
  --state().liveComms;
  return kSuccess;
}
ncclResult_t ncclCommCount(ncclComm *comm, int *count) {
  *count = comm->size;
  return kSuccess;
}
ncclResult_t ncclCommUserRank(ncclComm *comm, int *rank) {
  *rank = comm->rank;
  return kSuccess;
}
ncclResult_t ncclCommCuDevice(ncclComm *comm, int *device) {
  *device = comm->device;
  return kSuccess;
}
ncclResult_t ncclGroupStart() {
  ++state().groupDepth;
  return kSuccess;
}
ncclResult_t ncclGroupEnd() {
  if (state().groupDepth == 0)
    return fail("fake NCCL: ncclGroupEnd without ncclGroupStart", kInvalidUsage);
  if (--state().groupDepth == 0) {
    std::vector<std::function<void()>> run;
    run.swap(state().pending);
    for (auto &collective : run)
      collective();
  }
  return kSuccess;
}

ncclResult_t ncclAllGather(const void *send, void *recv, size_t count, int type, ncclComm *comm, void *stream) {
  if (!isDeviceMemory(send) || !isDeviceMemory(recv))
    return fail("fake NCCL: ncclAllGather of host memory", kInvalidArgument);
  size_t bytes = count * unitOf(type);
  return enqueue("ncclAllGather", stream, [=] {
    auto *all = static_cast<char *>(recv);
    if (send == all + bytes * static_cast<size_t>(comm->rank))
      MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, all, static_cast<int>(bytes), MPI_BYTE, comm->mpi);
    else
      MPI_Allgather(send, static_cast<int>(bytes), MPI_BYTE, all, static_cast<int>(bytes), MPI_BYTE, comm->mpi);
  });
}

ncclResult_t ncclReduceScatter(const void *send, void *recv, size_t count, int type, int op, ncclComm *comm,
                               void *stream) {
  if (!isDeviceMemory(send) || !isDeviceMemory(recv))
    return fail("fake NCCL: ncclReduceScatter of host memory", kInvalidArgument);
  if (!addable(type) || (op != kSum && op != kAvg))
    return fail("fake NCCL: only sums and averages of floats", kInvalidArgument);
  return enqueue("ncclReduceScatter", stream, [=] {
    size_t unit = unitOf(type), whole = count * unit * static_cast<size_t>(comm->size);
    std::vector<char> all(whole * static_cast<size_t>(comm->size));
    MPI_Allgather(send, static_cast<int>(whole), MPI_BYTE, all.data(), static_cast<int>(whole), MPI_BYTE,
                  comm->mpi);
    // Rank r's contribution to this rank's part starts at r * whole + mine.
    std::vector<char> parts(all.begin() + static_cast<std::ptrdiff_t>(count * unit * comm->rank), all.end());
    combine(type, op, parts, whole, comm->size, count, static_cast<char *>(recv));
  });
}

ncclResult_t ncclReduce(const void *send, void *recv, size_t count, int type, int op, int root, ncclComm *comm,
                        void *stream) {
  if (!isDeviceMemory(send) || (comm->rank == root && !isDeviceMemory(recv)))
    return fail("fake NCCL: ncclReduce of host memory, or no receive buffer at the root", kInvalidArgument);
  if (!addable(type) || (op != kSum && op != kAvg))
    return fail("fake NCCL: only sums and averages of floats", kInvalidArgument);
  return enqueue("ncclReduce", stream, [=] {
    size_t bytes = count * unitOf(type);
    std::vector<char> all(comm->rank == root ? bytes * static_cast<size_t>(comm->size) : 0);
    MPI_Gather(send, static_cast<int>(bytes), MPI_BYTE, all.data(), static_cast<int>(bytes), MPI_BYTE, root,
               comm->mpi);
    if (comm->rank == root)
      combine(type, op, all, bytes, comm->size, count, static_cast<char *>(recv));
  });
}

ncclResult_t ncclBroadcast(const void *send, void *recv, size_t count, int type, int root, ncclComm *comm,
                           void *stream) {
  if (!isDeviceMemory(recv) || (comm->rank == root && !isDeviceMemory(send)))
    return fail("fake NCCL: ncclBroadcast of host memory", kInvalidArgument);
  return enqueue("ncclBroadcast", stream, [=] {
    size_t bytes = count * unitOf(type);
    if (comm->rank == root && send != recv)
      std::memmove(recv, send, bytes);
    MPI_Bcast(recv, static_cast<int>(bytes), MPI_BYTE, root, comm->mpi);
  });
}

} // extern "C"
