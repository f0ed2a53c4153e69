// loadArtifact: dlopen, the ABI version handshake, and a copy of the C
// descriptor into an optrt::RuleKernels. Every pointer and count of the
// descriptor is checked before use: a damaged or foreign library gives an
// error naming the field, not a crash inside a step.
#include "optrt/Artifact.h"

#include "optrt/CudaKernels.h"
#include "optrt/artifact_abi.h"

#include <cmath>
#include <cstdlib>
#include <dlfcn.h>
#include <filesystem>
#include <string_view>

#include <span>
#include <stdexcept>
#include <vector>

namespace optrt {

namespace {

/// The table plus the library its function pointers live in.
struct ArtifactKernels : RuleKernels {
  void *library = nullptr;
  ArtifactKernels() = default;
  ArtifactKernels(const ArtifactKernels &) = delete;
  ArtifactKernels &operator=(const ArtifactKernels &) = delete;
  ~ArtifactKernels() {
    if (library)
      dlclose(library);
  }
};

class DescriptorReader {
public:
  DescriptorReader(const std::string &path, const optdsl_artifact &artifact)
      : path_(path), artifact_(artifact) {}

  void read(RuleKernels &rule) {
    rule.name = string(artifact_.rule, "rule");
    rule.cpu = string(artifact_.cpu, "cpu");
    for (const optdsl_hyper &hyper : array(artifact_.hypers, artifact_.num_hypers, "hypers")) {
      HyperRange range{hyper.lower, hyper.upper, (hyper.range_flags & OPTDSL_RANGE_LOWER_OPEN) != 0,
                       (hyper.range_flags & OPTDSL_RANGE_UPPER_OPEN) != 0};
      std::string name = string(hyper.name, "hyper name");
      if (std::isnan(range.lower) || std::isnan(range.upper) || !range.contains(hyper.default_value))
        fail("hyper '" + name + "' has the default " + HyperRange::format(hyper.default_value) +
             " outside its range " + range.str());
      rule.hypers.push_back({name, hyper.default_value, hyper.fixed != 0, range});
    }
    for (const optdsl_state &state : array(artifact_.states, artifact_.num_states, "states")) {
      uint32_t span = state.span & ~OPTDSL_SPAN_SCRATCH;
      if (span > OPTDSL_SPAN_MATRICES || (state.scalar && state.span != 0))
        fail("state '" + string(state.name, "state name") + "' has the unknown span " + std::to_string(state.span));
      rule.states.push_back({string(state.name, "state name"), state.scalar != 0, static_cast<StateSpan>(span),
                             (state.span & OPTDSL_SPAN_SCRATCH) != 0});
    }
    for (const optdsl_reduction &reduction :
         array(artifact_.reductions, artifact_.num_reductions, "reductions")) {
      uint32_t kind = reduction.kind & ~static_cast<uint32_t>(OPTDSL_REDUCE_GROUP_WIDE);
      if (kind > OPTDSL_REDUCE_MAX)
        fail("reduction kind " + std::to_string(reduction.kind) + " is unknown");
      rule.reductions.push_back({static_cast<ReductionKind>(kind), reduction.phase,
                                 (reduction.kind & OPTDSL_REDUCE_GROUP_WIDE) != 0});
    }
    for (const optdsl_input &input : array(artifact_.inputs, artifact_.num_inputs, "inputs"))
      rule.inputs.push_back({string(input.name, "input name"), input.optional != 0});
    rule.usesRandom = artifact_.uses_random != 0;
    if (artifact_.num_phases < 1)
      fail("num_phases is " + std::to_string(artifact_.num_phases));
    size_t phases = static_cast<size_t>(artifact_.num_phases);
    rule.numPhases = artifact_.num_phases;
    for (int32_t count : array(artifact_.num_uniforms, phases, "num_uniforms"))
      rule.numUniforms.push_back(count);
    for (int32_t domain : array(artifact_.phase_domains, phases, "phase_domains")) {
      if (domain < OPTDSL_DOMAIN_ELEMENTS || domain > OPTDSL_DOMAIN_MATRICES)
        fail("a phase runs over the unknown domain " + std::to_string(domain));
      rule.phaseDomains.push_back(static_cast<PhaseDomain>(domain));
    }
    for (const optdsl_axis_reduction &reduction :
         array(artifact_.axis_reductions, artifact_.num_axis_reductions, "axis_reductions"))
      rule.axisReductions.push_back({reduction.phase, reduction.state, reduction.along_rows != 0, reduction.mean != 0});
    for (int32_t slots : array(artifact_.column_slots, phases, "column_slots")) {
      if (slots < 0 || slots > 4096)
        fail("a phase takes " + std::to_string(slots) + " column scratch slots");
      rule.columnSlots.push_back(slots);
    }
    rule.init = artifact_.init;
    for (optdsl_uniforms_fn fn : array(artifact_.uniforms, phases, "uniforms"))
      rule.uniforms.push_back(fn);
    rule.scalarUpdate = artifact_.scalar_update;
    for (const optdsl_layout &layout : array(artifact_.layouts, artifact_.num_layouts, "layouts"))
      rule.layouts.push_back(readLayout(layout, phases, rule.states.size(), rule.inputs.size()));
  }

