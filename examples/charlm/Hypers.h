// Which hyper values each rule of a run trains with.
#pragma once

#include "Options.h"
#include "RuleSource.h"

#include <map>
#include <string>
#include <vector>

namespace charlm {

/// The trainer's settings, for every rule that declares a hyper of that
/// name, built-in or from a file: values suited to a run of `steps` steps,
/// explained in examples/README.md (the shared lr, beta2 and weight decay;
/// AdEMAMix's beta3, alpha and their warm-ups over the whole run).
std::map<std::string, double> runDefaults(const LoadedRule &rule, int steps);

/// Per rule: runDefaults, then the command line's settings in order. Throws
/// UsageError for a RULE: prefix that names no rule of the run, a NAME that
/// no rule of the run has (the message suggests the closest name and lists
/// each rule's hypers), or a new value for a hyper fixed when the rule was
/// compiled.
std::vector<std::map<std::string, double>> resolveHypers(const std::vector<LoadedRule> &rules,
                                                         const std::vector<HyperSetting> &settings, int steps);

/// Every hyper a user can set on `rule` (the step's grad_scale and grad_clip
/// left out) with the value it trains with: `settings` where given, else the
/// rule's own default; "(fixed)" after a hyper fixed at compile time.
std::string describeHypers(const LoadedRule &rule, const std::map<std::string, double> &settings);

} // namespace charlm
