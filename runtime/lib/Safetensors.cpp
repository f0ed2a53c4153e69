#include "Safetensors.h"

#include "StateStream.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <stdexcept>

namespace optrt::detail {

namespace {

size_t dtypeBytes(const std::string &dtype) {
  if (dtype == "F64")
    return 8;
  if (dtype == "F32")
    return 4;
  if (dtype == "F16" || dtype == "BF16")
    return 2;
  return 0;
}

} // namespace

void writeSafetensors(const std::string &path, const SafetensorsFile &file, const char *caller) {
  nlohmann::json header = nlohmann::json::object();
  uint64_t offset = 0;
  for (const auto &[name, tensor] : file.tensors) {
    header[name] = {{"dtype", tensor.dtype},
                    {"shape", tensor.shape},
                    {"data_offsets", {offset, offset + tensor.bytes.size()}}};
    offset += tensor.bytes.size();
  }
  if (!file.metadata.empty())
    header["__metadata__"] = file.metadata;
  std::string text = header.dump();
  // Data starts 8-byte aligned, as the reference writer pads it.
  text.append((8 - (8 + text.size()) % 8) % 8, ' ');
  writeFileAtomically(
      path,
      [&](std::ostream &out) {
        uint64_t length = text.size();
        out.write(reinterpret_cast<const char *>(&length), sizeof length);
        out.write(text.data(), static_cast<std::streamsize>(text.size()));
        for (const auto &[name, tensor] : file.tensors)
          out.write(tensor.bytes.data(), static_cast<std::streamsize>(tensor.bytes.size()));
      },
      caller);
}

SafetensorsFile readSafetensors(const std::string &path, const char *caller) {
  auto fail = [&](const std::string &problem) {
    throw std::invalid_argument(std::string(caller) + ": '" + path + "' " + problem);
  };
  std::ifstream in(path, std::ios::binary);
  if (!in)
    fail(std::string("cannot be opened: ") + std::strerror(errno));
  in.seekg(0, std::ios::end);
  auto fileBytes = static_cast<uint64_t>(in.tellg());
  in.seekg(0);
  uint64_t headerBytes = 0;
  if (fileBytes < 8 || !in.read(reinterpret_cast<char *>(&headerBytes), 8) || headerBytes > fileBytes - 8)
    fail("is not a safetensors file (its header length runs past its end)");
  std::string text(headerBytes, '\0');
  in.read(text.data(), static_cast<std::streamsize>(headerBytes));
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception &e) {
    fail(std::string("has a header that is not JSON: ") + e.what());
  }
  if (!header.is_object())
    fail("has a header that is not a JSON object");
  uint64_t dataBytes = fileBytes - 8 - headerBytes;
  SafetensorsFile file;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  try {
    for (const auto &[name, entry] : header.items()) {
      if (name == "__metadata__") {
        for (const auto &[key, value] : entry.items())
          file.metadata[key] = value.get<std::string>();
        continue;
      }
      SafeTensor tensor;
      tensor.dtype = entry.at("dtype").get<std::string>();
      tensor.shape = entry.at("shape").get<std::vector<int64_t>>();
      auto offsets = entry.at("data_offsets").get<std::vector<uint64_t>>();
      size_t element = dtypeBytes(tensor.dtype);
      if (element == 0)
        fail("has tensor '" + name + "' of dtype " + tensor.dtype + "; OptDSL reads F64, F32, F16 and BF16");
      uint64_t count = 1;
      for (int64_t dim : tensor.shape) {
        if (dim < 0 || (dim > 0 && count > std::numeric_limits<uint64_t>::max() / static_cast<uint64_t>(dim)))
          fail("has tensor '" + name + "' of an impossible shape");
        count *= static_cast<uint64_t>(dim);
      }
      if (offsets.size() != 2 || offsets[0] > offsets[1] || offsets[1] > dataBytes ||
          offsets[1] - offsets[0] != count * element)
        fail("has tensor '" + name + "' whose byte range does not fit its shape or the file");
      ranges.emplace_back(offsets[0], offsets[1]);
      tensor.bytes.resize(offsets[1] - offsets[0]);
      in.seekg(static_cast<std::streamoff>(8 + headerBytes + offsets[0]));
      if (!in.read(tensor.bytes.data(), static_cast<std::streamsize>(tensor.bytes.size())))
        fail("ends inside tensor '" + name + "'");
      file.tensors.emplace(name, std::move(tensor));
    }
  } catch (const nlohmann::json::exception &e) {
    fail(std::string("has a malformed header entry: ") + e.what());
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i)
    if (ranges[i].first < ranges[i - 1].second)
      fail("has tensors whose byte ranges overlap");
  return file;
}

} // namespace optrt::detail
