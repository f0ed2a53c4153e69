// The NCCL engine (optrt/NcclCommunicator.h): which NCCL calls make each
// collective, and the division that makes NCCL's sum the Communicator's mean.
#include "NcclEngine.h"

#include "../cuda/DeviceMemory.h"
#include "DivideKernels.h"
#include "optrt/Storage.h"

#include <algorithm>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace optrt {

namespace nccl {

namespace {

ncclDataType_t ncclType(Dtype dtype) {
  switch (dtype) {
  case Dtype::F32: return ncclFloat32;
  case Dtype::BF16: return ncclBfloat16;
  case Dtype::F16: return ncclFloat16;
  default:
    throw std::invalid_argument("optrt NCCL communicator: reduceScatter adds f32, bf16 or f16, not " +
                                dtypeName(dtype));
  }
}

bool allEqual(std::span<const size_t> parts) {
  return std::all_of(parts.begin(), parts.end(), [&](size_t part) { return part == parts[0]; });
}

class NcclCommunicator final : public Communicator {
public:
  NcclCommunicator(const Library &nccl, ncclComm_t comm, bool owned) : nccl_(nccl), comm_(comm), owned_(owned) {
    try {
      d_ = &cuda::driver();
      nccl.check(nccl.ncclCommCount(comm, &size_), "ncclCommCount", comm);
      nccl.check(nccl.ncclCommUserRank(comm, &rank_), "ncclCommUserRank", comm);
      int ordinal = 0;
      nccl.check(nccl.ncclCommCuDevice(comm, &ordinal), "ncclCommCuDevice", comm);
      d_->check(d_->cuDeviceGet(&device_, ordinal), "cuDeviceGet");
      d_->check(d_->cuDevicePrimaryCtxRetain(&context_, device_), "cuDevicePrimaryCtxRetain");
    } catch (...) {
      if (owned_)
        nccl_.ncclCommDestroy(comm_);
      throw;
    }
  }
  ~NcclCommunicator() override {
    // Kernels and memory go while the context is still retained.
    divide_.reset();
    staging_ = cuda::DeviceMemory();
    if (context_)
      d_->cuDevicePrimaryCtxRelease_v2(device_);
    if (owned_)
      nccl_.ncclCommDestroy(comm_);
  }
  NcclCommunicator(const NcclCommunicator &) = delete;
  NcclCommunicator &operator=(const NcclCommunicator &) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string engine() const override { return "NCCL"; }
  Memory memory() const override { return Memory::Device; }

  // Host records through a device buffer, on the legacy default stream, so
  // the synchronous copy back waits for the all-gather.
  void allGather(const void *mine, void *all, size_t bytes) override {
    if (bytes == 0)
      return;
    cuda::ContextScope scope(*d_, context_);
    size_t total = bytes * static_cast<size_t>(size_);
    if (staging_.bytes() < total)
      staging_ = cuda::DeviceMemory(*d_, context_, total, "NCCL engine's staging buffer");
    cuda::CUdeviceptr own = staging_.get() + bytes * static_cast<size_t>(rank_);
    d_->check(d_->cuMemcpyHtoDAsync_v2(own, mine, bytes, nullptr), "cuMemcpyHtoDAsync_v2");
    nccl_.check(nccl_.ncclAllGather(pointer(own), pointer(staging_.get()), bytes, ncclUint8, comm_, nullptr),
                "ncclAllGather", comm_);
    d_->check(d_->cuMemcpyDtoH_v2(all, staging_.get(), total), "cuMemcpyDtoH_v2");
  }

