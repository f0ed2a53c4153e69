// printf-style formatting into a std::string, for the trainer's reports.
#pragma once

#include <cstdio>
#include <string>

namespace charlm {

/// The text std::snprintf writes for pattern and values (up to 511 bytes).
inline std::string format(const char *pattern, auto... values) {
  char text[512];
  std::snprintf(text, sizeof text, pattern, values...);
  return text;
}

} // namespace charlm
