// A rule written in a test, checked as a file of that name would be; the
// diagnostics are the exception's message when it has errors.
#pragma once

#include "optdsl/Sema.h"
#include "optdsl/Source.h"

#include <memory>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>

namespace optdsl::test {

inline CheckedRule checkedText(const std::string &text, const std::string &fileName = "test.opt") {
  auto file = std::make_shared<const SourceFile>(fileName, text);
  std::ostringstream diagnostics;
  std::optional<CheckedRule> rule = compileSource(file, diagnostics);
  if (!rule)
    throw std::runtime_error(diagnostics.str());
  return std::move(*rule);
}

} // namespace optdsl::test