  /// The CPU variants of a fat artifact, best first; empty for a single-CPU
  /// one (then the layouts' kernels are for `cpu`).
  struct Variant {
    std::string cpu, features;
    const optdsl_kernel_fn *const *kernels;
  };
  std::vector<Variant> variants() const {
    std::vector<Variant> result;
    for (const optdsl_cpu_variant &variant : array(artifact_.variants, artifact_.num_variants, "variants")) {
      std::string cpu = string(variant.cpu, "variant cpu");
      array(variant.kernels, artifact_.num_layouts, ("variant " + cpu + " kernels").c_str());
      for (uint32_t l = 0; l < artifact_.num_layouts; ++l)
        array(variant.kernels[l], static_cast<size_t>(artifact_.num_phases), ("variant " + cpu + " kernels").c_str());
      result.push_back({cpu, string(variant.cpu_features, "variant cpu_features"), variant.kernels});
    }
    return result;
  }

private:
  [[noreturn]] void fail(const std::string &problem) const {
    throw std::runtime_error("kernel artifact '" + path_ + "': malformed descriptor: " + problem);
  }

  std::string string(const char *text, const char *field) const {
    if (!text)
      fail(std::string(field) + " is null");
    return text;
  }

  template <typename T> std::span<const T> array(const T *data, size_t count, const char *field) const {
    if (count > 0 && !data)
      fail(std::string(field) + " is null with " + std::to_string(count) + " entries");
    return {data, count};
  }

  LayoutKernels readLayout(const optdsl_layout &layout, size_t phases, size_t numStates, size_t numInputs) const {
    LayoutKernels result;
    result.name = string(layout.name, "layout name");
    for (const optdsl_buffer &buffer : array(layout.buffers, layout.num_buffers, "layout buffers")) {
      if (buffer.role > OPTDSL_BUFFER_AXIS_STATE || buffer.dtype > OPTDSL_DTYPE_REMAINDER)
        fail("layout " + result.name + " has a buffer of unknown role or dtype");
      bool input = buffer.role == OPTDSL_BUFFER_INPUT;
      if (buffer.state >= static_cast<int32_t>(input ? numInputs : numStates))
        fail("layout " + result.name + " names " + (input ? "input " : "state ") + std::to_string(buffer.state));
      result.buffers.push_back({static_cast<BufferRole>(buffer.role),
                                static_cast<Dtype>(buffer.dtype), buffer.state,
                                buffer.block_elements});
    }
    for (optdsl_kernel_fn fn : array(layout.kernels, phases, "layout kernels"))
      result.kernels.push_back(fn);
    if (layout.cuda)
      result.cuda = readCuda(*layout.cuda, phases, result.name);
    return result;
  }

