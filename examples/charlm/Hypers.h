// Which hyper values each rule of a run trains with.
#pragma once

#include "Options.h"
#include "RuleSource.h"

#include <map>
#include <string>
#include <vector>

namespace charlm {

/// The trainer's own settings for a built-in rule (empty for other rules,
/// which run with their file's defaults): values suited to a short run of
/// `steps` steps, explained in examples/README.md.
std::map<std::string, double> runDefaults(const LoadedRule &rule, int steps);

/// Per rule: runDefaults, then the command line's settings in order. Throws
/// UsageError for a RULE: prefix that names no rule of the run, a NAME that
/// no rule of the run has (the message lists each rule's hypers), or a new
/// value for a hyper fixed when the rule was compiled.
std::vector<std::map<std::string, double>> resolveHypers(const std::vector<LoadedRule> &rules,
                                                         const std::vector<HyperSetting> &settings, int steps);

} // namespace charlm
