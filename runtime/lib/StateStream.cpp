#include "StateStream.h"

#include "LayoutBuffers.h"
#include "optrt/Storage.h"

#include <cstring>
#include <stdexcept>
#include <string>

namespace optrt::detail {

namespace {

constexpr char kMagic[8] = {'O', 'P', 'T', 'D', 'S', 'L', 'S', 'T'};
constexpr uint32_t kVersion = 2;

template <typename T> void put(std::ostream &out, T value) {
  out.write(reinterpret_cast<const char *>(&value), sizeof value);
}
void putString(std::ostream &out, const std::string &text) {
  put<uint32_t>(out, static_cast<uint32_t>(text.size()));
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
}

/// Reads with a named error on a short stream.
struct Reader {
  std::istream &in;
  const char *caller;
  void bytes(void *data, size_t n) {
    if (!in.read(static_cast<char *>(data), static_cast<std::streamsize>(n)))
      throw std::invalid_argument(std::string(caller) + ": the stream ends early (truncated "
                                  "or not written by saveState)");
  }
  template <typename T> T get() {
    T value;
    bytes(&value, sizeof value);
    return value;
  }
  std::string string() {
    uint32_t n = get<uint32_t>();
    if (n > (1u << 20))
      throw std::invalid_argument(std::string(caller) + ": a name of " + std::to_string(n) +
                                  " bytes; the stream is damaged");
    std::string text(n, '\0');
    bytes(text.data(), n);
    return text;
  }
};

struct SavedBuffer {
  BufferRole role;
  Dtype dtype;
  std::string state;
  std::vector<char> data;
};
struct SavedTensor {
  size_t size;
  std::string layout;
  std::vector<double> scalars;
  std::vector<SavedBuffer> buffers;
};

} // namespace

void writeStateStream(std::ostream &out, const StateAccess &state, const char *caller) {
  const RuleKernels &rule = state.rule().rule();
  out.write(kMagic, sizeof kMagic);
  put(out, kVersion);
  putString(out, rule.name);
  putString(out, state.rule().layout().name);
  put<int64_t>(out, state.stepCount());
  std::vector<std::pair<size_t, int64_t>> groups = state.groupSteps();
  put<uint64_t>(out, groups.size());
  for (const auto &[tensors, steps] : groups) {
    put<uint64_t>(out, tensors);
    put<int64_t>(out, steps);
  }
  put<uint64_t>(out, state.numTensors());
  for (size_t t = 0; t < state.numTensors(); ++t) {
    size_t size = state.tensorSize(t);
    const LayoutKernels &layout = state.tensorLayout(t);
    put<uint64_t>(out, size);
    putString(out, layout.name);
    std::vector<double> scalars = state.scalars(t);
    put<uint32_t>(out, static_cast<uint32_t>(scalars.size()));
    for (double value : scalars)
      put<double>(out, value);
    const std::vector<BufferDesc> &buffers = layout.buffers;
    put<uint32_t>(out, static_cast<uint32_t>(buffers.size() - 2));
    for (size_t b = 2; b < buffers.size(); ++b) {
      put<uint32_t>(out, static_cast<uint32_t>(buffers[b].role));
      put<uint32_t>(out, static_cast<uint32_t>(buffers[b].dtype));
      putString(out, buffers[b].state >= 0 ? rule.states[buffers[b].state].name : "");
      put<uint64_t>(out, bufferBytes(buffers[b], size));
      state.withBuffer(t, b, [&](const void *data, size_t bytes) {
        out.write(static_cast<const char *>(data), static_cast<std::streamsize>(bytes));
      });
    }
  }
  if (!out)
    throw std::runtime_error(std::string(caller) + ": writing the stream failed");
}

void readStateStream(std::istream &in, StateAccess &state, bool convert, const char *caller) {
  const RuleLayout &layout = state.rule();
  const RuleKernels &rule = layout.rule();
  auto fail = [&](const std::string &problem) {
    throw std::invalid_argument(std::string(caller) + ": " + problem);
  };
  Reader reader{in, caller};
  char magic[8];
  reader.bytes(magic, sizeof magic);
  if (std::memcmp(magic, kMagic, sizeof kMagic) != 0)
    fail("not an OptDSL state stream");
  uint32_t version = reader.get<uint32_t>();
  if (version != 1 && version != kVersion)
    fail("state format version " + std::to_string(version) + "; this runtime reads versions 1 and 2");
  std::string ruleName = reader.string();
  if (ruleName != rule.name)
    fail("the state is of rule '" + ruleName + "', this optimizer runs '" + rule.name + "'");
  std::string layoutName = reader.string();
  if (layoutName != layout.layout().name && !convert)
    fail("the state was saved under layout '" + layoutName + "' and this optimizer runs '" +
         layout.layout().name + "'; pass convert = true to convert it (narrower storage loses precision)");
  int64_t stepCount = reader.get<int64_t>();
  std::vector<std::pair<size_t, int64_t>> groups = state.groupSteps();
  std::vector<int64_t> groupSteps(groups.size(), stepCount);
  if (version >= 2) {
    uint64_t numGroups = reader.get<uint64_t>();
    if (numGroups != groups.size())
      fail("the state has " + std::to_string(numGroups) + " groups, this optimizer " +
           std::to_string(groups.size()));
    for (size_t g = 0; g < numGroups; ++g) {
      uint64_t tensors = reader.get<uint64_t>();
      groupSteps[g] = reader.get<int64_t>();
      if (tensors != groups[g].first)
        fail("group " + std::to_string(g) + " has " + std::to_string(tensors) + " tensors in the state and " +
             std::to_string(groups[g].first) + " here");
      if (groupSteps[g] < 0 || groupSteps[g] > stepCount)
        fail("group " + std::to_string(g) + " has taken " + std::to_string(groupSteps[g]) +
             " steps of the optimizer's " + std::to_string(stepCount) + "; the stream is damaged");
      if (groupSteps[g] != stepCount && !state.perGroupSteps())
        fail("group " + std::to_string(g) + " has taken " + std::to_string(groupSteps[g]) + " of " +
             std::to_string(stepCount) + " steps; this optimizer keeps one step count for every group");
    }
  }
  uint64_t numTensors = reader.get<uint64_t>();
  if (numTensors != state.numTensors())
    fail("the state has " + std::to_string(numTensors) + " tensors, this optimizer " +
         std::to_string(state.numTensors()));
  std::vector<SavedTensor> saved(numTensors);
  for (size_t t = 0; t < numTensors; ++t) {
    SavedTensor &tensor = saved[t];
    tensor.size = reader.get<uint64_t>();
    if (tensor.size != state.tensorSize(t))
      fail("tensor " + std::to_string(t) + " has " + std::to_string(tensor.size) +
           " elements in the state and " + std::to_string(state.tensorSize(t)) + " here");
    tensor.layout = reader.string();
    uint32_t numScalar = reader.get<uint32_t>();
    if (numScalar != layout.numScalar())
      fail("the state has " + std::to_string(numScalar) + " scalar states per tensor, the rule " +
           std::to_string(layout.numScalar()));
    for (uint32_t k = 0; k < numScalar; ++k)
      tensor.scalars.push_back(reader.get<double>());
    uint32_t numBuffers = reader.get<uint32_t>();
    for (uint32_t b = 0; b < numBuffers; ++b) {
      SavedBuffer buffer;
      buffer.role = static_cast<BufferRole>(reader.get<uint32_t>());
      buffer.dtype = static_cast<Dtype>(reader.get<uint32_t>());
      buffer.state = reader.string();
      uint64_t bytes = reader.get<uint64_t>();
      uint64_t expected = buffer.role == BufferRole::StateAbsmax
                              ? sizeof(float) * q8Blocks(tensor.size)
                              : (buffer.dtype > Dtype::Remainder ? 0 : elementBytes(buffer.dtype, tensor.size));
      if (bytes != expected || buffer.dtype > Dtype::Remainder)
        fail("buffer " + std::to_string(b) + " of tensor " + std::to_string(t) + " has " +
             std::to_string(bytes) + " bytes; the stream is damaged");
      buffer.data.resize(bytes);
      reader.bytes(buffer.data.data(), bytes);
      tensor.buffers.push_back(std::move(buffer));
    }
  }

  // Every state this optimizer keeps must be in the stream; decode into f32
  // now, so applying below cannot fail half way.
  struct Apply {
    size_t tensor, buffer;
    std::vector<float> values; // decoded; or raw bytes when the storage matches
    const SavedBuffer *raw = nullptr;
  };
  std::vector<Apply> plan;
  for (size_t t = 0; t < numTensors; ++t) {
    const SavedTensor &from = saved[t];
    const std::vector<BufferDesc> &buffers = state.tensorLayout(t).buffers;
    for (size_t b = 2; b < buffers.size(); ++b) {
      const BufferDesc &desc = buffers[b];
      if (desc.role == BufferRole::StateAbsmax)
        continue; // written with its state
      std::string name = desc.state >= 0 ? rule.states[desc.state].name : "";
      auto match = [&](const SavedBuffer &buffer, BufferRole role) {
        return buffer.role == role && buffer.state == name;
      };
      const SavedBuffer *found = nullptr, *absmax = nullptr;
      for (const SavedBuffer &buffer : from.buffers) {
        if (match(buffer, desc.role))
          found = &buffer;
        if (match(buffer, BufferRole::StateAbsmax))
          absmax = &buffer;
      }
      if (!found) {
        if (desc.role == BufferRole::Master)
          continue; // keeps the exact value of the params given to addGroup
        fail("state '" + name + "' of tensor " + std::to_string(t) + " is missing from the stream");
      }
      Apply apply{t, b, {}, nullptr};
      if (found->dtype == desc.dtype && (!isQ8(desc.dtype) || absmax)) {
        apply.raw = found;
      } else if (found->dtype == Dtype::Remainder || desc.dtype == Dtype::Remainder) {
        fail("tensor " + std::to_string(t) + ": a master kept as remainders converts to or from "
             "another master only together with the params, which are the caller's; load it "
             "under the layout it was saved with");
      } else {
        apply.values.resize(from.size);
        decodeToF32(found->dtype, found->data.data(),
                    absmax ? reinterpret_cast<const float *>(absmax->data.data()) : nullptr, apply.values);
      }
      plan.push_back(std::move(apply));
    }
  }

  for (Apply &apply : plan) {
    const std::vector<BufferDesc> &buffers = state.tensorLayout(apply.tensor).buffers;
    int a = findBuffer(buffers, BufferRole::StateAbsmax, buffers[apply.buffer].state);
    if (apply.raw) {
      state.writeBuffer(apply.tensor, apply.buffer, apply.raw->data.data());
      if (a >= 0)
        for (const SavedBuffer &buffer : saved[apply.tensor].buffers)
          if (buffer.role == BufferRole::StateAbsmax && buffer.state == apply.raw->state)
            state.writeBuffer(apply.tensor, static_cast<size_t>(a), buffer.data.data());
    } else {
      size_t size = saved[apply.tensor].size;
      std::vector<char> data(bufferBytes(buffers[apply.buffer], size));
      std::vector<char> absmax(a < 0 ? 0 : bufferBytes(buffers[a], size));
      encodeF32(buffers[apply.buffer].dtype, apply.values, data.data(),
                a < 0 ? nullptr : reinterpret_cast<float *>(absmax.data()));
      state.writeBuffer(apply.tensor, apply.buffer, data.data());
      if (a >= 0)
        state.writeBuffer(apply.tensor, static_cast<size_t>(a), absmax.data());
    }
  }
  std::vector<std::vector<double>> scalars;
  for (const SavedTensor &tensor : saved)
    scalars.push_back(tensor.scalars);
  state.finishLoad(stepCount, groupSteps, scalars);
}

} // namespace optrt::detail
