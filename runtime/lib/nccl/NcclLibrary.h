// NCCL, loaded at run time with dlopen like the CUDA driver (cuda/Driver.h),
// so that one build of the runtime runs with and without it and never links
// libnccl. The few types and constants used are declared here with nccl.h's
// values (2.10 and later; they are ABI and do not move).
#pragma once

#include "optrt/NcclCommunicator.h"

#include <cstddef>
#include <string>

namespace optrt::nccl {

using ncclResult_t = int;
using ncclDataType_t = int;
using ncclRedOp_t = int;
using cudaStream_t = void *; // a CUstream: the runtime and driver streams are one type

inline constexpr ncclResult_t ncclSuccess = 0;
inline constexpr ncclDataType_t ncclUint8 = 1;
inline constexpr ncclDataType_t ncclFloat16 = 6;
inline constexpr ncclDataType_t ncclFloat32 = 7;
inline constexpr ncclDataType_t ncclBfloat16 = 9;
inline constexpr ncclRedOp_t ncclSum = 0;
inline constexpr int kUniqueIdBytes = 128; // NCCL_UNIQUE_ID_BYTES

/// ncclUniqueId: what rank 0 makes and every rank passes to ncclCommInitRank.
struct UniqueId {
  char internal[kUniqueIdBytes];
};

/// The NCCL version whose bf16 reductions the engine needs (2.10.0), in
/// ncclGetVersion's encoding (major * 10000 + minor * 100 + patch).
inline constexpr int kOldestVersion = 21000;

/// The NCCL functions the engine uses, by their exported names.
struct Library {
  ncclResult_t (*ncclGetVersion)(int *);
  const char *(*ncclGetErrorString)(ncclResult_t);
  const char *(*ncclGetLastError)(ncclComm_t); // NCCL 2.13 and later; may be null
  ncclResult_t (*ncclGetUniqueId)(UniqueId *);
  ncclResult_t (*ncclCommInitRank)(ncclComm_t *, int, UniqueId, int);
  ncclResult_t (*ncclCommDestroy)(ncclComm_t);
  ncclResult_t (*ncclCommCount)(ncclComm_t, int *);
  ncclResult_t (*ncclCommUserRank)(ncclComm_t, int *);
  ncclResult_t (*ncclCommCuDevice)(ncclComm_t, int *);
  ncclResult_t (*ncclGroupStart)();
  ncclResult_t (*ncclGroupEnd)();
  ncclResult_t (*ncclAllGather)(const void *, void *, size_t, ncclDataType_t, ncclComm_t, cudaStream_t);
  ncclResult_t (*ncclReduceScatter)(const void *, void *, size_t, ncclDataType_t, ncclRedOp_t, ncclComm_t,
                                    cudaStream_t);
  ncclResult_t (*ncclReduce)(const void *, void *, size_t, ncclDataType_t, ncclRedOp_t, int, ncclComm_t,
                             cudaStream_t);
  ncclResult_t (*ncclBroadcast)(const void *, void *, size_t, ncclDataType_t, int, ncclComm_t, cudaStream_t);

  /// Throws std::runtime_error "optrt NCCL communicator: CALL failed: WHY"
  /// (NCCL's string for the result, and its last error where it keeps one)
  /// unless `result` is ncclSuccess.
  void check(ncclResult_t result, const char *call, ncclComm_t comm = nullptr) const;
};

/// The process's NCCL: $OPTDSL_LIBNCCL if set, else libnccl.so.2, loaded
/// once. Throws std::runtime_error naming the library and what is missing
/// (the library, a function, or a version before 2.10); a later call tries
/// again.
const Library &library();

} // namespace optrt::nccl
