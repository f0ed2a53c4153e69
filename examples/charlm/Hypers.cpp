#include "Hypers.h"

#include "optrt/Spelling.h"

#include <cmath>
#include <cstdio>
#include <sstream>

namespace charlm {
namespace {

const optrt::HyperInfo *findHyper(const LoadedRule &rule, const std::string &name) {
  for (const auto &hyper : rule.kernels->hypers)
    if (hyper.name == name)
      return &hyper;
  return nullptr;
}

std::vector<std::string> userHyperNames(const LoadedRule &rule) {
  std::vector<std::string> names;
  for (const auto &hyper : rule.kernels->hypers)
    if (!optrt::isStepHyper(hyper.name))
      names.push_back(hyper.name);
  return names;
}

std::string hyperList(const std::vector<LoadedRule> &rules) {
  std::ostringstream list;
  for (size_t r = 0; r < rules.size(); ++r) {
    list << (r ? "; " : "") << rules[r].label << " has";
    for (const std::string &name : userHyperNames(rules[r]))
      list << " " << name;
  }
  return list.str();
}

std::string formatValue(double value) {
  char text[32];
  std::snprintf(text, sizeof text, "%g", value);
  return text;
}

} // namespace

std::map<std::string, double> runDefaults(const LoadedRule &rule, int steps) {
  // Shared by every rule so that a comparison is of the update alone: the
  // same peak lr (then the schedule), the same second moment and the same
  // decoupled weight decay on the weight matrices. beta2 = 0.99 rather
  // than 0.999: in a run of a few thousand steps a 1000-step average of g^2
  // lags. lr 3e-3: the best AdamW peak of 2e-3, 3e-3, 5e-3 for the demo.
  //
  // AdEMAMix's as its paper advises for a run of this length: alpha and
  // beta3 warmed up over the whole run (T_alpha = T_beta3 = T), beta3 =
  // 0.999 rather than 0.9999 ("smaller values of beta3 can be better for
  // low iterations scenarios"; 0.9999 diverges here), alpha = 5 (the paper's
  // range is 4-10). Its peak lr is its own best, as AdamW's is: 1e-3 of
  // 1e-3, 2e-3, 3e-3 (the slow EMA adds up to alpha times Adam's step; the
  // paper lowers the lr in its toy for the same reason). examples/README.md
  // has the sweeps.
  std::map<std::string, double> trainer{{"lr", 3e-3},    {"beta2", 0.99}, {"weight_decay", 0.1},
                                        {"beta3", 0.999}, {"alpha", 5},
                                        {"alpha_warmup", steps}, {"beta3_warmup", steps}};
  if (rule.label == "ademamix")
    trainer["lr"] = 1e-3;
  std::map<std::string, double> values;
  for (const auto &[name, value] : trainer) {
    const optrt::HyperInfo *hyper = findHyper(rule, name);
    if (hyper && !hyper->fixed && hyper->range.contains(value))
      values[name] = value;
  }
  return values;
}

std::vector<std::map<std::string, double>> resolveHypers(const std::vector<LoadedRule> &rules,
                                                         const std::vector<HyperSetting> &settings, int steps) {
  std::vector<std::map<std::string, double>> result;
  std::vector<std::string> ruleNames, allHypers;
  for (const LoadedRule &rule : rules) {
    result.push_back(runDefaults(rule, steps));
    ruleNames.push_back(rule.label);
    for (const std::string &name : userHyperNames(rule))
      allHypers.push_back(name);
  }
  for (const HyperSetting &setting : settings) {
    if (!std::isfinite(setting.value))
      throw UsageError("--hyper " + setting.name + ": the value must be finite");
    bool ruleFound = setting.rule.empty(), applied = false;
    std::vector<std::string> candidates = setting.rule.empty() ? allHypers : std::vector<std::string>{};
    for (size_t r = 0; r < rules.size(); ++r) {
      if (!setting.rule.empty() && rules[r].label != setting.rule)
        continue;
      ruleFound = true;
      if (!setting.rule.empty())
        candidates = userHyperNames(rules[r]);
      const optrt::HyperInfo *hyper = findHyper(rules[r], setting.name);
      if (!hyper || optrt::isStepHyper(setting.name))
        continue;
      if (hyper->fixed && setting.value != hyper->defaultValue)
        throw UsageError("--hyper " + setting.name + ": " + rules[r].label + " was compiled with " +
                         setting.name + " fixed to " + formatValue(hyper->defaultValue));
      if (!hyper->range.contains(setting.value))
        throw UsageError("--hyper " + setting.name + ": " + rules[r].label + " allows " + setting.name + " in " +
                         hyper->range.str() + " only");
      result[r][setting.name] = setting.value;
      applied = true;
    }
    if (!ruleFound) {
      std::string names;
      for (const std::string &name : ruleNames)
        names += (names.empty() ? "" : ", ") + name;
      throw UsageError("--hyper " + setting.rule + ":" + setting.name + ": no rule named '" + setting.rule +
                       "' in this run" + optrt::didYouMean(setting.rule, ruleNames) + " (rules: " + names + ")");
    }
    if (!applied)
      throw UsageError("unknown hyper '" + setting.name + "'" +
                       (setting.rule.empty() ? std::string() : " for " + setting.rule) +
                       optrt::didYouMean(setting.name, candidates) + " (" + hyperList(rules) + ")");
  }
  return result;
}

std::string describeHypers(const LoadedRule &rule, const std::map<std::string, double> &settings) {
  std::string text;
  for (const auto &hyper : rule.kernels->hypers) {
    if (optrt::isStepHyper(hyper.name))
      continue;
    auto set = settings.find(hyper.name);
    text += (text.empty() ? "" : " ") + hyper.name + "=" +
            formatValue(set != settings.end() ? set->second : hyper.defaultValue) + (hyper.fixed ? "(fixed)" : "");
  }
  return text;
}

} // namespace charlm
