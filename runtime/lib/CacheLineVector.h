// A std::vector whose first element starts a cache line (64 bytes), for the
// scratch the kernels read and write 16 floats at a time (column partials
// and values, states per row or column). malloc aligns to 16 bytes only (a
// large block sits 16 bytes past a page), and a 64-byte access at 16 bytes
// past a line touches two lines: a fifth slower in the passes over the
// elements of Adafactor and CAME, whose loops update a column partial per
// 16 elements (docs/benchmarks.md "Matrix-shaped rules").
#pragma once

#include <cstddef>
#include <new>
#include <vector>

namespace optrt::detail {

inline constexpr size_t kCacheLineBytes = 64;

template <typename T> struct CacheLineAllocator {
  using value_type = T;
  CacheLineAllocator() = default;
  template <typename U> CacheLineAllocator(const CacheLineAllocator<U> &) {}
  T *allocate(size_t n) { return static_cast<T *>(::operator new(n * sizeof(T), std::align_val_t(kCacheLineBytes))); }
  void deallocate(T *p, size_t) { ::operator delete(p, std::align_val_t(kCacheLineBytes)); }
  template <typename U> bool operator==(const CacheLineAllocator<U> &) const { return true; }
  template <typename U> bool operator!=(const CacheLineAllocator<U> &) const { return false; }
};

template <typename T> using CacheLineVector = std::vector<T, CacheLineAllocator<T>>;

} // namespace optrt::detail
