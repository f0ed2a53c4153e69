#include "optrt/LayoutCheck.h"

#include <algorithm>
#include <stdexcept>

namespace optrt {

namespace {

std::string stateList(const std::vector<StateInfo> &states) {
  std::string list;
  for (const StateInfo &s : states)
    list += (list.empty() ? "" : ", ") + s.name + (s.scalar ? " (scalar)" : "");
  return list.empty() ? "none" : list;
}

} // namespace

void validateLayout(const Layout &layout, const std::vector<StateInfo> &states,
                    const std::string &ruleName) {
  auto fail = [&](const std::string &problem) {
    throw std::invalid_argument("layout '" + layout.str() + "' for " + ruleName + ": " + problem);
  };
  for (const auto &[name, dtype] : layout.stateOverrides) {
    auto found = std::find_if(states.begin(), states.end(),
                              [&](const StateInfo &s) { return s.name == name; });
    if (found == states.end())
      fail("no state '" + name + "' (its states: " + stateList(states) + ")");
    if (found->scalar && dtype != Dtype::F32)
      fail("state '" + name + "' is a per-tensor scalar (one f64 per tensor) and cannot be " +
           dtypeName(dtype));
    if (!found->scalar && found->span != StateSpan::Elements && dtype != Dtype::F32)
      fail("state '" + name + "' holds one value per " + (found->span == StateSpan::Rows ? "row" : "column") +
           " (small, kept in f32) and cannot be " + dtypeName(dtype));
  }
  if (layout.stochastic) {
    bool any16 = layout.param == Dtype::BF16 || layout.param == Dtype::F16;
    for (const StateInfo &state : states)
      if (!state.scalar && state.span == StateSpan::Elements) {
        Dtype d = layout.stateDtype(state.name);
        any16 = any16 || d == Dtype::BF16 || d == Dtype::F16;
      }
    if (!any16)
      fail("rounding=stochastic but no param or state is stored as bf16 or f16 (q8 and f32 "
           "writes do not round that way)");
  }
  if (layout.master == Dtype::Remainder && layout.param != Dtype::BF16)
    fail("master=remainder keeps the low 16 bits of an f32 master whose high 16 bits are the "
         "param: it needs param=bf16");
  if (layout.master && layout.param == Dtype::F32)
    fail("master=f32 with f32 params would duplicate them; write param=bf16 or param=f16 "
         "with it, or leave master out");
}

} // namespace optrt
