#include "App.h"

#include "Corpus.h"
#include "Format.h"
#include "Hypers.h"
#include "Options.h"
#include "RuleSource.h"
#include "LossPlot.h"
#include "Report.h"
#include "Gnuplot.h"
#include "Trainer.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

namespace charlm {
namespace {

void writeCsv(const std::string &path, const std::vector<RunResult> &results) {
  std::ofstream csv(path);
  if (!csv)
    throw std::runtime_error("cannot write '" + path + "': " + std::strerror(errno));
  csv << "rule,step,train_loss,val_loss\n";
  for (const auto &result : results)
    for (const auto &point : result.curve)
      // Quoted: a layout's label has commas (param=bf16,master=f32).
      csv << '"' << result.label << "\"," << point.step << ","
          << (std::isnan(point.trainLoss) ? std::string() : format("%.6f", point.trainLoss)) << ","
          << format("%.6f", point.valLoss) << "\n";
  if (!csv.flush())
    throw std::runtime_error("cannot write '" + path + "': write error");
}

// A rank other than 0 of a data-parallel run: the same runs, in step with
// rank 0 (every optimizer step is collective), without output.
int trainQuietly(const Corpus &corpus, const TrainConfig &config, const std::vector<LoadedRule> &rules,
                 const std::vector<std::map<std::string, double>> &hypers, std::ostream &err) {
  for (size_t r = 0; r < rules.size(); ++r) {
    try {
      train(corpus, config, {rules[r], hypers[r]}, nullptr);
    } catch (const std::exception &e) {
      // Rank 0's err is the one shown; its own run fails the same way when
      // the optimizer's checks fail (they agree across ranks).
      err << "charlm: error: rank " << config.communicator->rank() << ": " << rules[r].runName() << ": " << e.what()
          << "\n";
      return 1;
    }
  }
  return 0;
}

} // namespace

int runTrainer(const std::vector<std::string> &args, std::ostream &out, std::ostream &err,
               std::shared_ptr<optrt::Communicator> communicator) {
  auto usageError = [&](const std::string &message) {
    err << "charlm: error: " << message << "\n(charlm --help lists the options)\n";
    return 2;
  };
  auto inputError = [&](const std::string &message) {
    err << "charlm: error: " << message << "\n";
    return 1;
  };

  Options options;
  try {
    options = parseOptions(args);
  } catch (const UsageError &e) {
    return usageError(e.what());
  }
  if (options.help) {
    out << kUsage;
    return 0;
  }
  if (options.rules.empty())
    options.rules = builtinRules();
  if (options.zero == 1 && !communicator)
    return usageError("--zero 1 runs data-parallel over MPI ranks: start charlm under mpirun (charlm must have "
                      "been built where CMake found MPI)");
  if (options.zero == 0)
    communicator = nullptr; // one process, even under mpirun
  int ranks = communicator ? communicator->size() : 1;
  if (options.batch % ranks != 0)
    return usageError("--batch " + std::to_string(options.batch) + " is not a multiple of the " +
                      std::to_string(ranks) + " ranks: each rank takes an equal slice of every batch");
  bool primary = !communicator || communicator->rank() == 0; // writes the output and the files

  if (options.layouts.empty())
    options.layouts = {"f32"};

  // Everything that can be wrong with the input is found before training.
  std::vector<LoadedRule> loaded;
  std::set<std::string> labels;
  for (const std::string &spec : options.rules) {
    try {
      loaded.push_back(loadRule(spec, options.layouts));
    } catch (const std::exception &e) {
      return inputError(e.what());
    }
    if (!labels.insert(loaded.back().label).second)
      return usageError("two rules of this run are named '" + loaded.back().label +
                        "'; rename the optimizer in one of the files");
  }
  std::vector<std::map<std::string, double>> loadedHypers;
  try {
    loadedHypers = resolveHypers(loaded, options.hypers, options.steps);
  } catch (const UsageError &e) {
    return usageError(e.what());
  }
  // One run per rule and layout, each rule's layouts together.
  std::vector<LoadedRule> rules;
  std::vector<std::map<std::string, double>> hypers;
  for (size_t r = 0; r < loaded.size(); ++r) {
    for (const std::string &layout : options.layouts) {
      const auto &built = loaded[r].kernels->layouts;
      if (std::none_of(built.begin(), built.end(), [&](const auto &l) { return l.name == layout; })) {
        std::string names;
        for (const auto &l : built)
          names += (names.empty() ? "" : ", ") + l.name;
        return inputError(loaded[r].label + " (" + loaded[r].origin + ") has no kernels for layout " + layout +
                          " (it has: " + names + ")");
      }
      rules.push_back(loaded[r]);
      rules.back().layout = layout;
      hypers.push_back(loadedHypers[r]);
    }
  }
  Corpus corpus;
  try {
    corpus = loadCorpus(options.corpus, options.validationFraction);
  } catch (const std::exception &e) {
    return inputError(e.what());
  }
  size_t validationCount = validationPositions(corpus, options.context, 0).size();
  if (validationCount == 0 || corpus.train.size() <= static_cast<size_t>(options.context))
    return inputError("the corpus is too small for a context of " + std::to_string(options.context) + " characters");
  const std::string plotStem = examples::plotStem(options.plot);
  if (primary) {
    std::ofstream probe(plotStem + ".svg");
    if (!probe)
      return inputError("cannot write the plot '" + plotStem + ".svg': " + std::strerror(errno));
  }

  TrainConfig config;
  config.model.vocab = corpus.vocabSize();
  config.model.context = options.context;
  config.model.embed = options.embed;
  config.model.hidden = options.hidden;
  config.steps = options.steps;
  config.batch = options.batch;
  config.warmupSteps = options.warmup >= 0 ? options.warmup : options.steps / 20;
  config.minLrFraction = options.minLr;
  config.clip = options.clip;
  config.lossScale = options.lossScale;
  config.evalEvery = options.evalEvery > 0 ? options.evalEvery : std::max(1, options.steps / 100);
  config.printEvery = std::max(1, options.steps / 10);
  config.evalPositions = options.evalPositions;
  config.seed = options.seed;
  config.threads = options.threads ? options.threads : std::max(1u, std::thread::hardware_concurrency());
  config.communicator = communicator;
  if (!primary)
    return trainQuietly(corpus, config, rules, hypers, err);

  double unigram = corpus.unigramEntropy();
  std::string hidden;
  for (int width : config.model.hidden)
    hidden += (hidden.empty() ? "" : ",") + std::to_string(width);
  out << "corpus     " << options.corpus << ": " << corpus.files.size() << " text files (symbolic links"
      << (corpus.binaryFilesSkipped ? " and " + std::to_string(corpus.binaryFilesSkipped) + " binary files" : "")
      << " skipped), "
      << corpus.train.size() << " training + " << corpus.validation.size() << " validation characters, "
      << corpus.vocabSize() << " distinct in training\n"
      << "           validation: " << validationCount << " characters scored, "
      << corpus.validation.size() - validationCount << " skipped (the first " << options.context
      << ", and those whose window holds one of the " << corpus.unknownValidationChars()
      << " characters that training lacks)\n"
      << format("           unigram entropy of the training split: %.4f nats/char\n", unigram)
      << "model      context " << config.model.context << " x embed " << config.model.embed << " -> tanh " << hidden
      << " -> " << config.model.vocab << " logits: " << config.model.numParams() << " parameters\n"
      << "training   " << config.steps << " steps of " << config.batch << " characters, lr warm-up "
      << config.warmupSteps << " steps then cosine to " << config.minLrFraction << " x peak, seed " << config.seed
      << ", " << config.threads << " threads"
      << (communicator ? format(" per rank; data-parallel over %d ranks (%d characters each), optimizer state "
                                "sharded (ZeRO-1)",
                                ranks, config.batch / ranks)
                       : std::string())
      << "\n";
  if (config.clip > 0 || config.lossScale != 0) {
    out << "step      ";
    if (config.clip > 0)
      out << " gradients clipped to global norm " << format("%g", config.clip) << " (fused);";
    if (config.lossScale < 0)
      out << " dynamic loss scaling (GradScaler's defaults), Inf/NaN steps skipped";
    else if (config.lossScale > 0)
      out << " loss scale " << format("%g", config.lossScale) << ", Inf/NaN steps skipped";
    out << "\n";
  }
  for (size_t r = 0; r < rules.size(); ++r) {
    out << "rule       " << rules[r].runName() << " (" << rules[r].origin << "): "
        << describeHypers(rules[r], hypers[r]) << "\n";
  }
  out << "\n" << std::flush;

  std::vector<RunResult> results;
  for (size_t r = 0; r < rules.size(); ++r) {
    try {
      results.push_back(train(corpus, config, {rules[r], hypers[r]}, &out));
    } catch (const std::exception &e) {
      return inputError(rules[r].runName() + ": " + e.what());
    }
  }

  out << "\n";
  printResultTable(results, out);
  if (config.lossScale != 0)
    for (const RunResult &result : results)
      out << result.label << ": skipped " << result.skippedSteps << " of " << result.steps
          << " steps (a gradient overflowed the loss scale)\n";
  if (communicator) {
    out << "ZeRO-1 over " << ranks << " ranks: the master and state bytes are one rank's (rank 0's) share; all "
        << "ranks together keep";
    for (const RunResult &result : results)
      out << format(" %.2f (%s)", result.memoryAllRanks.master + result.memoryAllRanks.state, result.label.c_str());
    out << " bytes of master and state per parameter\n";
  }
  out << format("unigram entropy of the training split: %.4f nats/char (%.4f bits); validation loss over all %zu "
                "scored validation characters; bytes per parameter from the runtime's memory report\n",
                unigram, unigram / std::log(2.0), validationCount);

  std::vector<Match> matches = tokensToMatch(results);
  if (!matches.empty()) {
    out << "tokens to match (the AdEMAMix paper's measure; validation loss on the curves' " << config.evalPositions
        << " characters):\n";
    printTokensToMatch(matches, config.batch, out);
  }

  try {
    drawLossCurves(results, unigram, config.batch, plotStem);
    if (!options.csv.empty())
      writeCsv(options.csv, results);
  } catch (const std::exception &e) {
    return inputError(e.what());
  }
  std::error_code ec;
  auto absolute = std::filesystem::absolute(plotStem, ec);
  std::string shown = ec ? plotStem : absolute.string();
  out << "loss curves: " << shown << ".svg and " << shown << ".png (gnuplot script " << shown << ".gp)\n";
  if (!options.csv.empty())
    out << "curves as CSV: " << options.csv << "\n";
  return 0;
}

} // namespace charlm
