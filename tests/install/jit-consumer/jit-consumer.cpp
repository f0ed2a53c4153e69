// Compiles the installed AdamW rule in-process and takes one step with loss
// scaling; exit status 0 when the step ran and moved every parameter.
#include "optdsl/JIT.h"
#include "optrt/Optimizer.h"

#include <cstdio>
#include <vector>

int main() {
  auto rule = optdsl::jitCompileFile(ADAMW_OPT, {{"amsgrad", 0.0}}, {"f32"});
  std::vector<float> params(300, 1.0f), grads(300, 1024.0f * 0.5f);
  optrt::Optimizer optimizer(rule, {.threads = 1});
  optimizer.addGroup({params.data()}, {params.size()}, {{"lr", 0.1}, {"weight_decay", 0.0}});
  optrt::StepOptions options;
  options.lossScale = 1024;
  optrt::StepResult result = optimizer.step({{grads.data()}}, options);
  // Adam's first step moves every element by lr (times 1 - tiny eps terms).
  for (float p : params)
    if (result.skipped || !(p > 0.899f && p < 0.901f)) {
      std::printf("jit-consumer: wrong step (param %g, skipped %d)\n", p, result.skipped);
      return 1;
    }
  std::printf("jit-consumer: ok, grad norm %g\n", result.gradNorm);
  return 0;
}