  void allGatherInPlace(void *buffer, std::span<const size_t> bytesPerRank, void *stream) override {
    checkParts(bytesPerRank.size(), "allGatherInPlace");
    auto *bytes = static_cast<char *>(buffer);
    if (allEqual(bytesPerRank)) {
      size_t part = bytesPerRank[0];
      if (part > 0)
        nccl_.check(nccl_.ncclAllGather(bytes + part * static_cast<size_t>(rank_), bytes, part, ncclUint8, comm_,
                                        stream),
                    "ncclAllGather", comm_);
      return;
    }
    // Each rank's part from its owner, in place; grouped, so NCCL runs them
    // as one operation.
    grouped([&] {
      size_t start = 0;
      for (int root = 0; root < size_; ++root) {
        size_t part = bytesPerRank[static_cast<size_t>(root)];
        if (part > 0)
          nccl_.check(nccl_.ncclBroadcast(bytes + start, bytes + start, part, ncclUint8, root, comm_, stream),
                      "ncclBroadcast", comm_);
        start += part;
      }
    });
  }

  void reduceScatter(const void *send, void *recv, std::span<const size_t> countsPerRank, Dtype dtype,
                     Reduction reduction, void *stream) override {
    checkParts(countsPerRank.size(), "reduceScatter");
    ncclDataType_t type = ncclType(dtype);
    size_t unit = elementBytes(dtype, 1);
    size_t mine = countsPerRank[static_cast<size_t>(rank_)];
    if (allEqual(countsPerRank)) {
      if (mine > 0)
        nccl_.check(nccl_.ncclReduceScatter(send, recv, mine, type, ncclSum, comm_, stream), "ncclReduceScatter",
                    comm_);
    } else {
      // Each part summed on its owner (NCCL's reduce-scatter wants equal
      // parts); a rank's receive buffer is read by NCCL only at the root.
      grouped([&] {
        const auto *from = static_cast<const char *>(send);
        for (int root = 0; root < size_; ++root) {
          size_t part = countsPerRank[static_cast<size_t>(root)];
          if (part > 0)
            nccl_.check(nccl_.ncclReduce(from, root == rank_ ? recv : nullptr, part, type, ncclSum, root, comm_,
                                         stream),
                        "ncclReduce", comm_);
          from += part * unit;
        }
      });
    }
    if (reduction == Reduction::Average && size_ > 1 && mine > 0) {
      cuda::ContextScope scope(*d_, context_);
      if (!divide_)
        divide_.emplace(*d_, context_);
      divide_->divide(reinterpret_cast<cuda::CUdeviceptr>(recv), mine, dtype, static_cast<float>(size_),
                      static_cast<cuda::CUstream>(stream));
    }
  }

private:
  static void *pointer(cuda::CUdeviceptr address) { return reinterpret_cast<void *>(address); }

  void checkParts(size_t parts, const char *call) const {
    if (parts != static_cast<size_t>(size_))
      throw std::invalid_argument(std::string("optrt NCCL communicator: ") + call + " got " +
                                  std::to_string(parts) + " parts for " + std::to_string(size_) + " ranks");
  }

  // NCCL calls between ncclGroupStart and ncclGroupEnd, which ends the group
  // also when one of them throws (an open group would swallow later calls).
  template <typename Calls> void grouped(Calls &&calls) {
    nccl_.check(nccl_.ncclGroupStart(), "ncclGroupStart", comm_);
    try {
      calls();
    } catch (...) {
      nccl_.ncclGroupEnd();
      throw;
    }
    nccl_.check(nccl_.ncclGroupEnd(), "ncclGroupEnd", comm_);
  }

  const Library &nccl_;
  const cuda::Driver *d_ = nullptr;
  ncclComm_t comm_;
  bool owned_;
  int rank_ = 0, size_ = 1;
  cuda::CUdevice device_ = 0;
  cuda::CUcontext context_ = nullptr;
  cuda::DeviceMemory staging_;              // allGather's records
  std::optional<DivideKernels> divide_;     // loaded on the first mean of more than one rank
};

} // namespace

std::shared_ptr<Communicator> makeEngine(const Library &nccl, ncclComm_t comm, bool owned) {
  return std::make_shared<NcclCommunicator>(nccl, comm, owned);
}

} // namespace nccl

std::shared_ptr<Communicator> ncclCommunicator(ncclComm_t comm) {
  if (!comm)
    throw std::invalid_argument("optrt::ncclCommunicator: the NCCL communicator is null");
  return nccl::makeEngine(nccl::library(), comm, false);
}

} // namespace optrt
