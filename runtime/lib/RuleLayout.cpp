#include "RuleLayout.h"

#include "optrt/LayoutCheck.h"
#include "optrt/Spelling.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <set>
#include <stdexcept>

namespace optrt {

namespace {

[[noreturn]] void fail(const RuleKernels &rule, const std::string &problem) {
  throw std::invalid_argument("optrt::Optimizer: RuleKernels '" + rule.name + "': " + problem);
}

// The names a user can give values to: the step hypers (grad_scale,
// grad_clip) are the step's own and left out.
template <typename Info> std::vector<std::string> userNames(const std::vector<Info> &infos) {
  std::vector<std::string> names;
  for (const Info &info : infos)
    if (!isStepHyper(info.name))
      names.push_back(info.name);
  return names;
}

template <typename Info> std::string nameList(const std::vector<Info> &infos) {
  std::string list;
  for (const std::string &name : userNames(infos))
    list += (list.empty() ? "" : ", ") + name;
  return list;
}

// Shortest text that reads back as the same double: "0.1", not "0.100000".
std::string formatNumber(double value) {
  char text[32];
  auto result = std::to_chars(text, text + sizeof(text), value);
  return std::string(text, result.ptr);
}

void checkPhaseTable(const RuleKernels &rule, const char *field, size_t length) {
  if (length != static_cast<size_t>(rule.numPhases))
    fail(rule, std::string(field) + " has " + std::to_string(length) +
                   " entries but numPhases is " + std::to_string(rule.numPhases));
}

} // namespace

RuleLayout::RuleLayout(std::shared_ptr<const RuleKernels> kernels, const std::string &layout)
    : kernels_(std::move(kernels)) {
  if (!kernels_)
    throw std::invalid_argument("optrt::Optimizer: RuleKernels is null");
  const RuleKernels &rule = *kernels_;
  if (rule.numPhases < 1)
    fail(rule, "numPhases is " + std::to_string(rule.numPhases) + ", must be at least 1");
  checkPhaseTable(rule, "numUniforms", rule.numUniforms.size());
  checkPhaseTable(rule, "uniforms", rule.uniforms.size());
  if (!rule.init)
    fail(rule, "init is null");
  for (int p = 0; p < rule.numPhases; ++p) {
    if (rule.numUniforms[p] < 0)
      fail(rule, "numUniforms[" + std::to_string(p) + "] is negative");
    if (!rule.uniforms[p])
      fail(rule, "uniforms[" + std::to_string(p) + "] is null");
    maxUniforms_ = std::max(maxUniforms_, static_cast<size_t>(rule.numUniforms[p]));
  }

  std::set<std::string> hyperNames;
  for (const HyperInfo &hyper : rule.hypers) {
    if (!hyperNames.insert(hyper.name).second)
      fail(rule, "hyper '" + hyper.name + "' is declared twice");
    if (!std::isfinite(hyper.defaultValue))
      fail(rule, "hyper '" + hyper.name + "' has a non-finite default");
    if (!hyper.range.contains(hyper.defaultValue))
      fail(rule, "hyper '" + hyper.name + "' has the default " + formatNumber(hyper.defaultValue) +
                     " outside its range " + hyper.range.str());
  }
  std::set<std::string> stateNames;
  for (const StateInfo &state : rule.states) {
    if (!stateNames.insert(state.name).second)
      fail(rule, "state '" + state.name + "' is declared twice");
    stateSlots_.push_back({state.scalar, state.scalar ? numScalar_++ : numElementwise_++});
  }
  if (numScalar_ > 0 && !rule.scalarUpdate)
    fail(rule, "scalarUpdate is null but the rule has scalar states");

  // Phases' reductions must be contiguous and ascending: a kernel's partials
  // array is the slice of its own phase.
  phaseReductions_.assign(rule.numPhases + 1, 0);
  int lastPhase = 0;
  for (size_t r = 0; r < rule.reductions.size(); ++r) {
    int phase = rule.reductions[r].phase;
    if (phase < 0 || phase >= rule.numPhases)
      fail(rule, "reduction " + std::to_string(r) + " is in phase " + std::to_string(phase) +
                     ", outside 0.." + std::to_string(rule.numPhases - 1));
    if (phase < lastPhase)
      fail(rule, "reduction " + std::to_string(r) + " (phase " + std::to_string(phase) +
                     ") follows one of phase " + std::to_string(lastPhase) +
                     "; reductions must be grouped by phase, ascending");
    lastPhase = phase;
    ++phaseReductions_[phase + 1];
  }
  for (int p = 0; p < rule.numPhases; ++p) {
    maxReductionsPerPhase_ = std::max(maxReductionsPerPhase_, phaseReductions_[p + 1]);
    phaseReductions_[p + 1] += phaseReductions_[p];
  }
  checkMatrixTables();
  selectLayout(layout);
}

void RuleLayout::checkMatrixTables() {
  const RuleKernels &rule = *kernels_;
  readsMatrices_ = optrt::readsMatrices(rule.states);
  if (!rule.phaseDomains.empty())
    checkPhaseTable(rule, "phaseDomains", rule.phaseDomains.size());
  columnSums_.assign(rule.numPhases, {});
  rowSums_.assign(rule.numPhases, {});
  for (int p = 0; p < rule.numPhases; ++p)
    if (domain(p) != PhaseDomain::Elements) {
      if (!readsMatrices_)
        fail(rule, "phase " + std::to_string(p) + " runs over rows or columns, but no state spans them");
    }
  for (size_t a = 0; a < rule.axisReductions.size(); ++a) {
    const AxisReductionInfo &info = rule.axisReductions[a];
    std::string what = "axis reduction " + std::to_string(a);
    if (info.phase < 0 || info.phase >= rule.numPhases)
      fail(rule, what + " is in phase " + std::to_string(info.phase) + ", outside 0.." +
                     std::to_string(rule.numPhases - 1));
    if (info.state < 0 || static_cast<size_t>(info.state) >= rule.states.size() ||
        !rule.states[info.state].scratch || rule.states[info.state].span == StateSpan::Elements)
      fail(rule, what + " does not reduce into a scratch state spanning rows, columns or matrices");
    if (domain(info.phase) == PhaseDomain::Elements)
      (info.alongRows ? rowSums_ : columnSums_)[info.phase].push_back(a);
  }
  if (!rule.columnSlots.empty())
    checkPhaseTable(rule, "columnSlots", rule.columnSlots.size());
  columnSlots_.assign(rule.numPhases, 0);
  for (int p = 0; p < rule.numPhases; ++p) {
    int slots = rule.columnSlots.empty() ? 0 : rule.columnSlots[p];
    if (slots < 0 || static_cast<size_t>(slots) < columnSums_[p].size() ||
        (slots > 0 && (!readsMatrices_ || domain(p) != PhaseDomain::Elements)))
      fail(rule, "phase " + std::to_string(p) + " takes " + std::to_string(slots) + " column scratch slots for " +
                     std::to_string(columnSums_[p].size()) + " column sums");
    columnSlots_[p] = static_cast<size_t>(slots);
    maxColumnSlots_ = std::max(maxColumnSlots_, columnSlots_[p]);
  }
}

const LayoutKernels &RuleLayout::findLayout(const std::string &wanted, const std::string &why) const {
  const RuleKernels &rule = *kernels_;
  std::string compiled;
  for (const LayoutKernels &candidate : rule.layouts) {
    compiled += (compiled.empty() ? "" : "; ") + candidate.name;
    if (candidate.name == wanted)
      return candidate;
  }
  throw std::invalid_argument(
      "optrt::Optimizer: rule '" + rule.name + "' was not compiled for layout '" + wanted + "'" + why +
      (compiled.empty() ? "; it has no layouts" : "; its layouts are: " + compiled));
}

void RuleLayout::checkKernels(const LayoutKernels &chosen, const Layout &parsed) const {
  const RuleKernels &rule = *kernels_;
  checkPhaseTable(rule, ("layout " + chosen.name + ": kernels").c_str(), chosen.kernels.size());
  for (int p = 0; p < rule.numPhases; ++p)
    if (!chosen.kernels[p])
      fail(rule, "layout " + chosen.name + ": kernels[" + std::to_string(p) + "] is null");
  // The buffers must be the ones this runtime allocates, in its order, or the
  // kernels would be handed the wrong pointers.
  if (!buffersMatch(chosen.buffers, parsed, rule.states, rule.inputs.size()))
    fail(rule, "layout " + chosen.name +
                   ": its buffers are not in the order this runtime passes them (param, grad, "
                   "master, elementwise states, q8 absmax with blocks of 256, inputs)");
}

void RuleLayout::selectLayout(const std::string &text) {
  const RuleKernels &rule = *kernels_;
  parsed_ = Layout::parse(text);
  validateLayout(parsed_, rule.states, "rule '" + rule.name + "'");
  layout_ = &findLayout(parsed_.str(), "");
  checkKernels(*layout_, parsed_);
  if (hasQ8States(parsed_, rule.states)) {
    Layout small = smallTensorLayout(parsed_);
    fallback_ = &findLayout(small.str(), " (the small-tensor fallback of '" + parsed_.str() +
                                             "': its q8 states in f32)");
    checkKernels(*fallback_, small);
  }
}

size_t RuleLayout::stateIndex(const std::string &name) const {
  const std::vector<StateInfo> &states = kernels_->states;
  for (size_t i = 0; i < states.size(); ++i)
    if (states[i].name == name)
      return i;
  return states.size();
}

size_t RuleLayout::hyperIndex(const std::string &name, const char *caller) const {
  const std::vector<HyperInfo> &hypers = kernels_->hypers;
  for (size_t i = 0; i < hypers.size(); ++i)
    if (hypers[i].name == name)
      return i;
  throw std::invalid_argument(
      std::string(caller) + ": unknown hyper '" + name + "' of rule '" + kernels_->name + "'" +
      didYouMean(name, userNames(hypers)) + "; " +
      (nameList(hypers).empty() ? "it has no hypers" : "its hypers are: " + nameList(hypers)));
}

void RuleLayout::checkHyperValue(size_t index, double value, const char *caller) const {
  const HyperInfo &hyper = kernels_->hypers[index];
  if (!std::isfinite(value))
    throw std::invalid_argument(std::string(caller) + ": hyper '" + hyper.name + "' set to " +
                                formatNumber(value) + "; hypers must be finite");
  if (!hyper.range.contains(value))
    throw std::invalid_argument(std::string(caller) + ": hyper '" + hyper.name + "' of rule '" +
                                kernels_->name + "' set to " + formatNumber(value) + ", outside its range " +
                                hyper.range.str() + " (the kernels rely on it)");
  if (hyper.fixed && value != hyper.defaultValue)
    throw std::invalid_argument(std::string(caller) + ": hyper '" + hyper.name + "' of rule '" +
                                kernels_->name + "' is fixed at " +
                                formatNumber(hyper.defaultValue) +
                                " (folded into the kernels when they were built); it cannot be "
                                "set to " +
                                formatNumber(value));
}

StateSlot RuleLayout::stateSlot(const std::string &name, const char *caller) const {
  const std::vector<StateInfo> &states = kernels_->states;
  for (size_t i = 0; i < states.size(); ++i)
    if (states[i].name == name)
      return stateSlots_[i];
  throw std::invalid_argument(
      std::string(caller) + ": unknown state '" + name + "' of rule '" + kernels_->name + "'" +
      didYouMean(name, userNames(states)) + "; " +
      (states.empty() ? "it has no states" : "its states are: " + nameList(states)));
}

size_t RuleLayout::elementwiseIndex(const std::string &name, const char *caller) const {
  StateSlot slot = stateSlot(name, caller);
  if (slot.scalar)
    throw std::invalid_argument(std::string(caller) + ": state '" + name +
                                "' is a scalar state (one value per tensor); read it with scalarState");
  return slot.index;
}

size_t RuleLayout::scalarIndex(const std::string &name, const char *caller) const {
  StateSlot slot = stateSlot(name, caller);
  if (!slot.scalar)
    throw std::invalid_argument(std::string(caller) + ": state '" + name +
                                "' is elementwise (one value per element); read it with state");
  return slot.index;
}

} // namespace optrt
