// libFuzzer target of the front end that `optc FILE` runs: parse, check
// and, for a rule that checks, one interpreter step on a small tensor.
// Built with clang's -fsanitize=fuzzer,address,undefined by ./dev.sh test
// (build-fuzz/, tests/fuzz/run.sh). Whatever the bytes, compileSource must
// return normally: a rule, or diagnostics each with the clang shape
// (`fuzz.opt:line:col: error: ...`); anything else (a crash, an exception,
// a sanitizer report, a time-out) is a finding, saved under
// tests/fuzz/regressions/ and replayed by every later run.
#include "optdsl/Interpreter.h"
#include "optdsl/Sema.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>

namespace {

void require(bool condition, const char *what, const std::string &detail) {
  if (condition)
    return;
  std::fprintf(stderr, "optc-fuzz: %s\n%s\n", what, detail.c_str());
  std::abort();
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::string text(reinterpret_cast<const char *>(data), size);
  std::ostringstream diagnostics;
  auto rule = optdsl::compileSource(std::make_shared<optdsl::SourceFile>("fuzz.opt", text), diagnostics);
  std::string rendered = diagnostics.str();
  if (!rule) {
    require(rendered.find("error: ") != std::string::npos, "refused without an error", rendered);
    // The first diagnostic is the rule's own, or one in a transform it applies.
    require(rendered.rfind("fuzz.opt:", 0) == 0 || rendered.substr(0, rendered.find(':')).find("/transforms/") !=
                                                        std::string::npos,
            "a diagnostic without its location", rendered);
    return 0;
  }
  // The interpreter on what sema accepted: it must not misbehave either
  // (NaNs and infinities are fine results; undefined behaviour is not).
  optdsl::Interpreter interpreter(*rule);
  optdsl::HyperValues hypers = interpreter.defaultHypers();
  // A 2 x 3 matrix, so that rows and columns differ (`state v[rows];`, row_mean).
  std::vector<optdsl::TensorState> tensors{interpreter.initTensor({0.5, -1.0, 2.0, 0.0, 1.0, -0.5}, hypers, {2, 3})};
  // Every input given (a rule that never tests given() needs them).
  optdsl::StepInputs inputs(rule->inputs.size(), {{1.5, -0.5, 0.0, 2.0, -1.0, 0.5}});
  interpreter.step(tensors, {{0.25, 0.0, -3.0, 1.0, -0.5, 2.0}}, 1, hypers, inputs);
  return 0;
}
