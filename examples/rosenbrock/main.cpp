// rosenbrock: the AdEMAMix paper's toy through the OptDSL runtime. Adam and
// AdEMAMix (the library's rules, compiled at build time) descend the
// Rosenbrock function from (-3, 5); the program prints how fast each gets
// near the minimum and draws the trajectories and the distance to it.
#include "Descent.h"
#include "Gnuplot.h"
#include "Plot.h"

#include "optrt/Artifact.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>

#if !defined(ROSENBROCK_ADAM_SO) || !defined(ROSENBROCK_ADEMAMIX_SO)
#error "ROSENBROCK_ADAM_SO and ROSENBROCK_ADEMAMIX_SO must name the rules' artifacts"
#endif

namespace {

const char *const kUsage = R"(usage: rosenbrock [--steps N] [--lr LR] [--ademamix-lr LR] [--plot FILE]

Adam and AdEMAMix (dsl/adam.opt, dsl/ademamix.opt) descend the Rosenbrock
function f(x, y) = (1 - x)^2 + 100 (y - x^2)^2 from (-3, 5), with the
settings of the AdEMAMix paper's Figure 2 (examples/README.md).
  --steps N     steps per run (default 5000)
  --lr LR       Adam's learning rate (default 0.1)
  --ademamix-lr LR
                AdEMAMix's learning rate (default: the same as Adam's)
  --plot FILE   the pictures: FILE.svg and FILE.png (default rosenbrock)
)";

std::string number(double value) {
  char text[32];
  std::snprintf(text, sizeof text, "%g", value);
  return text;
}

int usageError(const std::string &message) {
  std::cerr << "rosenbrock: error: " << message << "\n(rosenbrock --help lists the options)\n";
  return 2;
}

} // namespace

int main(int argc, char **argv) {
  int steps = 5000;
  double lr = 0.1, ademamixLr = 0; // 0: the same as Adam's
  std::string plot = "rosenbrock";
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::cout << kUsage;
      return 0;
    }
    if (i + 1 == argc)
      return usageError(arg == "--steps" || arg == "--lr" || arg == "--ademamix-lr" || arg == "--plot" ? arg + " needs a value" : "unknown option '" + arg + "'");
    std::string value = argv[++i];
    if (arg == "--steps") {
      char *end = nullptr;
      long parsed = std::strtol(value.c_str(), &end, 10);
      if (value.empty() || *end || parsed < 1 || parsed > 10'000'000)
        return usageError("--steps expects an integer in [1, 10000000], got '" + value + "'");
      steps = static_cast<int>(parsed);
    } else if (arg == "--lr" || arg == "--ademamix-lr") {
      char *end = nullptr;
      double parsed = std::strtod(value.c_str(), &end);
      if (value.empty() || *end || !(parsed > 0) || !std::isfinite(parsed))
        return usageError(arg + " expects a finite positive number, got '" + value + "'");
      (arg == "--lr" ? lr : ademamixLr) = parsed;
    } else if (arg == "--plot") {
      plot = value;
    } else {
      return usageError("unknown option '" + arg + "'");
    }
  }

  try {
    auto adam = optrt::loadArtifact(ROSENBROCK_ADAM_SO);
    auto ademamix = optrt::loadArtifact(ROSENBROCK_ADEMAMIX_SO);
    rosenbrock::Function function;
    const std::array<double, 2> start{-3, 5};
    // The paper's Figure 2: Adam with beta2 = 0.999 and three beta1;
    // AdEMAMix with (beta1, beta2, alpha) = (0.9, 0.999, 9) and two beta3.
    // The paper lowers AdEMAMix's lr "to compensate for the influence of
    // alpha" without saying by how much; here both have the same lr, and
    // --ademamix-lr changes it (examples/README.md has a sweep of both).
    // No warm-ups and no schedule: the paper names none for the toy.
    if (ademamixLr == 0)
      ademamixLr = lr;
    const double alpha = 9;
    std::vector<rosenbrock::Trajectory> runs;
    for (double beta1 : {0.9, 0.99, 0.999})
      runs.push_back(rosenbrock::descend("Adam beta1=" + number(beta1), adam,
                                         {{"lr", lr}, {"beta1", beta1}, {"beta2", 0.999}}, function, start, steps));
    for (double beta3 : {0.999, 0.9999})
      runs.push_back(rosenbrock::descend(
          "AdEMAMix beta3=" + number(beta3), ademamix,
          {{"lr", ademamixLr}, {"beta1", 0.9}, {"beta2", 0.999}, {"beta3", beta3}, {"alpha", alpha}}, function,
          start, steps));

    std::printf("Rosenbrock from (%g, %g), %d steps, Adam lr %g, AdEMAMix lr %g (alpha %g)\n\n", start[0], start[1],
                steps, lr, ademamixLr, alpha);
    std::printf("%-22s %12s %15s %15s %15s\n", "run", "final f", "final distance", "first within", "settled within");
    std::printf("%-22s %12s %15s %15s %15s\n", "", "", "to (1, 1)", "0.01 of it", "0.01 of it");
    for (const auto &run : runs) {
      auto [x, y] = run.points.back();
      auto step = [](int found) { return found < 0 ? std::string("not yet") : "step " + std::to_string(found); };
      std::printf("%-22s %12.3e %15.3e %15s %15s\n", run.label.c_str(), run.values.back(),
                  std::hypot(x - function.a, y - function.a * function.a),
                  step(rosenbrock::firstWithin(run, function, 0.01)).c_str(),
                  step(rosenbrock::settledWithin(run, function, 0.01)).c_str());
    }
    std::string stem = examples::plotStem(plot);
    rosenbrock::drawDescents(runs, function, stem);
    std::printf("\ntrajectories and distances: %s.svg and %s.png\n", stem.c_str(), stem.c_str());
  } catch (const std::exception &e) {
    std::cerr << "rosenbrock: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
