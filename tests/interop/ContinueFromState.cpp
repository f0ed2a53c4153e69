// The C++ half of tests/interop/torch_roundtrip.py: an OptDSL optimizer over
// the given params imports a state file (written from torch's state_dict by
// tools/torch_optim_state.py), takes steps with the given gradients, and
// writes its params and exported state back for the Python half to compare
// with torch.
//
//   optdsl-interop-continue RULE.opt LAYOUT STATE.safetensors PARAMS.bin GRADS.bin OUT.safetensors OUT_PARAMS.bin
//
// PARAMS.bin: u32 tensors, then per tensor u64 size and its f32 values.
// GRADS.bin: u32 steps, then per step every tensor's f32 gradient.
#include "optdsl/JIT.h"
#include "optrt/Optimizer.h"

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <stdexcept>
#include <vector>

namespace {

template <typename T> T read(std::ifstream &in) {
  T value;
  if (!in.read(reinterpret_cast<char *>(&value), sizeof value))
    throw std::runtime_error("a .bin file ends early");
  return value;
}

} // namespace

int main(int argc, char **argv) {
  if (argc != 8) {
    std::fprintf(stderr, "usage: %s RULE.opt LAYOUT STATE PARAMS GRADS OUT_STATE OUT_PARAMS\n", argv[0]);
    return 2;
  }
  try {
    std::ifstream paramsIn(argv[4], std::ios::binary), gradsIn(argv[5], std::ios::binary);
    uint32_t numTensors = read<uint32_t>(paramsIn);
    std::vector<std::vector<float>> params(numTensors);
    std::vector<size_t> sizes;
    std::vector<float *> pointers;
    for (auto &param : params) {
      param.resize(read<uint64_t>(paramsIn));
      paramsIn.read(reinterpret_cast<char *>(param.data()), static_cast<std::streamsize>(param.size() * 4));
      sizes.push_back(param.size());
      pointers.push_back(param.data());
    }
    optrt::Optimizer optimizer(optdsl::jitCompileFile(argv[1], {}, {argv[2]}), {.threads = 2, .layout = argv[2]});
    optimizer.addGroup(pointers, sizes);
    optimizer.importSafetensors(argv[3]);
    uint32_t steps = read<uint32_t>(gradsIn);
    std::vector<std::vector<float>> grads(numTensors);
    for (uint32_t s = 0; s < steps; ++s) {
      std::vector<const float *> gradPointers;
      for (uint32_t t = 0; t < numTensors; ++t) {
        grads[t].resize(sizes[t]);
        gradsIn.read(reinterpret_cast<char *>(grads[t].data()), static_cast<std::streamsize>(sizes[t] * 4));
        gradPointers.push_back(grads[t].data());
      }
      optimizer.step({gradPointers});
    }
    optimizer.exportSafetensors(argv[6]);
    std::ofstream out(argv[7], std::ios::binary);
    for (const auto &param : params)
      out.write(reinterpret_cast<const char *>(param.data()), static_cast<std::streamsize>(param.size() * 4));
    return out ? 0 : 1;
  } catch (const std::exception &e) {
    std::fprintf(stderr, "optdsl-interop-continue: %s\n", e.what());
    return 1;
  }
}
