// Where the trainer's rules come from; the one place that knows.
//
// The built-in rules (adamw, ademamix) are kernel artifacts that
// optdsl_add_rule compiled from the library's dsl/*.opt files at build time
// (examples/charlm/CMakeLists.txt), loaded with optrt::loadArtifact. Any
// other name is a path to a user's .opt file, compiled in-process (JIT) when
// the trainer starts: write a rule, run it, no rebuild.
#pragma once

#include "optrt/RuleKernels.h"

#include <memory>
#include <string>
#include <vector>

namespace charlm {

struct LoadedRule {
  std::string label;  // the rule's name as declared in its file
  std::string origin; // "built-in" or the file it was compiled from
  std::shared_ptr<const optrt::RuleKernels> kernels;
  std::string layout = "f32"; // the storage layout it runs (optrt/Layout.h)

  /// The run's name in tables and plots: the rule, and its layout unless f32.
  std::string runName() const { return layout == "f32" ? label : label + " " + layout; }
};

/// The names loadRule accepts without a path.
const std::vector<std::string> &builtinRules();

/// The layouts the built-in rules' artifacts were compiled for: those that
/// keep params and grads in f32 (the model computes on them).
const std::vector<std::string> &builtinLayouts();

/// spec: a built-in rule's name or a path to a .opt file, whose kernels
/// are compiled for `layouts` (canonical written forms; a built-in rule
/// has builtinLayouts()). Throws std::runtime_error when the file cannot be
/// read, or carrying the compiler's diagnostics (file:line:col: error: ...)
/// when it has errors, std::invalid_argument for a layout the rule cannot
/// take.
LoadedRule loadRule(const std::string &spec, const std::vector<std::string> &layouts = {"f32"});

} // namespace charlm
