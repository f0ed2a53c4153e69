// The one allocation that holds every elementwise state of an optimizer. It
// is 64-byte aligned and cut into slices whose lengths are rounded up to whole
// 64-byte lines, so every slice starts on its own cache line: vector loads of
// a slice start aligned, and two tensors updated by different threads never
// share a line.
#pragma once

#include <cstddef>
#include <memory>

namespace optrt {

/// Frees with the alignment the arena allocated with.
struct ArenaDelete {
  size_t alignment = 64;
  void operator()(float *p) const;
};

class StateArena {
public:
  static constexpr size_t alignmentBytes = 64;
  static constexpr size_t floatsPerLine = alignmentBytes / sizeof(float);

  /// numFloats rounded up to whole lines: the stride from one slice to the next.
  static size_t paddedFloats(size_t numFloats);

  float *data() const { return storage_.get(); }
  size_t numFloats() const { return numFloats_; }
  size_t bytes() const { return numFloats_ * sizeof(float); }

  /// Grows to numFloats (a multiple of floatsPerLine), keeping the contents;
  /// new floats are zero. On failure the arena is unchanged.
  void grow(size_t numFloats);

private:
  std::unique_ptr<float, ArenaDelete> storage_;
  size_t numFloats_ = 0;
};

} // namespace optrt
