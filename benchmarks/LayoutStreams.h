// The memory streams one step of a layout's kernels must touch, per
// parameter: what the CPU and the GPU step benchmarks count as the step's
// bytes and what their same-traffic reference kernels move.
#pragma once

#include "optrt/Layout.h"
#include "optrt/RuleKernels.h"
#include "optrt/Storage.h"

#include <map>
#include <string>
#include <vector>

namespace optdsl::bench {

/// One stream a step must touch: bytes per parameter, read and/or written.
struct Stream {
  double bytesPerElement;
  bool read, written;
};

/// The streams of a layout's kernels, from its buffers: the grad is read;
/// master and every state (codes and absmax) are read and written (every
/// state of these rules is updated each step; AdamW's amsgrad state is
/// folded away); the param is read and written, except with a master, whose
/// f32 value is what the step reads: then the 16-bit param is only written.
/// Inputs (`input NAME;`) are read only, and only on steps that give them:
/// `inputsGiven` says whether this step does.
inline std::vector<Stream> streamsOf(const optrt::LayoutKernels &layout, bool inputsGiven = false) {
  // With an f32 master the 16-bit param is only written; with remainders it
  // is half of the master and read too.
  bool master = false;
  for (const optrt::BufferDesc &buffer : layout.buffers)
    master = master || (buffer.role == optrt::BufferRole::Master && buffer.dtype == optrt::Dtype::F32);
  std::vector<Stream> streams;
  for (const optrt::BufferDesc &buffer : layout.buffers) {
    if (buffer.role == optrt::BufferRole::Input) {
      if (inputsGiven)
        streams.push_back({static_cast<double>(optrt::elementBytes(buffer.dtype, 1)), true, false});
      continue;
    }
    double bytes = buffer.role == optrt::BufferRole::StateAbsmax
                       ? 4.0 / buffer.blockElements
                       : static_cast<double>(optrt::elementBytes(buffer.dtype, 1));
    bool read = !(buffer.role == optrt::BufferRole::Param && master);
    streams.push_back({bytes, read, buffer.role != optrt::BufferRole::Grad});
  }
  return streams;
}

/// One stream of a pass over the elements: `momentum` marks the rule's
/// elementwise state (exp_avg), stored in the layout's state dtype.
struct PassStream {
  Stream f32;
  bool momentum = false;
};

/// What the passes over the elements of a rule that reads tensors as
/// matrices (it takes several) read and write, per element (the values per
/// row and column are a few KB and stay in cache). Adafactor (beta1 0):
/// param and grad (the params' RMS, the gradient's row and column means),
/// grad (the update's RMS), grad, param and exp_avg written (the update).
/// CAME: grad (row and column means), grad (the update's RMS), exp_avg and
/// grad (the momentum; the instability's row and column means), param and
/// exp_avg (the update).
inline const std::map<std::string, std::vector<PassStream>> kMatrixPassStreams = {
    {"adafactor",
     {{{4, true, false}}, {{4, true, false}}, {{4, true, false}}, {{4, true, false}}, {{4, true, true}},
      {{4, false, true}, true}}},
    {"came",
     {{{4, true, false}}, {{4, true, false}}, {{4, true, true}, true}, {{4, true, false}}, {{4, true, true}},
      {{4, true, false}, true}}}};

/// Those streams in `layout`: exp_avg in its state dtype (q8: a byte and its
/// block's absmax); params, gradients and masters stay f32 in the layouts
/// these benchmarks take.
inline std::vector<Stream> matrixPassStreams(const std::string &rule, const optrt::Layout &layout) {
  optrt::Dtype state = layout.stateDtype("exp_avg");
  bool q8 = state == optrt::Dtype::Q8Signed || state == optrt::Dtype::Q8Unsigned;
  std::vector<Stream> streams;
  for (const PassStream &pass : kMatrixPassStreams.at(rule)) {
    Stream stream = pass.f32;
    if (pass.momentum) {
      stream.bytesPerElement = static_cast<double>(optrt::elementBytes(state, 1));
      if (q8)
        streams.push_back({4.0 / optrt::kQ8BlockElements, stream.read, stream.written});
    }
    streams.push_back(stream);
  }
  return streams;
}

inline double bytesPerParam(const std::vector<Stream> &streams) {
  double bytes = 0;
  for (const Stream &s : streams)
    bytes += s.bytesPerElement * ((s.read ? 1 : 0) + (s.written ? 1 : 0));
  return bytes;
}

} // namespace optdsl::bench
