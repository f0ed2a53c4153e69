// A safetensors file (https://github.com/huggingface/safetensors, its
// format: u64 little-endian header length, a JSON header naming each
// tensor's dtype, shape and byte range, then the bytes) read and written
// whole. Used by Optimizer::exportSafetensors/importSafetensors for
// torch.optim interchange (docs/checkpoints.md).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace optrt::detail {

struct SafeTensor {
  std::string dtype;          // "F32", "F64"
  std::vector<int64_t> shape; // [] for a scalar
  std::vector<char> bytes;
};

struct SafetensorsFile {
  std::map<std::string, SafeTensor> tensors;
  std::map<std::string, std::string> metadata; // "__metadata__": strings only
};

/// Throws std::runtime_error naming `caller` and the path when writing fails.
void writeSafetensors(const std::string &path, const SafetensorsFile &file, const char *caller);
/// Throws std::invalid_argument naming `caller`, the path and the problem
/// for a file that is not a well-formed safetensors file (short, a header
/// that is not JSON, a dtype other than F32/F64/F16/BF16, a byte range
/// outside the data or not matching its shape, ranges that overlap).
SafetensorsFile readSafetensors(const std::string &path, const char *caller);

} // namespace optrt::detail
