// Reads tests/layouts/reference/bnb_q8.txt (format in make_bnb_reference.py).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace layouts_test {

struct BnbReference {
  std::map<std::string, std::vector<float>> f32;
  std::map<std::string, std::vector<uint8_t>> u8;
  const std::vector<float> &floats(const std::string &name) const;
  const std::vector<uint8_t> &bytes(const std::string &name) const;
};

/// The parsed file, read once; throws std::runtime_error when it is missing
/// or malformed.
const BnbReference &bnbReference();

} // namespace layouts_test
