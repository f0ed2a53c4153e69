#include "StateArena.h"

#include <algorithm>
#include <new>

namespace optrt {

size_t StateArena::paddedFloats(size_t numFloats) {
  return (numFloats + floatsPerLine - 1) / floatsPerLine * floatsPerLine;
}

void StateArena::AlignedDelete::operator()(float *p) const {
  ::operator delete(p, std::align_val_t(alignmentBytes));
}

void StateArena::grow(size_t numFloats) {
  if (numFloats <= numFloats_)
    return;
  std::unique_ptr<float, AlignedDelete> bigger(static_cast<float *>(
      ::operator new(numFloats * sizeof(float), std::align_val_t(alignmentBytes))));
  std::copy_n(storage_.get(), numFloats_, bigger.get());
  // Padding is zeroed too, so the arena's bytes never depend on what the
  // allocator left there.
  std::fill(bigger.get() + numFloats_, bigger.get() + numFloats, 0.0f);
  storage_ = std::move(bigger);
  numFloats_ = numFloats;
}

} // namespace optrt
