#include "StateArena.h"

#include <algorithm>
#include <new>

#include <sys/mman.h>

namespace optrt {

size_t StateArena::paddedFloats(size_t numFloats) {
  return (numFloats + floatsPerLine - 1) / floatsPerLine * floatsPerLine;
}

void ArenaDelete::operator()(float *p) const {
  ::operator delete(p, std::align_val_t(alignment));
}

/// Large arenas start on a 2 MiB boundary and ask for transparent huge
/// pages: a step streams every byte of the state, and with 4 KiB pages the
/// TLB misses cost a visible share of the memory bandwidth (on kernels whose
/// THP mode is "madvise", nothing is huge unless asked). Advice only: a
/// kernel that declines leaves ordinary pages.
static constexpr size_t kHugePageBytes = 2u << 20;

void StateArena::grow(size_t numFloats) {
  if (numFloats <= numFloats_)
    return;
  size_t bytes = numFloats * sizeof(float);
  size_t alignment = bytes >= kHugePageBytes ? kHugePageBytes : alignmentBytes;
  std::unique_ptr<float, ArenaDelete> bigger(
      static_cast<float *>(::operator new(bytes, std::align_val_t(alignment))), ArenaDelete{alignment});
  if (alignment == kHugePageBytes)
    madvise(bigger.get(), bytes / kHugePageBytes * kHugePageBytes, MADV_HUGEPAGE);
  std::copy_n(storage_.get(), numFloats_, bigger.get());
  // Padding is zeroed too, so the arena's bytes never depend on what the
  // allocator left there.
  std::fill(bigger.get() + numFloats_, bigger.get() + numFloats, 0.0f);
  storage_ = std::move(bigger);
  numFloats_ = numFloats;
}

} // namespace optrt
