// optdsl-golden: runs golden trajectories from real peer implementations
// (torch.optim, the AdEMAMix reference) through our rules and reports, per
// case and backend, the error against the peer and the limit it must meet.
#include "GoldenCase.h"
#include "GoldenCuda.h"

#include "optdsl/Interpreter.h"
#include "optdsl/JIT.h"
#include "optrt/CudaError.h"
#include "optrt/Optimizer.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <map>
#include <string>
#include <vector>

namespace {

const char *kUsage = R"(usage: optdsl-golden [--backend interp|cpu|cuda|all] [--dsl DIR] CASE.json...

Runs each golden case on the rule dsl/<rule>.opt and compares the parameters
after every step with the peer's. Exits 1 if any case fails.

options:
  --backend NAME  interp  the float64 reference interpreter (the default; limit 1e-9)
                  cpu     the rule JIT-compiled to f32 CPU kernels, run by the
                          runtime (limit max(4 x the peer's own f32 error, 1e-6))
                  cuda    the rule compiled to f32 CUDA kernels, run by
                          optrt::CudaOptimizer on GPU 0 (same limit as cpu);
                          without a GPU every case prints SKIP and the exit
                          status is 77, as for a case the CUDA optimizer
                          cannot run yet (group-wide reductions, inputs,
                          fused clipping); every hyper is fixed at the
                          case's value when the kernels are built
                  all     interp and cpu
  --dsl DIR       where the rule files are (default: the source tree's dsl/)
)";

/// The gradients the rule sees at step t, in float64: the case's, clipped as
/// torch.nn.utils.clip_grad_norm_ when the case asks for it (the reference
/// for the runtime's fused clipping).
std::vector<std::vector<double>> referenceGrads(const optdsl::GoldenCase &golden, size_t t) {
  std::vector<std::vector<double>> grads = golden.grads[t];
  if (!golden.maxGradNorm)
    return grads;
  double sumOfSquares = 0;
  for (const auto &grad : grads)
    for (double g : grad)
      sumOfSquares += g * g;
  double coefficient = std::min(1.0, *golden.maxGradNorm / (std::sqrt(sumOfSquares) + 1e-6));
  for (auto &grad : grads)
    for (double &g : grad)
      g *= coefficient;
  return grads;
}

/// The case's inputs at step t by the rule's input slot (not given: none).
optdsl::StepInputs referenceInputs(const optdsl::GoldenCase &golden, const optdsl::CheckedRule &rule, size_t t) {
  optdsl::StepInputs inputs(rule.inputs.size());
  for (const auto &[name, perStep] : golden.inputs) {
    int slot = rule.inputSlot(name);
    if (slot < 0)
      throw std::runtime_error("case '" + golden.name + "' gives input '" + name + "', which rule '" + rule.name() +
                               "' does not declare");
    if (perStep[t])
      inputs[slot] = *perStep[t];
  }
  return inputs;
}

optdsl::Trajectory runOnInterpreter(const optdsl::GoldenCase &golden,
                                    const optdsl::CheckedRule &rule) {
  optdsl::Interpreter interpreter(rule);
  optdsl::HyperValues hypers = interpreter.defaultHypers();
  for (const auto &[name, value] : golden.hypers)
    interpreter.setHyper(hypers, name, value);
  std::vector<optdsl::TensorState> tensors;
  for (size_t k = 0; k < golden.init.size(); ++k)
    tensors.push_back(interpreter.initTensor(
        golden.init[k], hypers,
        golden.shapes.empty() ? std::vector<int64_t>{}
                              : std::vector<int64_t>(golden.shapes[k].begin(), golden.shapes[k].end())));
  optdsl::Trajectory trajectory;
  for (size_t t = 0; t < golden.steps; ++t) {
    interpreter.step(tensors, referenceGrads(golden, t), static_cast<int64_t>(t + 1), hypers,
                     referenceInputs(golden, rule, t));
    auto &after = trajectory.emplace_back();
    for (const auto &tensor : tensors)
      after.push_back(tensor.param);
  }
  return trajectory;
}

optdsl::Trajectory runOnCpu(const optdsl::GoldenCase &golden, const optdsl::CheckedRule &rule) {
  optrt::Optimizer optimizer(optdsl::jitCompile(rule));
  std::vector<std::vector<float>> params;
  for (const auto &init : golden.init)
    params.emplace_back(init.begin(), init.end());
  std::vector<float *> pointers;
  for (auto &param : params)
    pointers.push_back(param.data());
  optimizer.addGroup(pointers, golden.sizes,
                     std::map<std::string, double>(golden.hypers.begin(), golden.hypers.end()), golden.shapes);
  optdsl::Trajectory trajectory;
  std::vector<std::vector<float>> grads(golden.sizes.size());
  for (size_t t = 0; t < golden.steps; ++t) {
    std::vector<const float *> gradPointers;
    for (size_t k = 0; k < grads.size(); ++k) {
      grads[k].assign(golden.grads[t][k].begin(), golden.grads[t][k].end());
      gradPointers.push_back(grads[k].data());
    }
    optrt::StepOptions options;
    options.maxGradNorm = golden.maxGradNorm;
    optdsl::StepInputs values = referenceInputs(golden, rule, t);
    std::vector<std::vector<std::vector<float>>> inputs(values.size());
    for (size_t slot = 0; slot < values.size(); ++slot) {
      if (values[slot].empty())
        continue;
      std::vector<const void *> &perTensor =
          options.inputs.emplace_back(optrt::StepInput{rule.symbol(rule.inputs[slot]).name, {{}}}).perGroup[0];
      for (const std::vector<double> &tensor : values[slot])
        perTensor.push_back(inputs[slot].emplace_back(tensor.begin(), tensor.end()).data());
    }
    optimizer.step({gradPointers}, options);
    auto &after = trajectory.emplace_back();
    for (const auto &param : params)
      after.emplace_back(param.begin(), param.end());
  }
  return trajectory;
}

} // namespace

int main(int argc, char **argv) {
  std::string backend = "interp", dslDir = OPTDSL_DSL_DIR;
  std::vector<std::string> cases;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::cout << kUsage;
      return 0;
    }
    if ((arg == "--backend" || arg == "--dsl") && i + 1 < argc) {
      (arg == "--backend" ? backend : dslDir) = argv[++i];
    } else if (arg.size() > 1 && arg[0] == '-') {
      std::cerr << "optdsl-golden: error: unknown or incomplete option '" << arg << "'\n" << kUsage;
      return 2;
    } else {
      cases.push_back(arg);
    }
  }
  std::vector<std::string> backends;
  if (backend == "all")
    backends = {"interp", "cpu"};
  else if (backend == "interp" || backend == "cpu" || backend == "cuda")
    backends = {backend};
  else {
    std::cerr << "optdsl-golden: error: unknown backend '" << backend
              << "' (available: interp, cpu, cuda, all)\n";
    return 2;
  }
  if (cases.empty()) {
    std::cerr << "optdsl-golden: error: no golden case given\n" << kUsage;
    return 2;
  }

