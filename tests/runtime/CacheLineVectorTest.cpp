// The scratch the kernels update 16 floats at a time starts a cache line
// (CacheLineVector.h): a 64-byte access there never touches two lines.
#include "CacheLineVector.h"

#include <gtest/gtest.h>

#include <cstdint>

namespace optrt::detail {
namespace {

TEST(CacheLineVector, EveryAllocationStartsACacheLine) {
  // Small blocks come from malloc's bins and large ones from mmap (16 bytes
  // past a page with the default allocator): both kinds, grown and copied.
  for (size_t n : {1, 3, 16, 100, 1000, 40000, 1000000}) {
    CacheLineVector<float> v(n, 1.5f);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(v.data()) % kCacheLineBytes, 0u) << n << " floats";
    v.resize(n * 3 + 1);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(v.data()) % kCacheLineBytes, 0u) << n * 3 + 1 << " floats";
    EXPECT_EQ(v[n - 1], 1.5f);
    CacheLineVector<float> copy = v;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(copy.data()) % kCacheLineBytes, 0u);
    EXPECT_EQ(copy, v);
  }
}

} // namespace
} // namespace optrt::detail
