// Bit casts shared by the Storage*.cpp files.
#pragma once

#include <bit>
#include <cstdint>

namespace optrt::storage_detail {

inline uint32_t bitsOf(float x) { return std::bit_cast<uint32_t>(x); }
inline float floatOf(uint32_t bits) { return std::bit_cast<float>(bits); }
inline bool isNanBits(uint32_t bits) { return (bits & 0x7FFFFFFFu) > 0x7F800000u; }

} // namespace optrt::storage_detail
