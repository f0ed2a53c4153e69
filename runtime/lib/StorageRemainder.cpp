// bf16 param + int16 remainder = exact f32 master, as apex's
// DistributedFusedAdam(store_param_remainders=True) keeps them.
#include "optrt/Storage.h"

#include "StorageBits.h"

namespace optrt {

using storage_detail::bitsOf;
using storage_detail::floatOf;
using storage_detail::isNanBits;

ParamRemainder splitMaster(float master) {
  uint32_t bits = bitsOf(master);
  int16_t remainder = static_cast<int16_t>(bits & 0xFFFFu);
  uint16_t high = static_cast<uint16_t>(bits >> 16);
  // A NaN's high half +1 can wrap into -0 or 0; keep the param a quiet NaN.
  if (isNanBits(bits))
    return {static_cast<uint16_t>(high | 0x0040u), remainder};
  // A negative remainder means the low half is >= 0x8000: round the param up
  // in magnitude (ties away from zero); the master is the param minus one
  // ulp with the low half appended. Non-NaN high halves never wrap here: the
  // largest is 0x7F7F (+1 is Inf) or Inf itself with a zero remainder.
  if (remainder < 0)
    ++high;
  return {high, remainder};
}

float joinMaster(uint16_t paramBf16, int16_t remainder) {
  uint32_t high = paramBf16;
  if ((high & 0x7FFFu) > 0x7F80u) // a NaN param stands for a NaN master
    return floatOf((high << 16) | 0x00400000u);
  if (remainder < 0)
    --high;
  return floatOf((high << 16) | static_cast<uint16_t>(remainder));
}

} // namespace optrt
