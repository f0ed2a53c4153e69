// The training loop of one rule: the model owns parameters and gradients,
// an optrt::Optimizer owns the optimizer state and updates the parameters in
// place; the lr schedule (optrt::warmupCosine), clipping and loss scaling are
// the optimizer's.
#pragma once

#include "Corpus.h"
#include "Model.h"
#include "RuleSource.h"
#include "optrt/Communicator.h"
#include "optrt/MemoryReport.h"

#include <cstdint>
#include <map>
#include <ostream>
#include <string>
#include <vector>

namespace charlm {

struct TrainConfig {
  ModelConfig model;
  int steps = 3000;
  int batch = 256;
  int warmupSteps = 150;
  double minLrFraction = 0.1;
  double clip = 0;      // max global gradient norm; 0: no clipping
  double lossScale = 0; // 0: none; > 0: static; -1: dynamic (DynamicLossScaler)
  int evalEvery = 100;         // steps between curve points
  int printEvery = 500;        // steps between progress lines (rounded up to a multiple of evalEvery)
  size_t evalPositions = 4096; // validation characters per curve point (spread evenly)
  uint64_t seed = 1;           // initialisation and batches: the same for every rule
  unsigned threads = 1;        // model and optimizer
  /// Data-parallel (--zero 1): rank r computes the gradients of its equal
  /// slice of every batch; the sharded optimizer averages them across ranks
  /// and keeps 1/ranks of the state. Null: one process.
  std::shared_ptr<optrt::Communicator> communicator;
};

struct RunSpec {
  LoadedRule rule;
  /// Hyper values for every group (lr is the schedule's peak). When the rule
  /// has weight_decay, the group of embeddings and biases gets 0 instead.
  std::map<std::string, double> hypers;
};

struct CurvePoint {
  int step;
  double trainLoss; // mean training batch loss since the previous point; NaN at step 0
  double valLoss;   // on the evenly spread validation subset
};

struct RunResult {
  std::string label;  // the run's name: rule and layout (LoadedRule::runName)
  std::string rule;   // the rule's name
  std::string layout; // its storage layout
  std::vector<CurvePoint> curve;
  double finalValLoss = 0; // on every validation position
  double modelSeconds = 0; // forward + backward (batch sampling included)
  double optimizerSeconds = 0; // Optimizer::step (schedules, clipping and unscaling included)
  int skippedSteps = 0;        // steps with an Inf/NaN gradient (loss scaling)
  int steps = 0;
  size_t params = 0;
  double stateBytesPerParam = 0;
  /// Bytes per parameter of param, grad, master and state: the runtime's
  /// report for the run's layout (Optimizer::memoryReport).
  optrt::MemoryReport memory;
  /// Data-parallel: every rank's master and state together (memory is rank 0's share).
  optrt::MemoryReport memoryAllRanks;
  double wallSeconds = 0;
};

/// Mean loss over the given positions of stream (each predicts stream[p]
/// from the context characters before it).
double evaluate(Model<float> &model, const std::vector<uint8_t> &stream, const std::vector<size_t> &positions,
                ThreadPool &pool);

/// The validation positions whose context and target lie in the training
/// alphabet, or count of them spread evenly (all of them when count is 0 or
/// larger).
std::vector<size_t> validationPositions(const Corpus &corpus, int context, size_t count);

/// Trains a fresh model (initialised from config.seed) with spec's rule.
/// Records a curve point every config.evalEvery steps and writes a progress
/// line about every config.printEvery steps to progress when not null. Throws std::invalid_argument when the optimizer refuses a hyper,
/// std::runtime_error when the training loss stops being finite.
RunResult train(const Corpus &corpus, const TrainConfig &config, const RunSpec &spec, std::ostream *progress);

} // namespace charlm
