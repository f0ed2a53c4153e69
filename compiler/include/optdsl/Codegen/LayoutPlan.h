// Where each buffer of the element code (BufferLayout numbering: param, grad,
// elementwise states) lives in one storage layout's kernels, for every
// backend: the kernel's buffer list (optrt::layoutBuffers, also the
// artifact's and the runtime's), and per element-code buffer its storage
// buffer and dtype, the master and the q8 absmax buffers.
#pragma once

#include "optdsl/Codegen/PhaseBody.h"
#include "optrt/Layout.h"
#include "optrt/RuleKernels.h"

#include <map>
#include <string>
#include <vector>

namespace optdsl::codegen {

struct LayoutPlan {
  std::string name;                       // canonical (optrt::Layout::str)
  std::vector<optrt::BufferDesc> buffers; // the kernels' buffers argument
  std::vector<int> storage;               // per element-code buffer: its buffer
  std::vector<optrt::Dtype> dtype;        // per element-code buffer
  std::map<int, int> absmax;              // q8 element-code buffer -> its absmax buffer
  int master = -1;                        // the master's buffer, or -1
  int dims = -1;                          // the tensor's matrices, rows, cols (int64): a rule reading matrices
  bool stochastic = false;                // bf16/f16 writes round stochastically
  bool blockwise() const { return !absmax.empty(); }
  bool remainderMaster() const { return master >= 0 && buffers[master].dtype == optrt::Dtype::Remainder; }
};

/// The plan of `layout` for a rule with `states` whose elementwise states
/// `nonNegative` proved (StateSign.h: the unsigned q8 map).
LayoutPlan planLayout(const optrt::Layout &layout, const std::vector<optrt::StateInfo> &states,
                      const std::vector<bool> &nonNegative, const BufferLayout &codeBuffers);

} // namespace optdsl::codegen
