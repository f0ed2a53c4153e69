// Saving and loading an optimizer's state with its layout tag. The stream is
// binary, little-endian as the host writes it (a checkpoint is read back on
// the same kind of machine):
//   "OPTDSLST" u32 version=1, string rule, string layout, i64 stepCount,
//   u64 tensors; per tensor: u64 size, string its layout, u32 scalars +
//   f64 each, u32 buffers; per buffer: u32 role, u32 dtype, string state
//   name ("" for master), u64 bytes + the buffer's bytes.
// Strings are u32 length + bytes. Buffers are stored raw, so loading under
// the same layout restores every bit (q8 codes and absmax included).
#include "OptimizerImpl.h"

#include <istream>
#include <ostream>

namespace optrt {

namespace {

constexpr char kMagic[8] = {'O', 'P', 'T', 'D', 'S', 'L', 'S', 'T'};
constexpr uint32_t kVersion = 1;

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
  void bytes(void *data, size_t n) {
    if (!in.read(static_cast<char *>(data), static_cast<std::streamsize>(n)))
      throw std::invalid_argument("optrt::Optimizer::loadState: the stream ends early (truncated "
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
      throw std::invalid_argument("optrt::Optimizer::loadState: a name of " + std::to_string(n) +
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

void Optimizer::saveState(std::ostream &out) const {
  const Impl &s = *impl_;
  const RuleKernels &rule = s.layout.rule();
  out.write(kMagic, sizeof kMagic);
  put(out, kVersion);
  putString(out, rule.name);
  putString(out, s.layout.layout().name);
  put<int64_t>(out, s.stepCount);
  put<uint64_t>(out, s.tensors.size());
  size_t numScalar = s.layout.numScalar();
  for (size_t t = 0; t < s.tensors.size(); ++t) {
    const Tensor &tensor = s.tensors[t];
    put<uint64_t>(out, tensor.size);
    putString(out, tensor.layout->name);
    put<uint32_t>(out, static_cast<uint32_t>(numScalar));
    for (size_t k = 0; k < numScalar; ++k)
      put<double>(out, s.scalars[t * numScalar + k]);
    const std::vector<BufferDesc> &buffers = tensor.layout->buffers;
    put<uint32_t>(out, static_cast<uint32_t>(buffers.size() - 2));
    for (size_t b = 2; b < buffers.size(); ++b) {
      put<uint32_t>(out, static_cast<uint32_t>(buffers[b].role));
      put<uint32_t>(out, static_cast<uint32_t>(buffers[b].dtype));
      putString(out, buffers[b].state >= 0 ? rule.states[buffers[b].state].name : "");
      size_t bytes = bufferBytes(buffers[b], tensor.size);
      put<uint64_t>(out, bytes);
      out.write(static_cast<const char *>(s.bufferAt(tensor, b)), static_cast<std::streamsize>(bytes));
    }
  }
  if (!out)
    throw std::runtime_error("optrt::Optimizer::saveState: writing the stream failed");
}

void Optimizer::loadState(std::istream &in, bool convert) {
  static const char *caller = "optrt::Optimizer::loadState";
  Impl &s = *impl_;
  const RuleKernels &rule = s.layout.rule();
  auto fail = [&](const std::string &problem) {
    throw std::invalid_argument(std::string(caller) + ": " + problem);
  };
  Reader reader{in};
  char magic[8];
  reader.bytes(magic, sizeof magic);
  if (std::memcmp(magic, kMagic, sizeof kMagic) != 0)
    fail("not an OptDSL state stream");
  if (uint32_t version = reader.get<uint32_t>(); version != kVersion)
    fail("state format version " + std::to_string(version) + "; this runtime reads version 1");
  std::string ruleName = reader.string();
  if (ruleName != rule.name)
    fail("the state is of rule '" + ruleName + "', this optimizer runs '" + rule.name + "'");
  std::string layoutName = reader.string();
  if (layoutName != s.layout.layout().name && !convert)
    fail("the state was saved under layout '" + layoutName + "' and this optimizer runs '" +
         s.layout.layout().name + "'; pass convert = true to convert it (narrower storage loses precision)");
  int64_t stepCount = reader.get<int64_t>();
  uint64_t numTensors = reader.get<uint64_t>();
  if (numTensors != s.tensors.size())
    fail("the state has " + std::to_string(numTensors) + " tensors, this optimizer " +
         std::to_string(s.tensors.size()));
  std::vector<SavedTensor> saved(numTensors);
  for (size_t t = 0; t < numTensors; ++t) {
    SavedTensor &tensor = saved[t];
    tensor.size = reader.get<uint64_t>();
    if (tensor.size != s.tensors[t].size)
      fail("tensor " + std::to_string(t) + " has " + std::to_string(tensor.size) +
           " elements in the state and " + std::to_string(s.tensors[t].size) + " here");
    tensor.layout = reader.string();
    uint32_t numScalar = reader.get<uint32_t>();
    if (numScalar != s.layout.numScalar())
      fail("the state has " + std::to_string(numScalar) + " scalar states per tensor, the rule " +
           std::to_string(s.layout.numScalar()));
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
    const Tensor &tensor = s.tensors[t];
    const SavedTensor &from = saved[t];
    const std::vector<BufferDesc> &buffers = tensor.layout->buffers;
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
        apply.values.resize(tensor.size);
        decodeToF32(found->dtype, found->data.data(),
                    absmax ? reinterpret_cast<const float *>(absmax->data.data()) : nullptr, apply.values);
      }
      plan.push_back(std::move(apply));
    }
  }

  for (Apply &apply : plan) {
    const Tensor &tensor = s.tensors[apply.tensor];
    const std::vector<BufferDesc> &buffers = tensor.layout->buffers;
    void *target = s.bufferAt(tensor, apply.buffer);
    float *absmax = nullptr;
    for (size_t a = 0; a < buffers.size(); ++a)
      if (buffers[a].role == BufferRole::StateAbsmax && buffers[a].state == buffers[apply.buffer].state)
        absmax = static_cast<float *>(s.bufferAt(tensor, a));
    if (apply.raw) {
      std::memcpy(target, apply.raw->data.data(), apply.raw->data.size());
      if (absmax)
        for (const SavedBuffer &buffer : saved[apply.tensor].buffers)
          if (buffer.role == BufferRole::StateAbsmax && buffer.state == apply.raw->state)
            std::memcpy(absmax, buffer.data.data(), buffer.data.size());
    } else {
      encodeF32(buffers[apply.buffer].dtype, apply.values, target, absmax);
    }
  }
  for (size_t t = 0; t < numTensors; ++t)
    std::copy(saved[t].scalars.begin(), saved[t].scalars.end(), s.scalars.begin() + t * s.layout.numScalar());
  s.stepCount = stepCount;
}

} // namespace optrt
