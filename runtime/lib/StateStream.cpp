#include "StateStream.h"

#include "LayoutBuffers.h"
#include "optrt/Storage.h"

// Header-only use of Debian's libxxhash-dev: nothing to link, for optrt or
// for the programs that link it.
#define XXH_INLINE_ALL
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <sys/stat.h>
#include <unistd.h>

namespace optrt::detail {

namespace {

constexpr char kMagic[8] = {'O', 'P', 'T', 'D', 'S', 'L', 'S', 'T'};
constexpr char kEnd[8] = {'O', 'P', 'T', 'D', 'S', 'L', 'E', 'N'};
constexpr uint32_t kVersion = 3;
// A header larger than this is damage, not a model (millions of tensors).
constexpr uint64_t kMaxHeaderBytes = uint64_t{1} << 32;

template <typename T> void put(std::ostream &out, T value) {
  out.write(reinterpret_cast<const char *>(&value), sizeof value);
}
void putString(std::ostream &out, const std::string &text) {
  put<uint32_t>(out, static_cast<uint32_t>(text.size()));
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
}

uint64_t checksum(const void *data, size_t bytes) { return XXH3_64bits(data, bytes); }

/// Reads with a named error on a short stream. `where` names the section
/// being read, for the message.
struct Reader {
  std::istream &in;
  const char *caller;
  std::string where;
  void bytes(void *data, size_t n) {
    if (!in.read(static_cast<char *>(data), static_cast<std::streamsize>(n)))
      throw std::invalid_argument(std::string(caller) + ": the stream ends early, in " + where +
                                  " (truncated or not written by saveState)");
  }
  template <typename T> T get() {
    T value;
    bytes(&value, sizeof value);
    return value;
  }
  /// n bytes, read a MiB at a time: a damaged length on a short stream ends
  /// in "ends early", not in an allocation of the length it claims.
  void block(std::vector<char> &data, uint64_t n) {
    constexpr uint64_t kStep = uint64_t{1} << 20;
    data.clear();
    for (uint64_t done = 0; done < n;) {
      uint64_t now = std::min(kStep, n - done);
      data.resize(done + now);
      bytes(data.data() + done, now);
      done += now;
    }
  }
  std::string string() {
    uint32_t n = get<uint32_t>();
    if (n > (1u << 20))
      throw std::invalid_argument(std::string(caller) + ": a name of " + std::to_string(n) + " bytes in " + where +
                                  "; the stream is damaged");
    std::string text(n, '\0');
    bytes(text.data(), n);
    return text;
  }
};

struct SavedBuffer {
  BufferRole role;
  Dtype dtype;
  std::string state;
  uint64_t bytes = 0;
  std::vector<char> data;
};
struct SavedTensor {
  size_t size;
  std::string layout;
  std::vector<double> scalars;
  std::vector<SavedBuffer> buffers;
};
struct SavedGroup {
  uint64_t tensors;
  int64_t steps;
  std::vector<std::pair<std::string, double>> hypers;
};
/// A whole stream as read, before it meets the optimizer.
struct SavedStream {
  uint32_t version = 0;
  std::string rule, layout;
  int64_t stepCount = 0;
  std::vector<SavedGroup> groups; // empty for version 1
  std::vector<SavedTensor> tensors;
};

std::string bufferName(const SavedBuffer &buffer, size_t tensor) {
  std::string what = buffer.role == BufferRole::Master        ? "the master"
                     : buffer.role == BufferRole::StateAbsmax ? "the absmax of state '" + buffer.state + "'"
                                                              : "state '" + buffer.state + "'";
  return what + " of tensor " + std::to_string(tensor);
}

/// One tensor's record; with `inlineData` (versions 1 and 2) its buffers'
/// bytes follow each buffer's record.
SavedTensor readTensor(Reader &reader, size_t t, bool inlineData) {
  auto fail = [&](const std::string &problem) {
    throw std::invalid_argument(std::string(reader.caller) + ": " + problem + "; the stream is damaged");
  };
  SavedTensor tensor;
  tensor.size = reader.get<uint64_t>();
  tensor.layout = reader.string();
  uint32_t numScalar = reader.get<uint32_t>();
  if (numScalar > 4096)
    fail("tensor " + std::to_string(t) + " has " + std::to_string(numScalar) + " scalar states");
  for (uint32_t k = 0; k < numScalar; ++k)
    tensor.scalars.push_back(reader.get<double>());
  uint32_t numBuffers = reader.get<uint32_t>();
  if (numBuffers > 4096)
    fail("tensor " + std::to_string(t) + " has " + std::to_string(numBuffers) + " buffers");
  for (uint32_t b = 0; b < numBuffers; ++b) {
    SavedBuffer buffer;
    buffer.role = static_cast<BufferRole>(reader.get<uint32_t>());
    buffer.dtype = static_cast<Dtype>(reader.get<uint32_t>());
    buffer.state = reader.string();
    buffer.bytes = reader.get<uint64_t>();
    uint64_t expected = buffer.role == BufferRole::StateAbsmax
                            ? sizeof(float) * q8Blocks(tensor.size)
                            : (buffer.dtype > Dtype::Remainder ? 0 : elementBytes(buffer.dtype, tensor.size));
    // A state per row, column or matrix (f32): whole in every file, even a
    // sharded checkpoint's whose part of the tensor is smaller (or empty);
    // the loader checks its count against the tensor's shape (and block()
    // reads a damaged length no further than the stream goes).
    bool axisState = buffer.role == BufferRole::AxisState && buffer.dtype == Dtype::F32 &&
                     buffer.bytes % sizeof(float) == 0 && buffer.bytes > 0;
    if ((buffer.bytes != expected && !axisState) || buffer.dtype > Dtype::Remainder ||
        (buffer.role > BufferRole::StateAbsmax && buffer.role != BufferRole::AxisState))
      fail("buffer " + std::to_string(b) + " of tensor " + std::to_string(t) + " has " +
           std::to_string(buffer.bytes) + " bytes");
    if (inlineData)
      reader.block(buffer.data, buffer.bytes);
    tensor.buffers.push_back(std::move(buffer));
  }
  return tensor;
}

/// The fields after the version, up to the tensors: as in every version.
void readGroups(Reader &reader, SavedStream &stream, bool withHypers) {
  stream.rule = reader.string();
  stream.layout = reader.string();
  stream.stepCount = reader.get<int64_t>();
  if (stream.version < 2)
    return;
  uint64_t numGroups = reader.get<uint64_t>();
  if (numGroups > (uint64_t{1} << 32))
    throw std::invalid_argument(std::string(reader.caller) + ": " + std::to_string(numGroups) +
                                " groups; the stream is damaged");
  for (uint64_t g = 0; g < numGroups; ++g) {
    SavedGroup group;
    group.tensors = reader.get<uint64_t>();
    group.steps = reader.get<int64_t>();
    if (withHypers) {
      uint32_t numHypers = reader.get<uint32_t>();
      if (numHypers > 4096)
        throw std::invalid_argument(std::string(reader.caller) + ": group " + std::to_string(g) + " has " +
                                    std::to_string(numHypers) + " hypers; the stream is damaged");
      for (uint32_t h = 0; h < numHypers; ++h) {
        std::string name = reader.string();
        group.hypers.emplace_back(std::move(name), reader.get<double>());
      }
    }
    stream.groups.push_back(std::move(group));
  }
}

/// Reads a whole stream, checking every checksum (version 3) and that
/// nothing follows its end.
SavedStream readStream(std::istream &in, const char *caller) {
  Reader reader{in, caller, "the stream's magic number"};
  auto damaged = [&](const std::string &problem) {
    throw std::invalid_argument(std::string(caller) + ": " + problem);
  };
  char magic[8];
  reader.bytes(magic, sizeof magic);
  if (std::memcmp(magic, kMagic, sizeof kMagic) != 0)
    damaged("not an OptDSL state stream");
  SavedStream stream;
  reader.where = "the version";
  stream.version = reader.get<uint32_t>();
  if (stream.version < 1 || stream.version > kVersion)
    damaged("state format version " + std::to_string(stream.version) + "; this runtime reads versions 1 to 3");

  if (stream.version < 3) {
    reader.where = "the stream";
    readGroups(reader, stream, false);
    uint64_t numTensors = reader.get<uint64_t>();
    for (uint64_t t = 0; t < numTensors; ++t)
      stream.tensors.push_back(readTensor(reader, t, true));
    return stream;
  }

  reader.where = "the header section";
  uint64_t headerBytes = reader.get<uint64_t>();
  if (headerBytes > kMaxHeaderBytes)
    damaged("a header section of " + std::to_string(headerBytes) + " bytes; the stream is damaged");
  std::vector<char> headerData;
  reader.block(headerData, headerBytes);
  if (reader.get<uint64_t>() != checksum(headerData.data(), headerData.size()))
    damaged("the checksum of the header section does not match its bytes; the stream is damaged");
  std::string header(headerData.begin(), headerData.end());
  std::istringstream headerIn(header);
  Reader fields{headerIn, caller, "the header section"};
  readGroups(fields, stream, true);
  uint64_t numTensors = fields.get<uint64_t>();
  if (numTensors > header.size())
    damaged(std::to_string(numTensors) + " tensors in a header of " + std::to_string(header.size()) +
            " bytes; the stream is damaged");
  for (uint64_t t = 0; t < numTensors; ++t)
    stream.tensors.push_back(readTensor(fields, t, false));
  if (headerIn.peek() != std::char_traits<char>::eof())
    damaged("the header section has bytes after its last tensor; the stream is damaged");

  for (size_t t = 0; t < stream.tensors.size(); ++t)
    for (SavedBuffer &buffer : stream.tensors[t].buffers) {
      reader.where = "the section of " + bufferName(buffer, t);
      if (reader.get<uint64_t>() != buffer.bytes)
        damaged("the section of " + bufferName(buffer, t) + " has another size than its header says; the "
                "stream is damaged");
      reader.block(buffer.data, buffer.bytes);
      if (reader.get<uint64_t>() != checksum(buffer.data.data(), buffer.data.size()))
        damaged("the checksum of " + bufferName(buffer, t) + " does not match its bytes; the stream is damaged");
    }
  reader.where = "the end marker";
  char end[8];
  reader.bytes(end, sizeof end);
  if (std::memcmp(end, kEnd, sizeof kEnd) != 0)
    damaged("the end marker is wrong; the stream is damaged");
  if (in.peek() != std::char_traits<char>::eof())
    damaged("bytes follow the end of the stream; it is damaged or two streams were joined");
  return stream;
}

} // namespace

void writeStateStream(std::ostream &out, const StateAccess &state, const char *caller) {
  const RuleKernels &rule = state.rule().rule();
  std::ostringstream header;
  putString(header, rule.name);
  putString(header, state.rule().layout().name);
  put<int64_t>(header, state.stepCount());
  std::vector<GroupRecord> groups = state.groups();
  put<uint64_t>(header, groups.size());
  for (const GroupRecord &group : groups) {
    put<uint64_t>(header, group.tensors);
    put<int64_t>(header, group.steps);
    // The step hypers are the step's, set anew every step: not state.
    uint32_t saved = 0;
    for (const HyperInfo &hyper : rule.hypers)
      saved += isStepHyper(hyper.name) ? 0 : 1;
    put<uint32_t>(header, saved);
    for (size_t h = 0; h < rule.hypers.size(); ++h)
      if (!isStepHyper(rule.hypers[h].name)) {
        putString(header, rule.hypers[h].name);
        put<double>(header, group.hypers[h]);
      }
  }
  put<uint64_t>(header, state.numTensors());
  for (size_t t = 0; t < state.numTensors(); ++t) {
    size_t size = state.tensorSize(t);
    const LayoutKernels &layout = state.tensorLayout(t);
    put<uint64_t>(header, size);
    putString(header, layout.name);
    std::vector<double> scalars = state.scalars(t);
    put<uint32_t>(header, static_cast<uint32_t>(scalars.size()));
    for (double value : scalars)
      put<double>(header, value);
    const std::vector<BufferDesc> &buffers = layout.buffers;
    std::vector<size_t> saved = savedBuffers(buffers, rule.states);
    put<uint32_t>(header, static_cast<uint32_t>(saved.size()));
    for (size_t b : saved) {
      put<uint32_t>(header, static_cast<uint32_t>(buffers[b].role));
      put<uint32_t>(header, static_cast<uint32_t>(buffers[b].dtype));
      putString(header, buffers[b].state >= 0 ? rule.states[buffers[b].state].name : "");
      size_t bytes = 0;
      state.withBuffer(t, b, [&](const void *, size_t n) { bytes = n; });
      put<uint64_t>(header, bytes);
    }
  }
  std::string headerBytes = header.str();
  out.write(kMagic, sizeof kMagic);
  put(out, kVersion);
  put<uint64_t>(out, headerBytes.size());
  out.write(headerBytes.data(), static_cast<std::streamsize>(headerBytes.size()));
  put<uint64_t>(out, checksum(headerBytes.data(), headerBytes.size()));
  for (size_t t = 0; t < state.numTensors(); ++t) {
    const std::vector<BufferDesc> &buffers = state.tensorLayout(t).buffers;
    for (size_t b : savedBuffers(buffers, state.rule().rule().states))
      state.withBuffer(t, b, [&](const void *data, size_t bytes) {
        put<uint64_t>(out, bytes);
        out.write(static_cast<const char *>(data), static_cast<std::streamsize>(bytes));
        put<uint64_t>(out, checksum(data, bytes));
      });
  }
  out.write(kEnd, sizeof kEnd);
  if (!out)
    throw std::runtime_error(std::string(caller) + ": writing the stream failed");
}

void readStateStream(std::istream &in, StateAccess &state, bool convert, const char *caller) {
  const RuleLayout &layout = state.rule();
  const RuleKernels &rule = layout.rule();
  auto fail = [&](const std::string &problem) {
    throw std::invalid_argument(std::string(caller) + ": " + problem);
  };
  SavedStream stream = readStream(in, caller);
  if (stream.rule != rule.name)
    fail("the state is of rule '" + stream.rule + "', this optimizer runs '" + rule.name + "'");
  if (stream.layout != layout.layout().name && !convert)
    fail("the state was saved under layout '" + stream.layout + "' and this optimizer runs '" +
         layout.layout().name + "'; pass convert = true to convert it (narrower storage loses precision)");

  std::vector<GroupRecord> groups = state.groups();
  for (GroupRecord &group : groups)
    group.steps = stream.stepCount;
  if (stream.version >= 2) {
    if (stream.groups.size() != groups.size())
      fail("the state has " + std::to_string(stream.groups.size()) + " groups, this optimizer " +
           std::to_string(groups.size()));
    for (size_t g = 0; g < groups.size(); ++g) {
      const SavedGroup &saved = stream.groups[g];
      if (saved.tensors != groups[g].tensors)
        fail("group " + std::to_string(g) + " has " + std::to_string(saved.tensors) + " tensors in the state and " +
             std::to_string(groups[g].tensors) + " here");
      if (saved.steps < 0 || saved.steps > stream.stepCount)
        fail("group " + std::to_string(g) + " has taken " + std::to_string(saved.steps) +
             " steps of the optimizer's " + std::to_string(stream.stepCount) + "; the stream is damaged");
      if (saved.steps != stream.stepCount && !state.perGroupSteps())
        fail("group " + std::to_string(g) + " has taken " + std::to_string(saved.steps) + " of " +
             std::to_string(stream.stepCount) + " steps; this optimizer keeps one step count for every group");
      groups[g].steps = saved.steps;
      for (const auto &[name, value] : saved.hypers) {
        std::string where = std::string(caller) + ": group " + std::to_string(g) + " of the state";
        size_t index = layout.hyperIndex(name, where.c_str());
        layout.checkHyperValue(index, value, where.c_str());
        groups[g].hypers[index] = value;
      }
    }
  }
  if (stream.tensors.size() != state.numTensors())
    fail("the state has " + std::to_string(stream.tensors.size()) + " tensors, this optimizer " +
         std::to_string(state.numTensors()));
  std::vector<SavedTensor> &saved = stream.tensors;
  for (size_t t = 0; t < saved.size(); ++t) {
    if (saved[t].size != state.tensorSize(t))
      fail("tensor " + std::to_string(t) + " has " + std::to_string(saved[t].size) +
           " elements in the state and " + std::to_string(state.tensorSize(t)) + " here");
    if (saved[t].scalars.size() != layout.numScalar())
      fail("the state has " + std::to_string(saved[t].scalars.size()) + " scalar states per tensor, the rule " +
           std::to_string(layout.numScalar()));
  }

  // Every state this optimizer keeps must be in the stream; decode into f32
  // now, so applying below cannot fail half way.
  struct Apply {
    size_t tensor, buffer;
    std::vector<float> values; // decoded; or raw bytes when the storage matches
    const SavedBuffer *raw = nullptr;
  };
  std::vector<Apply> plan;
  for (size_t t = 0; t < saved.size(); ++t) {
    const SavedTensor &from = saved[t];
    const std::vector<BufferDesc> &buffers = state.tensorLayout(t).buffers;
    for (size_t b : savedBuffers(buffers, rule.states)) {
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
      if (desc.role == BufferRole::AxisState) {
        size_t bytes = 0;
        state.withBuffer(t, b, [&](const void *, size_t n) { bytes = n; });
        if (found->bytes != bytes)
          fail("state '" + name + "' of tensor " + std::to_string(t) + " has " +
               std::to_string(found->bytes / sizeof(float)) + " values in the stream and " +
               std::to_string(bytes / sizeof(float)) + " here (one per row or column: the tensor's shape differs)");
        apply.raw = found;
      } else if (found->dtype == desc.dtype && (!isQ8(desc.dtype) || absmax)) {
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
  state.finishLoad(stream.stepCount, groups, scalars);
}

void writeFileAtomically(const std::string &path, const std::function<void(std::ostream &)> &write,
                         const char *caller) {
  auto fail = [&](const std::string &what, int error) {
    throw std::runtime_error(std::string(caller) + ": " + what + " '" + path + "': " + std::strerror(error));
  };
  std::filesystem::path target(path);
  std::filesystem::path folder = target.has_parent_path() ? target.parent_path() : std::filesystem::path(".");
  std::string temporary = (folder / ("." + target.filename().string() + ".tmp." + std::to_string(getpid()))).string();
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    if (!out)
      fail("cannot create a temporary file beside", errno);
    try {
      write(out);
      out.flush();
    } catch (...) {
      std::remove(temporary.c_str());
      throw;
    }
    if (!out) {
      int error = errno;
      std::remove(temporary.c_str());
      fail("writing failed for", error);
    }
  }
  // The bytes on disk before the name points at them.
  int fd = ::open(temporary.c_str(), O_RDONLY);
  if (fd < 0 || ::fsync(fd) != 0) {
    int error = errno;
    if (fd >= 0)
      ::close(fd);
    std::remove(temporary.c_str());
    fail("cannot flush to disk the new", error);
  }
  ::close(fd);
  if (std::rename(temporary.c_str(), path.c_str()) != 0) {
    int error = errno;
    std::remove(temporary.c_str());
    fail("cannot rename the temporary file to", error);
  }
  // The rename itself on disk.
  int dir = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
}

void readFile(const std::string &path, const std::function<void(std::istream &)> &read, const char *caller) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw std::invalid_argument(std::string(caller) + ": cannot open '" + path + "': " + std::strerror(errno));
  read(in);
}

} // namespace optrt::detail
