#include "ReferenceFile.h"

#include <bit>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace layouts_test {

namespace {

BnbReference load(const std::string &path) {
  std::ifstream in(path);
  if (!in)
    throw std::runtime_error("cannot read " + path);
  BnbReference ref;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#')
      continue;
    std::istringstream fields(line);
    std::string name, kind;
    size_t count = 0;
    fields >> name >> kind >> count;
    for (size_t i = 0; i < count; ++i) {
      std::string token;
      if (!(fields >> token))
        throw std::runtime_error(path + ": record " + name + " is short");
      if (kind == "f32")
        ref.f32[name].push_back(std::bit_cast<float>(static_cast<uint32_t>(std::stoul(token, nullptr, 16))));
      else if (kind == "u8")
        ref.u8[name].push_back(static_cast<uint8_t>(std::stoul(token)));
      else
        throw std::runtime_error(path + ": unknown kind " + kind);
    }
  }
  return ref;
}

} // namespace

const std::vector<float> &BnbReference::floats(const std::string &name) const {
  auto found = f32.find(name);
  if (found == f32.end())
    throw std::runtime_error("reference has no f32 record " + name);
  return found->second;
}

const std::vector<uint8_t> &BnbReference::bytes(const std::string &name) const {
  auto found = u8.find(name);
  if (found == u8.end())
    throw std::runtime_error("reference has no u8 record " + name);
  return found->second;
}

const BnbReference &bnbReference() {
  static const BnbReference ref = load(OPTDSL_BNB_REFERENCE);
  return ref;
}

} // namespace layouts_test
