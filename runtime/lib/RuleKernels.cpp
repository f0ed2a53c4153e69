#include "optrt/RuleKernels.h"

namespace optrt {

std::vector<BufferDesc> f32Buffers(const std::vector<StateInfo> &states) {
  std::vector<BufferDesc> buffers = {{BufferRole::Param, Dtype::F32}, {BufferRole::Grad, Dtype::F32}};
  for (size_t s = 0; s < states.size(); ++s)
    if (!states[s].scalar)
      buffers.push_back({BufferRole::State, Dtype::F32, static_cast<int>(s)});
  return buffers;
}

} // namespace optrt
