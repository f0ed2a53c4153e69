// The values a hyper may take, as a rule declares them
// (`hyper beta2 = 0.999 in [0, 1);`). The compiler relies on the range (a
// state proved non-negative from it gets the unsigned q8 map), so every
// place a hyper is set checks it: sema (the default), `--fix`, the
// interpreter and the runtime's setHyper.
#pragma once

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <string>

namespace optrt {

/// The interval of values a hyper may take.
struct HyperRange {
  double lower = -std::numeric_limits<double>::infinity(); ///< the lower bound (-inf: none)
  double upper = std::numeric_limits<double>::infinity(); ///< the upper bound (inf: none)
  bool lowerOpen = false; ///< ( rather than [
  bool upperOpen = false; ///< ) rather than ]

  /// Whether `value` lies in the range.
  bool contains(double value) const {
    bool aboveLower = lowerOpen ? value > lower : value >= lower;
    bool belowUpper = upperOpen ? value < upper : value <= upper;
    return aboveLower && belowUpper;
  }

  /// "[0, 1)", "[0, inf)": the form a rule writes it in.
  std::string str() const {
    return std::string(lowerOpen ? "(" : "[") + format(lower) + ", " + format(upper) + (upperOpen ? ")" : "]");
  }

  /// The shortest decimal that reads back as v; inf and -inf as words.
  static std::string format(double v) {
    if (std::isinf(v))
      return v < 0 ? "-inf" : "inf";
    char text[32];
    for (int digits = 1; digits <= 17; ++digits) {
      std::snprintf(text, sizeof text, "%.*g", digits, v);
      if (std::strtod(text, nullptr) == v)
        break;
    }
    return text;
  }
};

} // namespace optrt
