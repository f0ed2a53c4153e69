// The buffers of a layout's kernels (optrt::layoutBuffers) as both
// optimizers (optrt::Optimizer on the CPU, optrt::CudaOptimizer on a GPU)
// allocate and find them: bytes per tensor, and which buffer holds a state,
// its q8 absmax or the master.
#pragma once

#include "optrt/RuleKernels.h"
#include "optrt/Storage.h"

#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace optrt::detail {

inline bool isQ8(Dtype dtype) { return dtype == Dtype::Q8Signed || dtype == Dtype::Q8Unsigned; }

/// Bytes of buffer `buffer` for a tensor of n elements (absmax: one f32 per
/// q8 block).
inline size_t bufferBytes(const BufferDesc &buffer, size_t n) {
  return buffer.role == BufferRole::StateAbsmax ? sizeof(float) * q8Blocks(n, buffer.blockElements)
                                                : elementBytes(buffer.dtype, n);
}

/// Values of a state spanning `span` for a tensor of these dimensions
/// (matrices, rows, cols).
inline size_t spanValues(StateSpan span, const std::array<int64_t, 3> &dims) {
  return static_cast<size_t>(span == StateSpan::Rows   ? dims[0] * dims[1]
                             : span == StateSpan::Cols ? dims[0] * dims[2]
                                                       : dims[0]);
}

/// Bytes of buffer `buffer` of a tensor of n elements whose matrices are
/// `dims` (matrices, rows, cols): bufferBytes, but Dims (three int64) and a
/// state per row, column or matrix (one f32 each) by the tensor's shape.
inline size_t tensorBufferBytes(const BufferDesc &buffer, size_t n, const std::array<int64_t, 3> &dims,
                                const std::vector<StateInfo> &states) {
  if (buffer.role == BufferRole::Dims)
    return sizeof(int64_t) * dims.size();
  if (buffer.role == BufferRole::AxisState)
    return sizeof(float) * spanValues(states[static_cast<size_t>(buffer.state)].span, dims);
  return bufferBytes(buffer, n);
}

/// Whether the optimizer keeps buffer `buffer` in its arena (master, states,
/// q8 absmax); the param, the gradient and the inputs are the caller's.
inline bool keptByOptimizer(const BufferDesc &buffer) {
  return buffer.role == BufferRole::Master || buffer.role == BufferRole::State ||
         buffer.role == BufferRole::StateAbsmax;
}

/// One past the last buffer the optimizer keeps in its arena: the inputs,
/// Dims and the states per row, column or matrix (kept per tensor) come after
/// it (layoutBuffers), and param and grad before, so the kept ones are
/// [2, keptBuffersEnd).
inline size_t keptBuffersEnd(const std::vector<BufferDesc> &buffers) {
  size_t end = buffers.size();
  while (end > 2 && (buffers[end - 1].role == BufferRole::Input || buffers[end - 1].role == BufferRole::Dims ||
                     buffers[end - 1].role == BufferRole::AxisState))
    --end;
  return end;
}

/// The buffers a checkpoint holds of a tensor, in order: those kept in the
/// arena ([2, keptBuffersEnd)), then each state per row, column or matrix
/// but the scratch of row and column reductions.
inline std::vector<size_t> savedBuffers(const std::vector<BufferDesc> &buffers, const std::vector<StateInfo> &states) {
  std::vector<size_t> saved;
  for (size_t b = 2; b < buffers.size(); ++b)
    if (b < keptBuffersEnd(buffers) ||
        (buffers[b].role == BufferRole::AxisState && !states[static_cast<size_t>(buffers[b].state)].scratch))
      saved.push_back(b);
  return saved;
}

/// The index in `buffers` of the buffer with `role` (of state `state` for
/// the state roles), or -1.
inline int findBuffer(const std::vector<BufferDesc> &buffers, BufferRole role, int state = -1) {
  for (size_t b = 0; b < buffers.size(); ++b)
    if (buffers[b].role == role && (state < 0 || buffers[b].state == state))
      return static_cast<int>(b);
  return -1;
}

} // namespace optrt::detail
