// An NCCL engine over the ranks of an MPI communicator
// (optrt/MpiCommunicator.h): rank 0 makes NCCL's unique id, MPI broadcasts
// it, every rank joins on its GPU. The ranks agree before each collective
// step, so NCCL or a GPU missing on one rank is an error on every rank.
#include "optrt/MpiCommunicator.h"

#include "../cuda/DeviceMemory.h"
#include "../nccl/NcclEngine.h"
#include "../shard/Agreement.h"

#include <stdexcept>
#include <string>
#include <vector>

namespace optrt {

std::shared_ptr<Communicator> ncclCommunicator(MPI_Comm comm, int device) {
  // mpiCommunicator checks MPI and comm; its agreement carries the errors.
  std::shared_ptr<Communicator> mpi = mpiCommunicator(comm);
  const char *caller = "optrt::ncclCommunicator";
  const nccl::Library *nccl = nullptr;
  const cuda::Driver *d = nullptr;
  // The device's primary context, held until the engine holds its own:
  // released on every way out.
  struct Retained {
    const cuda::Driver *d = nullptr;
    cuda::CUdevice device = 0;
    cuda::CUcontext context = nullptr;
    ~Retained() {
      if (context)
        d->cuDevicePrimaryCtxRelease_v2(device);
    }
  } retained;
  nccl::UniqueId id{};
  detail::checkOnEveryRank(*mpi, caller, "the NCCL set-up", "", [&] {
    if (device < 0)
      throw std::invalid_argument(std::string(caller) + ": the device ordinal must be 0 or more, not " +
                                  std::to_string(device));
    nccl = &nccl::library();
    d = &cuda::driver();
    int count = 0;
    d->check(d->cuDeviceGetCount(&count), "cuDeviceGetCount");
    if (device >= count)
      throw CudaError(CudaErrc::NoDevice, std::string(caller) + ": CUDA device " + std::to_string(device) +
                                              " requested; the driver sees " + std::to_string(count));
    if (mpi->rank() == 0)
      nccl->check(nccl->ncclGetUniqueId(&id), "ncclGetUniqueId");
    retained.d = d;
    d->check(d->cuDeviceGet(&retained.device, device), "cuDeviceGet");
    d->check(d->cuDevicePrimaryCtxRetain(&retained.context, retained.device), "cuDevicePrimaryCtxRetain");
  });
  // Rank 0's id to every rank, over the duplicated communicator.
  std::vector<nccl::UniqueId> ids(static_cast<size_t>(mpi->size()));
  mpi->allGather(&id, ids.data(), sizeof id);
  ncclComm_t made = nullptr;
  try {
    detail::checkOnEveryRank(*mpi, caller, "the NCCL set-up", "", [&] {
      // NCCL joins the GPU of the current context.
      cuda::ContextScope scope(*d, retained.context);
      nccl->check(nccl->ncclCommInitRank(&made, mpi->size(), ids[0], mpi->rank()), "ncclCommInitRank");
    });
  } catch (...) {
    if (made) // joined here, failed elsewhere
      nccl->ncclCommDestroy(made);
    throw;
  }
  return nccl::makeEngine(*nccl, made, true);
}

} // namespace optrt
