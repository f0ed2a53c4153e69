#include "optdsl/Codegen/LayoutPlan.h"

namespace optdsl::codegen {

LayoutPlan planLayout(const optrt::Layout &layout, const std::vector<optrt::StateInfo> &states,
                      const std::vector<bool> &nonNegative, const BufferLayout &codeBuffers) {
  LayoutPlan plan;
  plan.name = layout.str();
  plan.stochastic = layout.stochastic;
  plan.buffers = optrt::layoutBuffers(layout, states, nonNegative, codeBuffers.numInputs());
  plan.storage.assign(codeBuffers.size(), -1);
  plan.dtype.assign(codeBuffers.size(), optrt::Dtype::F32);
  std::map<int, int> stateBuffer; // StateInfo index -> element-code buffer
  for (size_t s = 0; s < states.size(); ++s)
    if (!states[s].scalar)
      stateBuffer[static_cast<int>(s)] = codeBuffers.state(states[s].name);
  for (size_t b = 0; b < plan.buffers.size(); ++b) {
    const optrt::BufferDesc &buffer = plan.buffers[b];
    int index = static_cast<int>(b);
    switch (buffer.role) {
    case optrt::BufferRole::Param:
    case optrt::BufferRole::Grad: {
      int code = buffer.role == optrt::BufferRole::Param ? BufferLayout::kParam : BufferLayout::kGrad;
      plan.storage[code] = index;
      plan.dtype[code] = buffer.dtype;
      break;
    }
    case optrt::BufferRole::Master:
      plan.master = index;
      break;
    case optrt::BufferRole::Dims:
      plan.dims = index;
      break;
    case optrt::BufferRole::AxisState:
    case optrt::BufferRole::State:
      plan.storage[stateBuffer.at(buffer.state)] = index;
      plan.dtype[stateBuffer.at(buffer.state)] = buffer.dtype;
      break;
    case optrt::BufferRole::StateAbsmax:
      plan.absmax[stateBuffer.at(buffer.state)] = index;
      break;
    case optrt::BufferRole::Input:
      plan.storage[codeBuffers.input(buffer.state)] = index;
      plan.dtype[codeBuffers.input(buffer.state)] = buffer.dtype;
      break;
    }
  }
  return plan;
}

} // namespace optdsl::codegen
