// Checkpoints (Optimizer::saveState/loadState, docs/checkpoints.md) of
// JIT-compiled library rules in layouts with masters, q8 codes and absmax,
// and scalar states:
//
// - a round trip through a file restores everything, the groups' hypers and
//   step counts included, and the two optimizers step on identically;
// - the stream truncated at every section boundary (and inside sections),
//   and with one bit flipped at hundreds of offsets, is refused with a named
//   error, and the optimizer it was loaded into is unchanged;
// - a process killed while saving (SIGKILL at varied moments) leaves a file
//   that loads: the previous checkpoint or the new one, never a torn one.
#include "common/JitKernels.h"
#include "optrt/Optimizer.h"
#include "optrt/Storage.h"

#include <gtest/gtest.h>

#include <chrono>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

namespace optdsl {
namespace {

const std::vector<std::string> kLayouts = {"f32", "param=bf16,master=f32,state=q8"};

/// An optimizer over its own params: two groups, the second of tensors
/// small enough for the q8 small-tensor fallback.
struct Model {
  Model(const std::string &rule, const std::string &layout, size_t big = 3000)
      : optimizer(test::jitKernels(rule, kLayouts), options(layout)) {
    bool bf16 = layout.find("param=bf16") != std::string::npos;
    std::mt19937 rng(5);
    std::normal_distribution<float> normal;
    for (size_t size : {big, size_t{700}, size_t{33}}) {
      std::vector<uint8_t> bytes(size * (bf16 ? 2 : 4));
      for (size_t i = 0; i < size; ++i) {
        float v = normal(rng);
        if (bf16) {
          uint16_t b = optrt::f32ToBf16(v);
          std::memcpy(&bytes[2 * i], &b, 2);
        } else {
          std::memcpy(&bytes[4 * i], &v, 4);
        }
      }
      params.push_back(std::move(bytes));
      grads.emplace_back(size);
    }
    optimizer.addGroupStored({params[0].data()}, {big}, {{"lr", 0.01}});
    optimizer.addGroupStored({params[1].data(), params[2].data()}, {700, 33}, {{"weight_decay", 0.0}});
  }

  static optrt::OptimizerOptions options(const std::string &layout) {
    optrt::OptimizerOptions o;
    o.layout = layout;
    o.threads = 2;
    o.chunkElements = 1024;
    o.smallTensorElements = 512;
    return o;
  }

  void step(int seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal;
    for (auto &grad : grads)
      for (float &g : grad)
        g = normal(rng);
    optimizer.step({{grads[0].data()}, {grads[1].data(), grads[2].data()}});
  }

  std::string stream() const {
    std::ostringstream out;
    optimizer.saveState(out);
    return out.str();
  }

