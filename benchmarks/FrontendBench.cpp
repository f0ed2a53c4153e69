// Front-end speed: parse + check of the whole rule library, from text in
// memory (file reading excluded). Target: well under 50 ms.
#include "optdsl/Sema.h"

#include <benchmark/benchmark.h>

#include <filesystem>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <vector>

namespace {

std::vector<optdsl::SourceFile> ruleLibrary() {
  std::vector<optdsl::SourceFile> files;
  for (const auto &entry : std::filesystem::directory_iterator(OPTDSL_DSL_DIR))
    if (entry.path().extension() == ".opt")
      files.push_back(optdsl::SourceFile::load(entry.path().string()));
  if (files.empty())
    throw std::runtime_error("no .opt files in " OPTDSL_DSL_DIR);
  return files;
}

void BM_ParseCheckRuleLibrary(benchmark::State &state) {
  std::vector<optdsl::SourceFile> files = ruleLibrary();
  for (auto _ : state) {
    for (const optdsl::SourceFile &file : files) {
      std::ostringstream diagnostics;
      auto rule = optdsl::compileSource(std::make_shared<const optdsl::SourceFile>(file), diagnostics);
      if (!rule)
        state.SkipWithError(("rule library has errors: " + diagnostics.str()).c_str());
      benchmark::DoNotOptimize(rule);
    }
  }
  state.counters["rules"] = static_cast<double>(files.size());
}
BENCHMARK(BM_ParseCheckRuleLibrary)->Unit(benchmark::kMicrosecond);

} // namespace
