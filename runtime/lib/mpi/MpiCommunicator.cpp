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

template <float (*Decode)(uint16_t), uint16_t (*Encode)(float)>
inline __attribute__((always_inline)) void addHalves(const uint16_t *x, const uint16_t *y, uint16_t *z, size_t n, float divisor) {
  // Two loops rather than a test per element: each vectorises.
  if (divisor == 1.0f) {
    for (size_t i = 0; i < n; ++i)
      z[i] = Encode(Decode(x[i]) + Decode(y[i]));
    return;
  }
  for (size_t i = 0; i < n; ++i)
    z[i] = Encode(Decode(Encode(Decode(x[i]) + Decode(y[i]))) / divisor);
}

// out[i] = (a[i] + b[i]) / divisor in dtype: 16-bit values added in f32,
// the sum rounded to nearest even, then divided (when divisor is not 1) and
// rounded again, so the mean is the rounded sum's. One clone per x86-64
// level (elementwise IEEE arithmetic: the same bits at any vector width);
// the 16-bit conversions run 1.4x faster with AVX2's.
__attribute__((target_clones("default", "arch=x86-64-v3", "arch=x86-64-v4"))) void addInto(Dtype dtype, const void *a, const void *b, void *out, size_t n, float divisor) {
  if (dtype == Dtype::F32) {
    const auto *x = static_cast<const float *>(a), *y = static_cast<const float *>(b);
    auto *z = static_cast<float *>(out);
    if (divisor == 1.0f) {
      for (size_t i = 0; i < n; ++i)
        z[i] = x[i] + y[i];
    } else {
      for (size_t i = 0; i < n; ++i)
        z[i] = (x[i] + y[i]) / divisor;
    }
    return;
  }
  const auto *x = static_cast<const uint16_t *>(a), *y = static_cast<const uint16_t *>(b);
  auto *z = static_cast<uint16_t *>(out);
  if (dtype == Dtype::BF16)
    addHalves<bf16ToF32, f32ToBf16>(x, y, z, n, divisor); // inline conversions: vectorised
  else
    addHalves<f16ToF32, f32ToF16>(x, y, z, n, divisor);
}

bool mpiActive() {
  int initialised = 0, finalised = 0;
  MPI_Initialized(&initialised);
  MPI_Finalized(&finalised);
  return initialised && !finalised;
}

class MpiCommunicator final : public Communicator {
  static constexpr size_t kWindow = size_t{1} << 22; // elements a reduce-scatter moves per ring step

public:
  MpiCommunicator(MPI_Comm comm, MpiOptions options) : maxCount_(options.maxCountPerCall) {
    check(MPI_Comm_dup(comm, &comm_), "MPI_Comm_dup");
    // From here on the destructor frees what was made.
    try {
      check(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
      check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
      check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
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
  Memory memory() const override { return Memory::Host; }

  void allGather(const void *mine, void *all, size_t bytes) override {
    if (bytes * static_cast<size_t>(size_) <= maxCount_) {
      int count = static_cast<int>(bytes);
      check(MPI_Allgather(mine, count, MPI_BYTE, all, count, MPI_BYTE, comm_), "MPI_Allgather");
      return;
    }
    std::memmove(static_cast<char *>(all) + bytes * static_cast<size_t>(rank_), mine, bytes);
    std::vector<size_t> parts(static_cast<size_t>(size_), bytes);
    allGatherInPlace(all, parts, nullptr);
  }

  void allGatherInPlace(void *buffer, std::span<const size_t> bytesPerRank, void * /*stream*/) override {
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

  // A ring (OpenMPI 4.1's MPI_Reduce_scatter took 58 ms here for what this
  // does in 13.6 ms, as if it reduced to one rank first): in step k = 0 ..
  // size-2, each rank passes its running sum of part (rank - 1 - k) to the
  // next rank and adds its own values to the sum of part (rank - 2 - k)
  // that the previous rank passes it; after size - 1 steps it holds the
  // whole sum of its own part. Each
  // rank sends (size-1)/size of the data, the least any algorithm can. The
  // parts go round in windows of at most kWindow elements, so the scratch
  // stays small whatever the gradients' size.
  void reduceScatter(const void *send, void *recv, std::span<const size_t> countsPerRank, Dtype dtype,
                     Reduction reduction, void * /*stream*/) override {
    checkParts(countsPerRank.size(), "reduceScatter");
    if (dtype != Dtype::F32 && dtype != Dtype::BF16 && dtype != Dtype::F16)
      throw std::invalid_argument("optrt MPI communicator: reduceScatter adds f32, bf16 or f16, not " +
                                  std::string(dtypeName(dtype)));
    size_t unit = elementBytes(dtype, 1);
    auto ranks = static_cast<size_t>(size_);
    std::vector<size_t> starts(ranks + 1, 0);
    for (size_t r = 0; r < ranks; ++r)
      starts[r + 1] = starts[r] + countsPerRank[r];
    const auto *from = static_cast<const char *>(send);
    auto me = static_cast<size_t>(rank_);
    if (ranks == 1) { // a sum and mean of one
      std::memmove(recv, from, countsPerRank[0] * unit);
      return;
    }
    size_t largest = *std::max_element(countsPerRank.begin(), countsPerRank.end());
    size_t window = std::min({largest, kWindow, maxCount_});
    // Kept between calls: a step's scratch should not fault in fresh pages.
    if (passing_.size() < window * unit) {
      passing_.assign(window * unit, 0);
      arriving_.assign(window * unit, 0);
    }
    char *passing = passing_.data(), *arriving = arriving_.data();
    // The mean divides the last sum, as a separate pass after the sum would.
    float divisor = reduction == Reduction::Average ? static_cast<float>(size_) : 1.0f;
    int next = (rank_ + 1) % size_, previous = (rank_ + size_ - 1) % size_;
    for (size_t offset = 0; offset < largest; offset += window) {
      // The window [offset, offset + window) of part p, clipped to the part.
      auto length = [&](size_t p) { return std::min(window, countsPerRank[p] - std::min(offset, countsPerRank[p])); };
      auto own = [&](size_t p) { return from + (starts[p] + std::min(offset, countsPerRank[p])) * unit; };
      const char *outgoing = own((me + ranks - 1) % ranks); // step 0 passes own values
      for (size_t k = 0; k + 1 < ranks; ++k) {
        size_t sent = (me + 2 * ranks - 1 - k) % ranks, received = (me + 2 * ranks - 2 - k) % ranks;
        check(MPI_Sendrecv(outgoing, static_cast<int>(length(sent) * unit), MPI_BYTE, next, 0, arriving,
                           static_cast<int>(length(received) * unit), MPI_BYTE, previous, 0, comm_,
                           MPI_STATUS_IGNORE),
              "MPI_Sendrecv");
        // The last step's sum is this rank's own part: straight into recv.
        bool last = k + 2 == ranks;
        char *into = last ? static_cast<char *>(recv) + std::min(offset, countsPerRank[me]) * unit : passing;
        addInto(dtype, arriving, own(received), into, length(received), last ? divisor : 1.0f);
        outgoing = passing;
      }
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
    if (comm_ != MPI_COMM_NULL)
      MPI_Comm_free(&comm_);
  }

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
  size_t maxCount_;
  std::vector<char> passing_, arriving_; // reduceScatter's scratch
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
