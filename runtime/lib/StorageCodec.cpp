// Whole buffers in any storage dtype: what the runtime uses to fill state
// and to convert it between layouts.
#include "optrt/Storage.h"

#include <cstring>
#include <stdexcept>

namespace optrt {

size_t elementBytes(Dtype dtype, size_t n) {
  switch (dtype) {
  case Dtype::F32:
    return 4 * n;
  case Dtype::BF16:
  case Dtype::F16:
  case Dtype::Remainder:
    return 2 * n;
  case Dtype::Q8Signed:
  case Dtype::Q8Unsigned:
    return n;
  }
  throw std::invalid_argument("unknown dtype #" + std::to_string(static_cast<uint32_t>(dtype)));
}

namespace {

template <typename Nearest, typename Stochastic>
void encode16(std::span<const float> in, uint16_t *out, const WriteRounding &rounding,
              Nearest nearest, Stochastic stochastic) {
  if (rounding.mode == Rounding::Nearest) {
    for (size_t i = 0; i < in.size(); ++i)
      out[i] = nearest(in[i]);
    return;
  }
  uint32_t key = stochasticKey(rounding.seed, rounding.step);
  for (size_t i = 0; i < in.size(); ++i)
    out[i] = stochastic(in[i], stochasticBitsFromKey(key, rounding.firstIndex + i));
}

} // namespace

size_t encodeF32(Dtype dtype, std::span<const float> in, void *data, float *absmax,
                 const WriteRounding &rounding) {
  switch (dtype) {
  case Dtype::F32:
    if (!in.empty()) // memcpy's pointers must not be null, even for 0 bytes (a rank's empty part)
      std::memcpy(data, in.data(), in.size_bytes());
    return 0;
  case Dtype::BF16:
    encode16(in, static_cast<uint16_t *>(data), rounding, f32ToBf16, f32ToBf16Stochastic);
    return 0;
  case Dtype::F16:
    encode16(in, static_cast<uint16_t *>(data), rounding, f32ToF16, f32ToF16Stochastic);
    return 0;
  case Dtype::Q8Signed:
  case Dtype::Q8Unsigned:
    return quantizeBlockwise(q8MapFor(dtype), in,
                             std::span<uint8_t>(static_cast<uint8_t *>(data), in.size()),
                             std::span<float>(absmax, q8Blocks(in.size())))
        .nonFinite;
  case Dtype::Remainder:
    break; // means nothing without its param: splitMaster
  }
  throw std::invalid_argument("encodeF32: dtype #" + std::to_string(static_cast<uint32_t>(dtype)) +
                              " is not a storage of values on its own");
}

void decodeToF32(Dtype dtype, const void *data, const float *absmax, std::span<float> out) {
  const auto *half = static_cast<const uint16_t *>(data);
  switch (dtype) {
  case Dtype::F32:
    if (!out.empty()) // memcpy's pointers must not be null, even for 0 bytes (a rank's empty part)
      std::memcpy(out.data(), data, out.size_bytes());
    return;
  case Dtype::BF16:
    for (size_t i = 0; i < out.size(); ++i)
      out[i] = bf16ToF32(half[i]);
    return;
  case Dtype::F16:
    for (size_t i = 0; i < out.size(); ++i)
      out[i] = f16ToF32(half[i]);
    return;
  case Dtype::Q8Signed:
  case Dtype::Q8Unsigned:
    dequantizeBlockwise(q8MapFor(dtype),
                        std::span<const uint8_t>(static_cast<const uint8_t *>(data), out.size()),
                        std::span<const float>(absmax, q8Blocks(out.size())), out);
    return;
  case Dtype::Remainder:
    break; // means nothing without its param: joinMaster
  }
  throw std::invalid_argument("decodeToF32: dtype #" + std::to_string(static_cast<uint32_t>(dtype)) +
                              " is not a storage of values on its own");
}

} // namespace optrt
