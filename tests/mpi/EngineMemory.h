// Buffers in the memory an engine's bulk collectives take
// (Communicator::memory()): host memory for MPI, device memory for NCCL
// (the fake driver's under ctest), so one test body serves both engines.
#pragma once

#include "cuda/DeviceMemory.h"
#include "optrt/Communicator.h"

#include <cstring>
#include <vector>

namespace optdsl::test {

/// The stream the tests give device engines: a handle the fake NCCL records
/// (and the fake driver accepts); never used with a real GPU.
inline void *const kTestStream = reinterpret_cast<void *>(0x5eed);

/// `bytes` bytes where `comm`'s bulk collectives read and write.
class EngineMemory {
public:
  EngineMemory(const optrt::Communicator &comm, size_t bytes) : device_(comm.memory() == optrt::Communicator::Memory::Device) {
    if (!device_) {
      host_.resize(bytes);
      return;
    }
    const auto &d = optrt::cuda::driver();
    optrt::cuda::CUdevice device = 0;
    d.check(d.cuDevicePrimaryCtxRetain(&context_, device), "cuDevicePrimaryCtxRetain");
    memory_ = optrt::cuda::DeviceMemory(d, context_, bytes, "test buffer");
  }
  ~EngineMemory() {
    memory_ = optrt::cuda::DeviceMemory();
    if (context_)
      optrt::cuda::driver().cuDevicePrimaryCtxRelease_v2(0);
  }
  EngineMemory(const EngineMemory &) = delete;
  EngineMemory &operator=(const EngineMemory &) = delete;

  void *data() { return device_ ? reinterpret_cast<void *>(memory_.get()) : host_.data(); }
  /// The stream to pass with this memory.
  void *stream() const { return device_ ? kTestStream : nullptr; }
  void upload(const void *from, size_t bytes) {
    if (!device_) {
      std::memcpy(host_.data(), from, bytes);
      return;
    }
    const auto &d = optrt::cuda::driver();
    d.check(d.cuMemcpyHtoDAsync_v2(memory_.get(), from, bytes, nullptr), "cuMemcpyHtoDAsync_v2");
  }
  void download(void *to, size_t bytes) const {
    if (!device_) {
      std::memcpy(to, host_.data(), bytes);
      return;
    }
    const auto &d = optrt::cuda::driver();
    d.check(d.cuStreamSynchronize(static_cast<optrt::cuda::CUstream>(kTestStream)), "cuStreamSynchronize");
    d.check(d.cuMemcpyDtoH_v2(to, memory_.get(), bytes), "cuMemcpyDtoH_v2");
  }

private:
  bool device_;
  std::vector<char> host_;
  optrt::cuda::CUcontext context_ = nullptr;
  optrt::cuda::DeviceMemory memory_;
};

} // namespace optdsl::test
