#include "optrt/MpiCommunicator.h"

#include "optrt/Storage.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

namespace optrt {

namespace {

std::string mpiMessage(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS)
    return "MPI error " + std::to_string(code);
  return std::string(text, static_cast<size_t>(length));
}

void check(int code, const char *call) {
  if (code != MPI_SUCCESS)
    throw std::runtime_error(std::string("optrt MPI communicator: ") + call + " failed: " + mpiMessage(code));
}

// 16-bit floats have no MPI type: they travel as MPI_UINT16_T and are added
// by these ops in f32, each sum rounded to nearest even as the format's own
// arithmetic would.
template <float (*Decode)(uint16_t), uint16_t (*Encode)(float)>
void sumHalves(void *in, void *inout, int *length, MPI_Datatype *) {
  const auto *a = static_cast<const uint16_t *>(in);
  auto *b = static_cast<uint16_t *>(inout);
  for (int i = 0; i < *length; ++i)
    b[i] = Encode(Decode(a[i]) + Decode(b[i]));
}

bool mpiActive() {
  int initialised = 0, finalised = 0;
  MPI_Initialized(&initialised);
  MPI_Finalized(&finalised);
  return initialised && !finalised;
}

class MpiCommunicator final : public Communicator {
public:
  MpiCommunicator(MPI_Comm comm, MpiOptions options) : maxCount_(options.maxCountPerCall) {
    check(MPI_Comm_dup(comm, &comm_), "MPI_Comm_dup");
    // From here on the destructor frees what was made.
    try {
      check(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
      check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
      check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
      check(MPI_Op_create(&sumHalves<bf16ToF32, f32ToBf16>, 1, &sumBf16_), "MPI_Op_create");
      check(MPI_Op_create(&sumHalves<f16ToF32, f32ToF16>, 1, &sumF16_), "MPI_Op_create");
    } catch (...) {
      release();
      throw;
    }
  }
  ~MpiCommunicator() override { release(); }
  MpiCommunicator(const MpiCommunicator &) = delete;
  MpiCommunicator &operator=(const MpiCommunicator &) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string engine() const override { return "MPI"; }

  void allGather(const void *mine, void *all, size_t bytes) override {
    if (bytes * static_cast<size_t>(size_) <= maxCount_) {
      int count = static_cast<int>(bytes);
      check(MPI_Allgather(mine, count, MPI_BYTE, all, count, MPI_BYTE, comm_), "MPI_Allgather");
      return;
    }
    std::memmove(static_cast<char *>(all) + bytes * static_cast<size_t>(rank_), mine, bytes);
    std::vector<size_t> parts(static_cast<size_t>(size_), bytes);
    allGatherInPlace(all, parts);
  }

  void allGatherInPlace(void *buffer, std::span<const size_t> bytesPerRank) override {
    checkParts(bytesPerRank.size(), "allGatherInPlace");
    size_t total = 0;
    for (size_t part : bytesPerRank)
      total += part;
    auto *bytes = static_cast<char *>(buffer);
    if (total <= maxCount_) {
      std::vector<int> counts, displacements;
      for (size_t part : bytesPerRank) {
        displacements.push_back(counts.empty() ? 0 : displacements.back() + counts.back());
        counts.push_back(static_cast<int>(part));
      }
      check(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, bytes, counts.data(), displacements.data(),
                           MPI_BYTE, comm_),
            "MPI_Allgatherv");
      return;
    }
    // Too large for int counts and displacements: each rank's part from its
    // owner, in pieces.
    size_t start = 0;
    for (int root = 0; root < size_; ++root) {
      size_t part = bytesPerRank[static_cast<size_t>(root)];
      for (size_t done = 0; done < part; done += maxCount_) {
        int count = static_cast<int>(std::min(maxCount_, part - done));
        check(MPI_Bcast(bytes + start + done, count, MPI_BYTE, root, comm_), "MPI_Bcast");
      }
      start += part;
    }
  }

  void reduceScatterSum(const void *send, void *recv, std::span<const size_t> countsPerRank,
                        Dtype dtype) override {
    checkParts(countsPerRank.size(), "reduceScatterSum");
    MPI_Datatype type;
    MPI_Op op;
    switch (dtype) {
    case Dtype::F32:
      type = MPI_FLOAT, op = MPI_SUM;
      break;
    case Dtype::BF16:
      type = MPI_UINT16_T, op = sumBf16_;
      break;
    case Dtype::F16:
      type = MPI_UINT16_T, op = sumF16_;
      break;
    default:
      throw std::invalid_argument("optrt MPI communicator: reduceScatterSum adds f32, bf16 or f16, not " +
                                  std::string(dtypeName(dtype)));
    }
    size_t total = 0;
    for (size_t count : countsPerRank)
      total += count;
    if (total <= maxCount_) {
      std::vector<int> counts(countsPerRank.begin(), countsPerRank.end());
      check(MPI_Reduce_scatter(send, recv, counts.data(), type, op, comm_), "MPI_Reduce_scatter");
      return;
    }
    size_t elementSize = elementBytes(dtype, 1);
    const auto *from = static_cast<const char *>(send);
    auto *to = static_cast<char *>(recv);
    size_t start = 0;
    for (int root = 0; root < size_; ++root) {
      size_t part = countsPerRank[static_cast<size_t>(root)];
      for (size_t done = 0; done < part; done += maxCount_) {
        int count = static_cast<int>(std::min(maxCount_, part - done));
        void *into = root == rank_ ? to + done * elementSize : nullptr;
        check(MPI_Reduce(from + (start + done) * elementSize, into, count, type, op, root, comm_), "MPI_Reduce");
      }
      start += part;
    }
  }

private:
  void checkParts(size_t parts, const char *call) const {
    if (parts != static_cast<size_t>(size_))
      throw std::invalid_argument(std::string("optrt MPI communicator: ") + call + " got " +
                                  std::to_string(parts) + " parts for " + std::to_string(size_) + " ranks");
  }
  void release() {
    // After MPI_Finalize nothing may be freed (nor needs to be).
    if (!mpiActive())
      return;
    if (sumBf16_ != MPI_OP_NULL)
      MPI_Op_free(&sumBf16_);
    if (sumF16_ != MPI_OP_NULL)
      MPI_Op_free(&sumF16_);
    if (comm_ != MPI_COMM_NULL)
      MPI_Comm_free(&comm_);
  }

  MPI_Comm comm_ = MPI_COMM_NULL;
  MPI_Op sumBf16_ = MPI_OP_NULL, sumF16_ = MPI_OP_NULL;
  int rank_ = 0, size_ = 1;
  size_t maxCount_;
};

} // namespace

std::shared_ptr<Communicator> mpiCommunicator(MPI_Comm comm, MpiOptions options) {
  if (!mpiActive())
    throw std::runtime_error("optrt::mpiCommunicator: MPI is not initialised (or already finalised); call "
                             "MPI_Init before making the communicator and MPI_Finalize after the optimizer is gone");
  if (comm == MPI_COMM_NULL)
    throw std::invalid_argument("optrt::mpiCommunicator: the communicator is MPI_COMM_NULL");
  if (options.maxCountPerCall == 0 || options.maxCountPerCall > static_cast<size_t>(INT_MAX))
    throw std::invalid_argument("optrt::mpiCommunicator: maxCountPerCall must be in 1 .. INT_MAX, not " +
                                std::to_string(options.maxCountPerCall));
  return std::make_shared<MpiCommunicator>(comm, options);
}

} // namespace optrt
