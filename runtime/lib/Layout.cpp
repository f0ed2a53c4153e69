#include "optrt/Layout.h"

#include <cctype>
#include <stdexcept>

namespace optrt {

namespace {

[[noreturn]] void fail(std::string_view text, const std::string &problem) {
  throw std::invalid_argument("layout '" + std::string(text) + "': " + problem +
                              " (expected items KEY=DTYPE separated by commas; keys: param, "
                              "grad, master, state or a state's name; dtypes: f32, bf16, f16, "
                              "q8, none for master; rounding=nearest|stochastic)");
}

std::optional<Dtype> parseDtype(std::string_view name) {
  if (name == "f32")
    return Dtype::F32;
  if (name == "bf16")
    return Dtype::BF16;
  if (name == "f16")
    return Dtype::F16;
  // The compiler chooses the unsigned map for a state it proves non-negative.
  if (name == "q8")
    return Dtype::Q8Signed;
  return std::nullopt;
}

std::string_view trim(std::string_view text) {
  while (!text.empty() && text.front() == ' ')
    text.remove_prefix(1);
  while (!text.empty() && text.back() == ' ')
    text.remove_suffix(1);
  return text;
}

bool isIdentifier(std::string_view name) {
  if (name.empty() || !(std::isalpha(static_cast<unsigned char>(name[0])) || name[0] == '_'))
    return false;
  for (char c : name)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_'))
      return false;
  return true;
}

} // namespace

std::string dtypeName(Dtype dtype) {
  switch (dtype) {
  case Dtype::F32:
    return "f32";
  case Dtype::BF16:
    return "bf16";
  case Dtype::F16:
    return "f16";
  case Dtype::Q8Signed:
  case Dtype::Q8Unsigned:
    return "q8";
  case Dtype::Remainder:
    return "remainder";
  }
  return "dtype#" + std::to_string(static_cast<uint32_t>(dtype));
}

Layout Layout::parse(std::string_view text) {
  Layout layout;
  std::string_view rest = trim(text);
  if (rest.empty())
    fail(text, "it is empty");
  // The bare dtype "f32" names the all-f32 layout.
  if (rest == "f32")
    return layout;
  while (true) {
    size_t comma = rest.find(',');
    std::string_view item = trim(rest.substr(0, comma));
    size_t equals = item.find('=');
    if (item.empty())
      fail(text, "an empty item");
    if (equals == std::string_view::npos)
      fail(text, "item '" + std::string(item) + "' has no '='");
    std::string_view key = trim(item.substr(0, equals));
    std::string_view value = trim(item.substr(equals + 1));
    std::optional<Dtype> dtype = parseDtype(value);
    if (key == "rounding") {
      if (value == "stochastic" || value == "nearest")
        layout.stochastic = value == "stochastic";
      else
        fail(text, "rounding must be nearest or stochastic, not '" + std::string(value) + "'");
    } else if (key == "master") {
      if (value == "none")
        layout.master.reset();
      else if (dtype == Dtype::F32)
        layout.master = Dtype::F32;
      else if (value == "remainder")
        layout.master = Dtype::Remainder;
      else
        fail(text, "master must be f32, remainder or none, not '" + std::string(value) + "'");
    } else if (!dtype) {
      fail(text, "unknown dtype '" + std::string(value) + "' for " + std::string(key));
    } else if (key == "param" || key == "grad") {
      if (*dtype == Dtype::Q8Signed)
        fail(text, std::string(key) + " cannot be q8 (8-bit storage is for states)");
      (key == "param" ? layout.param : layout.grad) = *dtype;
    } else if (key == "state") {
      layout.states = *dtype;
      layout.stateOverrides.clear();
    } else if (isIdentifier(key)) {
      layout.stateOverrides[std::string(key)] = *dtype;
    } else {
      fail(text, "unknown key '" + std::string(key) + "'");
    }
    if (comma == std::string_view::npos)
      break;
    rest = rest.substr(comma + 1);
  }
  return layout;
}

std::string Layout::str() const {
  std::string text;
  auto add = [&](const std::string &key, Dtype dtype) {
    text += (text.empty() ? "" : ",") + key + "=" + dtypeName(dtype);
  };
  if (param != Dtype::F32)
    add("param", param);
  if (grad != Dtype::F32)
    add("grad", grad);
  if (master)
    add("master", *master);
  if (states && *states != Dtype::F32)
    add("state", *states);
  Dtype base = states.value_or(Dtype::F32);
  for (const auto &[name, dtype] : stateOverrides)
    if (dtype != base)
      add(name, dtype);
  if (stochastic)
    text += std::string(text.empty() ? "" : ",") + "rounding=stochastic";
  return text.empty() ? "f32" : text;
}

Dtype Layout::stateDtype(const std::string &name) const {
  auto found = stateOverrides.find(name);
  if (found != stateOverrides.end())
    return found->second;
  return states.value_or(Dtype::F32);
}

} // namespace optrt
