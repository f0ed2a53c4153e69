// optrt::Optimizer's exportSafetensors/importSafetensors: the optimizer's
// state under torch.optim's names, for moving state to and from PyTorch
// (tools/torch_optim_state.py; docs/checkpoints.md).
#include "OptimizerImpl.h"
#include "Safetensors.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <optional>
#include <set>

namespace optrt {

namespace {

constexpr const char *kFormat = "optdsl-optim-state/1";

std::string stateKey(size_t tensor, const std::string &name) {
  return "state." + std::to_string(tensor) + "." + name;
}

/// A scalar tensor's value (F64 or F32), or nullopt when it is not one.
std::optional<double> scalarOf(const detail::SafeTensor &tensor) {
  if (tensor.dtype == "F64" && tensor.bytes.size() == sizeof(double))
    return *reinterpret_cast<const double *>(tensor.bytes.data());
  if (tensor.dtype == "F32" && tensor.bytes.size() == sizeof(float))
    return *reinterpret_cast<const float *>(tensor.bytes.data());
  return std::nullopt;
}

template <typename T> std::vector<char> bytesOf(const T *values, size_t n) {
  const char *begin = reinterpret_cast<const char *>(values);
  return {begin, begin + n * sizeof(T)};
}

} // namespace

void Optimizer::exportSafetensors(const std::string &path) const {
  static const char *caller = "optrt::Optimizer::exportSafetensors";
  const Impl &s = *impl_;
  s.refuseSharded(caller);
  const RuleKernels &rule = s.layout.rule();
  detail::SafetensorsFile file;
  nlohmann::json groups = nlohmann::json::array();
  for (size_t g = 0; g < s.groups.size(); ++g) {
    const detail::Group &group = s.groups[g];
    nlohmann::json entry = nlohmann::json::object();
    for (size_t h = 0; h < rule.hypers.size(); ++h)
      if (!isStepHyper(rule.hypers[h].name))
        entry[rule.hypers[h].name] = group.hypers[h];
    std::vector<size_t> params;
    for (size_t i = 0; i < group.numTensors; ++i)
      params.push_back(group.firstTensor + i);
    entry["params"] = params;
    entry["step"] = group.steps;
    groups.push_back(entry);
    for (size_t i = 0; i < group.numTensors; ++i) {
      size_t t = group.firstTensor + i;
      const detail::Tensor &tensor = s.tensors[t];
      // torch keeps `step` per parameter, as a float32 scalar tensor.
      float step = static_cast<float>(group.steps);
      file.tensors[stateKey(t, "step")] = {"F32", {}, bytesOf(&step, 1)};
      for (const StateInfo &state : rule.states) {
        if (state.scalar && shapeDimension(state.name) >= 0)
          continue; // the tensor's shape, which torch keeps in the tensor itself
        if (state.scalar) {
          double value = scalarState(state.name, static_cast<int>(g), i);
          file.tensors[stateKey(t, state.name)] = {"F64", {}, bytesOf(&value, 1)};
        } else if (state.span != StateSpan::Elements) {
          // A state per row or column (f32), one value per row or column of
          // the tensor's matrices, flattened; the scratch of row and column
          // reductions is not state.
          if (state.scratch)
            continue;
          std::vector<float> values = readState(state.name, static_cast<int>(g), i);
          file.tensors[stateKey(t, state.name)] = {"F32", {static_cast<int64_t>(values.size())},
                                                   bytesOf(values.data(), values.size())};
        } else if (detail::findBuffer(tensor.layout->buffers, BufferRole::State,
                                      static_cast<int>(s.layout.stateIndex(state.name))) >= 0) {
          std::vector<float> values = readState(state.name, static_cast<int>(g), i);
          file.tensors[stateKey(t, state.name)] = {"F32", {static_cast<int64_t>(tensor.size)},
                                                   bytesOf(values.data(), values.size())};
        }
      }
    }
  }
  file.metadata["format"] = kFormat;
  file.metadata["rule"] = rule.name;
  file.metadata["layout"] = s.layout.layout().name;
  file.metadata["param_groups"] = groups.dump();
  detail::writeSafetensors(path, file, caller);
}

void Optimizer::importSafetensors(const std::string &path) {
  static const char *caller = "optrt::Optimizer::importSafetensors";
  Impl &s = *impl_;
  s.refuseSharded(caller);
  const RuleKernels &rule = s.layout.rule();
  auto fail = [&](const std::string &problem) {
    throw std::invalid_argument(std::string(caller) + ": '" + path + "': " + problem);
  };
  detail::SafetensorsFile file = detail::readSafetensors(path, caller);
  auto meta = [&](const std::string &key) {
    auto it = file.metadata.find(key);
    if (it == file.metadata.end())
      fail("its metadata has no '" + key + "' (not written by exportSafetensors or tools/torch_optim_state.py)");
    return it->second;
  };
  if (meta("format") != kFormat)
    fail("format '" + meta("format") + "'; this runtime reads " + kFormat);
  if (meta("rule") != rule.name)
    fail("the state is of rule '" + meta("rule") + "', this optimizer runs '" + rule.name + "'");

  // Everything is read and checked first: hypers, steps, every value.
  nlohmann::json groups;
  try {
    groups = nlohmann::json::parse(meta("param_groups"));
  } catch (const nlohmann::json::exception &e) {
    fail(std::string("its param_groups are not JSON: ") + e.what());
  }
  if (!groups.is_array() || groups.size() != s.groups.size())
    fail("it has " + std::to_string(groups.is_array() ? groups.size() : 0) + " param groups, this optimizer " +
         std::to_string(s.groups.size()));
  std::vector<std::vector<double>> hypers;
  std::vector<int64_t> steps;
  for (size_t g = 0; g < s.groups.size(); ++g) {
    const nlohmann::json &entry = groups[g];
    std::string where = "group " + std::to_string(g);
    std::vector<double> values = s.groups[g].hypers;
    try {
      std::vector<size_t> params = entry.at("params").get<std::vector<size_t>>();
      if (params.size() != s.groups[g].numTensors)
        fail(where + " has " + std::to_string(params.size()) + " params in the file and " +
             std::to_string(s.groups[g].numTensors) + " here");
      for (size_t i = 0; i < params.size(); ++i)
        if (params[i] != s.groups[g].firstTensor + i)
          fail(where + " lists param " + std::to_string(params[i]) + " where this optimizer has tensor " +
               std::to_string(s.groups[g].firstTensor + i));
      for (const auto &[name, value] : entry.items()) {
        if (name == "params" || name == "step")
          continue;
        std::string hyperCaller = std::string(caller) + ": '" + path + "': " + where;
        size_t index = s.layout.hyperIndex(name, hyperCaller.c_str());
        if (isStepHyper(name))
          continue;
        s.layout.checkHyperValue(index, value.get<double>(), hyperCaller.c_str());
        values[index] = value.get<double>();
      }
      int64_t step = entry.at("step").get<int64_t>();
      if (step < 0)
        fail(where + " has taken " + std::to_string(step) + " steps");
      steps.push_back(step);
    } catch (const nlohmann::json::exception &e) {
      fail(where + ": " + e.what());
    }
    hypers.push_back(std::move(values));
  }

  struct Elementwise {
    int group;
    size_t tensor;
    std::string state;
    std::vector<float> values;
  };
  std::vector<Elementwise> elementwise;
  std::vector<double> scalars = s.scalars;
  auto find = [&](size_t t, const std::string &name) -> const detail::SafeTensor & {
    auto it = file.tensors.find(stateKey(t, name));
    if (it == file.tensors.end())
      fail("'" + stateKey(t, name) + "' is missing");
    return it->second;
  };
  for (size_t g = 0; g < s.groups.size(); ++g)
    for (size_t i = 0; i < s.groups[g].numTensors; ++i) {
      size_t t = s.groups[g].firstTensor + i;
      const detail::Tensor &tensor = s.tensors[t];
      std::optional<double> step = scalarOf(find(t, "step"));
      if (!step || *step != static_cast<double>(steps[g]))
        fail("'" + stateKey(t, "step") + "' is not the step of its group (" + std::to_string(steps[g]) +
             "); OptDSL keeps one step count per group");
      for (const StateInfo &state : rule.states) {
        if (state.scalar && shapeDimension(state.name) >= 0)
          continue; // set from the optimizer's own shapes
        if (state.scalar) {
          std::optional<double> value = scalarOf(find(t, state.name));
          if (!value)
            fail("'" + stateKey(t, state.name) + "' is not an F64 or F32 scalar");
          scalars[t * s.layout.numScalar() + s.layout.scalarIndex(state.name, caller)] = *value;
          continue;
        }
        if (state.scratch)
          continue;
        bool perAxis = state.span != StateSpan::Elements;
        if (!perAxis && detail::findBuffer(tensor.layout->buffers, BufferRole::State,
                                           static_cast<int>(s.layout.stateIndex(state.name))) < 0)
          continue; // folded away by a fixed hyper: nothing to restore
        // A state per row or column holds one value per row or column of
        // this optimizer's shape of the tensor.
        size_t count = perAxis ? s.axisState(tensor, state.name).size() : tensor.size;
        const detail::SafeTensor &value = find(t, state.name);
        if (value.dtype != "F32" || value.bytes.size() != count * sizeof(float))
          fail("'" + stateKey(t, state.name) + "' holds " + std::to_string(value.bytes.size()) + " bytes of " +
               value.dtype + "; tensor " + std::to_string(t) + " needs " + std::to_string(count) + " F32");
        std::vector<float> values(count);
        std::memcpy(values.data(), value.bytes.data(), value.bytes.size());
        elementwise.push_back({static_cast<int>(g), i, state.name, std::move(values)});
      }
    }

  for (const Elementwise &e : elementwise)
    writeState(e.state, e.group, e.tensor, e.values);
  s.scalars = std::move(scalars);
  int64_t most = 0;
  for (size_t g = 0; g < s.groups.size(); ++g) {
    s.groups[g].hypers = hypers[g];
    s.groups[g].steps = steps[g];
    most = std::max(most, steps[g]);
  }
  s.stepCount = most;
}

} // namespace optrt
