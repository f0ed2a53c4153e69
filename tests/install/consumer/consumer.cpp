// One AdamW step through an installed OptDSL, checked against the update
// written out in double precision. Exit status 0 only when every element
// agrees to f32 rounding.
#include "optrt/Artifact.h"
#include "optrt/Optimizer.h"

#include <cmath>
#include <cstdio>
#include <vector>

int main() {
  auto rule = optrt::loadArtifact(optrt::findArtifact(OPTDSL_RULE_ADAMW));
  const double lr = 1e-2, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, decay = 0.1;
  std::vector<float> params(1000), grads(1000);
  for (size_t i = 0; i < params.size(); ++i) {
    params[i] = std::sin(0.37 * i);
    grads[i] = std::cos(0.11 * i) * 1e-2f;
  }
  std::vector<float> before = params;
  optrt::Optimizer optimizer(rule, {.threads = 2});
  optimizer.addGroup({params.data()}, {params.size()},
                     {{"lr", lr}, {"beta1", beta1}, {"beta2", beta2}, {"eps", eps},
                      {"weight_decay", decay}});
  optimizer.step({{grads.data()}});
  int bad = 0;
  for (size_t i = 0; i < params.size(); ++i) {
    double g = grads[i], m = (1 - beta1) * g, v = (1 - beta2) * g * g;
    double expected = before[i] * (1 - lr * decay) -
                      lr * (m / (1 - beta1)) / (std::sqrt(v / (1 - beta2)) + eps);
    if (std::fabs(params[i] - expected) > 1e-6 * (1 + std::fabs(expected)) && bad++ < 3)
      std::printf("element %zu: %.9g, expected %.9g\n", i, params[i], expected);
  }
  std::printf("%s: %d of %zu elements off; state %.1f bytes/param\n", bad ? "FAIL" : "ok", bad,
              params.size(), optimizer.stateBytesPerParam());
  return bad ? 1 : 0;
}
