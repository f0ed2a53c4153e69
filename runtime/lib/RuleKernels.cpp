#include "optrt/RuleKernels.h"

namespace optrt {

std::string givenHyper(std::string_view input) { return "given(" + std::string(input) + ")"; }

std::vector<BufferDesc> f32Buffers(const std::vector<StateInfo> &states, size_t numInputs) {
  return layoutBuffers(Layout{}, states, {}, numInputs);
}

namespace {
bool isQ8(Dtype dtype) { return dtype == Dtype::Q8Signed || dtype == Dtype::Q8Unsigned; }
} // namespace

std::vector<BufferDesc> layoutBuffers(const Layout &layout, const std::vector<StateInfo> &states,
                                      const std::vector<bool> &nonNegative, size_t numInputs) {
  std::vector<BufferDesc> buffers = {{BufferRole::Param, layout.param},
                                     {BufferRole::Grad, layout.grad}};
  if (layout.master)
    buffers.push_back({BufferRole::Master, *layout.master});
  std::vector<BufferDesc> absmax;
  for (size_t s = 0; s < states.size(); ++s) {
    if (states[s].scalar || states[s].span != StateSpan::Elements)
      continue;
    Dtype dtype = layout.stateDtype(states[s].name);
    if (isQ8(dtype)) {
      bool unsignedMap = s < nonNegative.size() && nonNegative[s];
      dtype = unsignedMap ? Dtype::Q8Unsigned : Dtype::Q8Signed;
      absmax.push_back({BufferRole::StateAbsmax, Dtype::F32, static_cast<int>(s), 256});
      buffers.push_back({BufferRole::State, dtype, static_cast<int>(s), 256});
    } else {
      buffers.push_back({BufferRole::State, dtype, static_cast<int>(s)});
    }
  }
  buffers.insert(buffers.end(), absmax.begin(), absmax.end());
  for (size_t i = 0; i < numInputs; ++i)
    buffers.push_back({BufferRole::Input, layout.grad, static_cast<int>(i)});
  // States per row, column or matrix stay f32 in every layout: they are
  // small (rows + cols per matrix), and a factored moment is a mean.
  bool dims = false;
  for (size_t s = 0; s < states.size(); ++s) {
    if (states[s].scalar || states[s].span == StateSpan::Elements)
      continue;
    if (!dims)
      buffers.push_back({BufferRole::Dims, Dtype::F32});
    dims = true;
    buffers.push_back({BufferRole::AxisState, Dtype::F32, static_cast<int>(s)});
  }
  return buffers;
}

bool readsMatrices(const std::vector<StateInfo> &states) {
  for (const StateInfo &state : states)
    if (!state.scalar && state.span != StateSpan::Elements)
      return true;
  return false;
}

bool buffersMatch(const std::vector<BufferDesc> &buffers, const Layout &layout,
                  const std::vector<StateInfo> &states, size_t numInputs) {
  std::vector<BufferDesc> expected = layoutBuffers(layout, states, {}, numInputs);
  if (buffers.size() != expected.size())
    return false;
  for (size_t b = 0; b < buffers.size(); ++b) {
    const BufferDesc &have = buffers[b], &want = expected[b];
    bool sameDtype = have.dtype == want.dtype || (isQ8(have.dtype) && isQ8(want.dtype));
    if (have.role != want.role || !sameDtype || have.state != want.state ||
        have.blockElements != want.blockElements)
      return false;
  }
  return true;
}

bool hasQ8States(const Layout &layout, const std::vector<StateInfo> &states) {
  for (const StateInfo &state : states)
    if (!state.scalar && state.span == StateSpan::Elements && isQ8(layout.stateDtype(state.name)))
      return true;
  return false;
}

Layout smallTensorLayout(const Layout &layout) {
  Layout small = layout;
  if (small.states && isQ8(*small.states))
    small.states = Dtype::F32;
  for (auto &[name, dtype] : small.stateOverrides)
    if (isQ8(dtype))
      dtype = Dtype::F32;
  return small;
}

} // namespace optrt