  unsigned failures = 0, skipped = 0;
  for (const std::string &path : cases) {
    for (const std::string &name : backends) {
      try {
        optdsl::GoldenCase golden = optdsl::GoldenCase::load(path);
        optdsl::CheckedRule rule = optdsl::loadRuleFile(dslDir + "/" + golden.rule + ".opt");
        bool float64 = name == "interp";
        optdsl::Trajectory ours = float64          ? runOnInterpreter(golden, rule)
                                  : name == "cuda" ? optdsl::runOnCuda(golden, rule)
                                                   : runOnCpu(golden, rule);
        double error = optdsl::trajectoryError(golden, ours);
        double limit = optdsl::errorLimit(golden, float64);
        bool pass = error <= limit; // false for NaN
        failures += !pass;
        std::printf("%s  %-28s backend=%-7s error=%.3e  limit=%.1e\n", pass ? "PASS" : "FAIL",
                    golden.name.c_str(), name.c_str(), error, limit);
      } catch (const optdsl::NotOnCudaYet &e) {
        ++skipped;
        std::printf("SKIP  %-28s backend=%-7s %s\n", path.c_str(), name.c_str(), e.what());
      } catch (const optrt::CudaError &e) {
        // No GPU here: not a pass, not a failure of the rule.
        bool noGpu = e.code() == optrt::CudaErrc::NoDriver || e.code() == optrt::CudaErrc::NoDevice;
        (noGpu ? skipped : failures) += 1;
        std::printf("%s  %-28s backend=%-7s %s\n", noGpu ? "SKIP" : "FAIL", path.c_str(), name.c_str(), e.what());
      } catch (const std::exception &e) {
        ++failures;
        std::printf("FAIL  %-28s backend=%-7s %s\n", path.c_str(), name.c_str(), e.what());
      }
    }
  }
  if (failures)
    return 1;
  return skipped ? 77 : 0;
}