  std::shared_ptr<const CudaKernels> readCuda(const optdsl_cuda &cuda, size_t phases,
                                              const std::string &layout) const {
    auto result = std::make_shared<CudaKernels>();
    std::string where = "layout " + layout + " cuda ";
    result->rule = string(artifact_.rule, "rule");
    for (const optdsl_cuda_image &image : array(cuda.images, cuda.num_images, (where + "images").c_str())) {
      CudaImage copy;
      copy.arch = string(image.arch, (where + "arch").c_str());
      copy.ptx = string(image.ptx, (where + "ptx").c_str());
      copy.ptxVersion = image.ptx_version;
      if (image.cubin_size > 0) {
        const char *bytes = array(static_cast<const char *>(image.cubin), image.cubin_size,
                                  (where + "cubin").c_str()).data();
        copy.cubin.assign(bytes, image.cubin_size);
      }
      result->images.push_back(std::move(copy));
    }
    auto names = [&](const char *const *table, const char *field) {
      std::vector<std::string> list;
      for (const char *name : array(table, phases, (where + field).c_str()))
        list.push_back(string(name, (where + field).c_str()));
      return list;
    };
    result->uniformsEntries = names(cuda.uniforms_entries, "uniforms_entries");
    result->elementEntries = names(cuda.element_entries, "element_entries");
    result->finishEntries = names(cuda.finish_entries, "finish_entries");
    result->scalarsEntry = string(cuda.scalars_entry, (where + "scalars_entry").c_str());
    result->advanceEntry = string(cuda.advance_entry, (where + "advance_entry").c_str());
    result->gradStatsEntry = string(cuda.gradstats_entry, (where + "gradstats_entry").c_str());
    result->stepOptionsEntry = string(cuda.stepoptions_entry, (where + "stepoptions_entry").c_str());
    result->layout = layout;
    result->blockSize = cuda.block_size;
    result->buffersPerTensor = cuda.buffers_per_tensor;
    result->uniformStride = cuda.uniform_stride;
    result->partialStride = cuda.partial_stride;
    auto fixedNames = array(cuda.fixed_hyper_names, cuda.num_fixed_hypers, (where + "fixed_hyper_names").c_str());
    auto fixedValues = array(cuda.fixed_hyper_values, cuda.num_fixed_hypers, (where + "fixed_hyper_values").c_str());
    for (size_t i = 0; i < fixedNames.size(); ++i)
      result->fixedHypers.emplace_back(string(fixedNames[i], (where + "fixed_hyper_names").c_str()),
                                       fixedValues[i]);
    return result;
  }

