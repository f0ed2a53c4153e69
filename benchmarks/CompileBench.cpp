// Compile latency: a rule file to callable kernels in process (the JIT), and
// to a kernel artifact by the optc process a build runs (parse, check, MLIR,
// LLVM O2 for the JIT, O3 for an artifact, object, link with cc), start-up of libMLIR/libLLVM included.
#include "optdsl/JIT.h"
#include "optdsl/Sema.h"

#include <benchmark/benchmark.h>

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

extern char **environ;

namespace {

std::string rulePath(const std::string &rule) { return std::string(OPTDSL_DSL_DIR) + "/" + rule + ".opt"; }

/// The JIT of one rule for one layout (a q8 layout brings its small-tensor
/// fallback's kernels along, as the runtime needs them).
void BM_JitCompile(benchmark::State &state, const std::string &rule, const std::string &layout) {
  for (auto _ : state)
    benchmark::DoNotOptimize(optdsl::jitCompileFile(rulePath(rule), {}, {layout}));
}

void BM_OptcToSo(benchmark::State &state, const std::string &rule) {
  std::string output = "/tmp/optdsl-bench-" + std::to_string(getpid()) + "-libopt_" + rule + ".so";
  std::vector<std::string> args = {OPTDSL_OPTC, rulePath(rule), "--emit=so", "-o", output};
  std::vector<char *> argv;
  for (std::string &arg : args)
    argv.push_back(arg.data());
  argv.push_back(nullptr);
  for (auto _ : state) {
    pid_t pid;
    int status = 0;
    if (posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ) != 0 ||
        waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      state.SkipWithError("optc failed");
      break;
    }
  }
  unlink(output.c_str());
}

void registerAll() {
  // Every library rule in f32 (the target: under 50 ms each), in name order.
  std::vector<std::string> rules;
  for (const auto &entry : std::filesystem::directory_iterator(OPTDSL_DSL_DIR))
    if (entry.path().extension() == ".opt")
      rules.push_back(entry.path().stem().string());
  std::sort(rules.begin(), rules.end());
  for (const std::string &rule : rules)
    benchmark::RegisterBenchmark(("jit/" + rule).c_str(), BM_JitCompile, rule, "f32")->Unit(benchmark::kMillisecond);
  for (const char *rule : {"adamw", "ademamix"}) {
    for (const char *layout : {"state=q8", "param=bf16,master=f32,state=q8"}) {
      std::string name = "jit/" + std::string(rule) + "/" + std::string(layout);
      benchmark::RegisterBenchmark(name.c_str(), BM_JitCompile, rule, layout)->Unit(benchmark::kMillisecond);
    }
    benchmark::RegisterBenchmark(("optc-so/" + std::string(rule)).c_str(), BM_OptcToSo, rule)
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
  }
}

const bool registered = (registerAll(), true);

} // namespace