  optrt::Optimizer optimizer;
  std::vector<std::vector<uint8_t>> params;
  std::vector<std::vector<float>> grads;
};

std::string tempPath(const std::string &name) {
  return (std::filesystem::temp_directory_path() / ("optdsl-" + std::to_string(getpid()) + "-" + name)).string();
}

TEST(Checkpoint, RoundTripThroughAFileRestoresEverything) {
  for (const char *rule : {"adamw", "lamb", "nadam"})
    for (const std::string &layout : kLayouts) {
      SCOPED_TRACE(std::string(rule) + " " + layout);
      Model saved(rule, layout), loaded(rule, layout);
      for (int s = 0; s < 3; ++s)
        saved.step(s);
      saved.optimizer.setHyper("lr", 0.004, 1);
      std::string path = tempPath("roundtrip.ckpt");
      saved.optimizer.saveState(path);
      loaded.params = saved.params; // params are the caller's
      loaded.optimizer.loadState(path);
      std::filesystem::remove(path);
      EXPECT_EQ(loaded.stream(), saved.stream());
      EXPECT_EQ(loaded.optimizer.hyper("lr", 1), 0.004);
      EXPECT_EQ(loaded.optimizer.hyper("lr", 0), 0.01);
      EXPECT_EQ(loaded.optimizer.stepCount(1), 3);
      for (int s = 3; s < 5; ++s) {
        saved.step(s);
        loaded.step(s);
      }
      EXPECT_EQ(loaded.params, saved.params);
      EXPECT_EQ(loaded.stream(), saved.stream());
    }
}

/// Where the sections of a version-3 stream begin and end (docs/checkpoints.md).
std::vector<size_t> sectionBoundaries(const std::string &stream) {
  std::vector<size_t> at{0, 8, 12};
  size_t offset = 12;
  auto u64 = [&](size_t where) {
    uint64_t value;
    std::memcpy(&value, stream.data() + where, 8);
    return value;
  };
  while (offset + 8 < stream.size()) {
    uint64_t bytes = u64(offset);
    at.push_back(offset + 8);
    at.push_back(offset + 8 + bytes);
    offset += 8 + bytes + 8;
    at.push_back(offset);
  }
  at.push_back(stream.size());
  return at;
}

/// Loading `bytes` into `into` must throw std::invalid_argument and change nothing.
void expectRefused(Model &into, const std::string &bytes, const std::string &what) {
  std::string before = into.stream();
  std::istringstream in(bytes);
  try {
    into.optimizer.loadState(in);
    ADD_FAILURE() << what << ": accepted";
  } catch (const std::invalid_argument &e) {
    EXPECT_NE(std::string(e.what()).find("optrt::Optimizer::loadState: "), std::string::npos) << e.what();
  }
  EXPECT_EQ(into.stream(), before) << what << ": the optimizer changed";
}

TEST(Checkpoint, TruncationAnywhereIsRefused) {
  Model saved("adamw", "param=bf16,master=f32,state=q8"), into("adamw", "param=bf16,master=f32,state=q8");
  saved.step(1);
  into.step(2);
  std::string stream = saved.stream();
  std::vector<size_t> cuts = sectionBoundaries(stream);
  ASSERT_GT(cuts.size(), 20u); // header, 3 tensors x (master + 2 states + 2 absmax or so)
  for (size_t cut : cuts)
    for (size_t at : {cut, cut + 3})
      if (at < stream.size())
        expectRefused(into, stream.substr(0, at), "truncated at byte " + std::to_string(at));
  // Nothing may follow the end either.
  expectRefused(into, stream + '\0', "one byte appended");
  std::istringstream in(stream);
  into.optimizer.loadState(in); // the whole stream is fine
  EXPECT_EQ(into.stream(), stream);
}

TEST(Checkpoint, BitFlipsAnywhereAreRefused) {
  Model saved("lamb", "param=bf16,master=f32,state=q8", 1500), into("lamb", "param=bf16,master=f32,state=q8", 1500);
  saved.step(1);
  std::string stream = saved.stream();
  std::vector<size_t> offsets;
  for (size_t i = 0; i < 96 && i < stream.size(); ++i) // magic, version, header length, header
    offsets.push_back(i);
  for (size_t i = 96; i < stream.size(); i += 1 + stream.size() / 300)
    offsets.push_back(i);
  for (size_t i = stream.size() - 24; i < stream.size(); ++i) // last checksum, end marker
    offsets.push_back(i);
  for (size_t cut : sectionBoundaries(stream))
    for (size_t i = cut; i < cut + 9 && i < stream.size(); ++i) // every length and checksum field
      offsets.push_back(i);
  ASSERT_GT(offsets.size(), 400u);
  for (size_t offset : offsets) {
    std::string damaged = stream;
    damaged[offset] = static_cast<char>(damaged[offset] ^ (1 << (offset % 8)));
    expectRefused(into, damaged, "bit " + std::to_string(offset % 8) + " of byte " + std::to_string(offset));
  }
}

TEST(Checkpoint, NamesWhatIsWrong) {
  Model saved("adamw", "f32"), into("adamw", "f32");
  saved.step(1);
  std::string stream = saved.stream();
  auto message = [&](const std::string &bytes) {
    std::istringstream in(bytes);
    try {
      into.optimizer.loadState(in);
    } catch (const std::invalid_argument &e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  std::vector<size_t> cuts = sectionBoundaries(stream);
  std::string header = stream;
  header[30] ^= 1;
  EXPECT_NE(message(header).find("checksum of the header section"), std::string::npos) << message(header);
  std::string state = stream;
  state[cuts[6] + 100] ^= 1; // inside the second buffer section
  EXPECT_NE(message(state).find("checksum of state 'exp_avg' of tensor 0"), std::string::npos) << message(state);
  EXPECT_NE(message(stream.substr(0, cuts[9] + 5)).find("ends early, in the section of state 'exp_avg_sq' of tensor 0"),
            std::string::npos)
      << message(stream.substr(0, cuts[9] + 5));
  EXPECT_NE(message("OPTDSLST").find("ends early"), std::string::npos);
  EXPECT_NE(message("PK\x03\x04 a zip file").find("not an OptDSL state stream"), std::string::npos);
  EXPECT_THROW(into.optimizer.loadState(tempPath("does-not-exist")), std::invalid_argument);
  EXPECT_THROW(saved.optimizer.saveState("/proc/optdsl-cannot-write-here"), std::runtime_error);
}

TEST(Checkpoint, AProcessKilledWhileSavingLeavesALoadableFile) {
  // Big enough that a save takes a while (a 4M-element tensor: 48 MB in
  // f32 with AdamW's two states).
  auto kernels = test::jitKernels("adamw", kLayouts); // compiled before fork
  const size_t big = size_t{4} << 20;
  std::string path = tempPath("killed.ckpt");
  std::filesystem::remove(path);
  std::mt19937 rng(9);
  for (int attempt = 0; attempt < 6; ++attempt) {
    int ready[2];
    ASSERT_EQ(pipe(ready), 0);
    pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      // Saves over and over, a step between saves; says when the first save
      // is complete.
      close(ready[0]);
      Model model("adamw", "f32", big);
      for (int s = 0;; ++s) {
        model.step(s);
        model.optimizer.saveState(path);
        if (s == 0 && write(ready[1], "1", 1) != 1)
          _exit(2);
      }
    }
    close(ready[1]);
    char byte;
    ASSERT_EQ(read(ready[0], &byte, 1), 1) << "the child did not save";
    close(ready[0]);
    std::this_thread::sleep_for(std::chrono::milliseconds(std::uniform_int_distribution<int>(0, 400)(rng)));
    kill(child, SIGKILL);
    int status = 0;
    waitpid(child, &status, 0);
    ASSERT_TRUE(WIFSIGNALED(status));
    Model loaded("adamw", "f32", big);
    EXPECT_NO_THROW(loaded.optimizer.loadState(path)) << "attempt " << attempt;
    EXPECT_GE(loaded.optimizer.stepCount(), 1);
    // The killed writer's temporary file is left beside the checkpoint.
    for (const auto &entry : std::filesystem::directory_iterator(std::filesystem::path(path).parent_path()))
      if (entry.path().filename().string().starts_with("." + std::filesystem::path(path).filename().string()))
        std::filesystem::remove(entry.path());
  }
  std::filesystem::remove(path);
}

TEST(Safetensors, ExportImportRoundTrip) {
  for (const std::string &layout : kLayouts) {
    SCOPED_TRACE(layout);
    Model saved("nadam", layout), loaded("nadam", layout);
    for (int s = 0; s < 3; ++s)
      saved.step(s);
    saved.optimizer.setHyper("lr", 0.003, 0);
    std::string path = tempPath("state.safetensors");
    saved.optimizer.exportSafetensors(path);
    loaded.optimizer.importSafetensors(path);
    std::filesystem::remove(path);
    EXPECT_EQ(loaded.optimizer.hyper("lr", 0), 0.003);
    EXPECT_EQ(loaded.optimizer.stepCount(1), 3);
    EXPECT_EQ(loaded.optimizer.scalarState("mu_product", 1, 1), saved.optimizer.scalarState("mu_product", 1, 1));
    for (int g = 0; g < 2; ++g)
      for (size_t t = 0; t < saved.optimizer.numTensors(g); ++t)
        EXPECT_EQ(loaded.optimizer.readState("exp_avg_sq", g, t), saved.optimizer.readState("exp_avg_sq", g, t));
    if (layout == "f32") // the whole state, bit for bit (q8 re-encodes decoded values)
      EXPECT_EQ(loaded.stream(), saved.stream());
  }
}

TEST(Safetensors, BadFilesAreRefusedWithNothingChanged) {
  Model saved("adamw", "f32"), into("adamw", "f32"), other("nadam", "f32");
  saved.step(1);
  into.step(2);
  std::string good = tempPath("good.safetensors"), bad = tempPath("bad.safetensors");
  saved.optimizer.exportSafetensors(good);
  std::ifstream in(good, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto refused = [&](const std::string &content, const std::string &words) {
    {
      std::ofstream out(bad, std::ios::binary);
      out << content;
    }
    std::string before = into.stream();
    try {
      into.optimizer.importSafetensors(bad);
      ADD_FAILURE() << words << ": accepted";
    } catch (const std::invalid_argument &e) {
      EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
    }
    EXPECT_EQ(into.stream(), before) << words;
  };
  refused("not safetensors", "is not a safetensors file");
  refused(bytes.substr(0, bytes.size() - 5), "whose byte range does not fit");
  // Same-length edits of the header's text, so every byte range still fits.
  auto edited = [&](const std::string &from, const std::string &to) {
    std::string copy = bytes;
    size_t at = copy.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    EXPECT_EQ(from.size(), to.size());
    return at == std::string::npos ? copy : copy.replace(at, from.size(), to);
  };
  refused(edited("\"rule\":\"adamw\"", "\"rule\":\"lionx\""), "the state is of rule 'lionx'");
  refused(edited("state.0.exp_avg\"", "state.0.exp_avX\""), "'state.0.exp_avg' is missing");
  refused(edited("\\\"beta2\\\":0.999", "\\\"beta2\\\":1.999"), "outside its range");
  EXPECT_THROW(other.optimizer.importSafetensors(good), std::invalid_argument);
  std::filesystem::remove(good);
  std::filesystem::remove(bad);
}

} // namespace
} // namespace optdsl
