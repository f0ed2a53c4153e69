// The trainer's command line.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace charlm {

/// A command line the trainer cannot run: the message says what is wrong.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// --hyper [RULE:]NAME=VALUE
struct HyperSetting {
  std::string rule; // empty: every rule of the run that has NAME
  std::string name;
  double value;
};

struct Options {
  std::string corpus = "/usr/share/games/fortunes"; // Debian package fortunes
  double validationFraction = 0.1;
  std::vector<std::string> rules; // built-in names or .opt paths; empty: adamw, ademamix
  std::vector<HyperSetting> hypers;
  std::vector<std::string> layouts; // canonical written forms; empty: f32
  int steps = 5000;
  int batch = 256;
  int context = 16;
  int embed = 16;
  std::vector<int> hidden{512, 512};
  int warmup = -1;    // -1: steps / 20
  double clip = 0;    // --clip: the global gradient norm's maximum; 0: no clipping
  /// --loss-scale: 0 none, > 0 a static scale, -1 dynamic (GradScaler's).
  double lossScale = 0;
  double minLr = 0.1; // cosine floor, as a fraction of the peak
  int evalEvery = -1; // -1: steps / 100
  size_t evalPositions = 4096;
  uint64_t seed = 1;
  unsigned threads = 0; // 0: every core
  int zero = 0;         // --zero 1: data-parallel over MPI ranks, optimizer state sharded (ZeRO stage 1)
  std::string plot = "charlm-loss.svg";
  std::string csv;      // empty: none
  bool help = false;
};

extern const char *const kUsage;

/// Throws UsageError for an unknown option, a missing or malformed value.
Options parseOptions(const std::vector<std::string> &args);

} // namespace charlm