  const std::string &path_;
  const optdsl_artifact &artifact_;
};

} // namespace

std::string findArtifact(const std::string &name) {
  if (name.find('/') != std::string::npos)
    return name;
  std::vector<std::filesystem::path> folders;
  if (const char *paths = std::getenv("OPTDSL_RULE_PATH"))
    for (std::string_view rest = paths; !rest.empty();) {
      size_t colon = rest.find(':');
      if (colon != 0)
        folders.emplace_back(std::string(rest.substr(0, colon)));
      rest = colon == std::string_view::npos ? std::string_view() : rest.substr(colon + 1);
    }
  std::error_code error;
  std::filesystem::path executable = std::filesystem::read_symlink("/proc/self/exe", error);
  if (!error) {
    folders.push_back(executable.parent_path());
    folders.push_back(executable.parent_path() / ".." / "lib" / "optdsl");
  }
  std::string looked;
  for (const std::filesystem::path &folder : folders) {
    std::filesystem::path candidate = folder / name;
    if (std::filesystem::is_regular_file(candidate, error))
      return candidate.lexically_normal().string();
    looked += "\n  " + folder.lexically_normal().string();
  }
  throw std::runtime_error("kernel artifact '" + name + "' not found; looked in:" + looked +
                           "\n(set OPTDSL_RULE_PATH, or install it with optdsl_install_rule)");
}

std::shared_ptr<const RuleKernels> loadArtifact(const std::string &path) {
  auto fail = [&](const std::string &problem) {
    return std::runtime_error("kernel artifact '" + path + "': " + problem);
  };
  auto result = std::make_shared<ArtifactKernels>();
  // RTLD_LOCAL: two artifacts of the same rule (other layouts, other fixed
  // hypers) export the same kernel names and must not bind to each other.
  result->library = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!result->library) {
    const char *why = dlerror();
    throw fail(std::string("cannot load: ") + (why ? why : "dlopen failed"));
  }
  dlerror();
  auto version = reinterpret_cast<uint32_t (*)()>(dlsym(result->library, OPTDSL_ABI_VERSION_SYMBOL));
  if (!version)
    throw fail("not an OptDSL kernel artifact (it has no " OPTDSL_ABI_VERSION_SYMBOL
               " symbol); build one with optc FILE.opt --emit=so");
  uint32_t abi = version();
  if (abi != OPTDSL_ABI_VERSION)
    throw fail("built for artifact ABI version " + std::to_string(abi) +
               ", but this runtime reads version " + std::to_string(OPTDSL_ABI_VERSION) +
               "; rebuild it with the optc of this OptDSL");
  auto describe =
      reinterpret_cast<const optdsl_artifact *(*)()>(dlsym(result->library, OPTDSL_ARTIFACT_SYMBOL));
  const optdsl_artifact *artifact = describe ? describe() : nullptr;
  if (!artifact)
    throw fail("no descriptor (" OPTDSL_ARTIFACT_SYMBOL " missing or null)");
  if (artifact->abi_version != OPTDSL_ABI_VERSION)
    throw fail("its descriptor says ABI version " + std::to_string(artifact->abi_version) +
               ", its " OPTDSL_ABI_VERSION_SYMBOL " says " + std::to_string(abi));
  DescriptorReader reader(path, *artifact);
  reader.read(*result);
  std::vector<DescriptorReader::Variant> variants = reader.variants();
  if (variants.empty()) {
    std::string features = artifact->cpu_features ? artifact->cpu_features : "";
    std::string missing = missingCpuFeatures(features);
    if (!missing.empty())
      throw fail("compiled for CPU '" + result->cpu + "', whose features " + missing +
                 " this CPU lacks; rebuild it for this machine (optc --cpu=host) or for every "
                 "x86-64 level (the default, --cpu=portable)");
    return result;
  }
  // The best variant this CPU runs, or the one OPTDSL_CPU_VARIANT names
  // (tests run every variant the machine can).
  const char *forced = std::getenv("OPTDSL_CPU_VARIANT");
  std::string offered;
  const DescriptorReader::Variant *chosen = nullptr;
  for (const DescriptorReader::Variant &variant : variants) {
    std::string missing = missingCpuFeatures(variant.features);
    offered += "\n  " + variant.cpu + (missing.empty() ? "" : " (this CPU lacks " + missing + ")");
    bool wanted = forced && *forced ? variant.cpu == forced : true;
    if (!chosen && wanted && missing.empty())
      chosen = &variant;
  }
  if (!chosen)
    throw fail(forced && *forced
                   ? "has no variant '" + std::string(forced) + "' this CPU can run (OPTDSL_CPU_VARIANT); it has:" +
                         offered
                   : "has no kernels this CPU can run; it has:" + offered);
  result->cpu = chosen->cpu;
  for (size_t l = 0; l < result->layouts.size(); ++l) {
    result->layouts[l].kernels.clear();
    for (int32_t p = 0; p < artifact->num_phases; ++p)
      result->layouts[l].kernels.push_back(chosen->kernels[l][p]);
  }
  return result;
}

} // namespace optrt
