#include "Options.h"

#include "optrt/Layout.h"
#include "optrt/Spelling.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <limits>

namespace charlm {

const char *const kUsage = R"(usage: charlm [options]

Trains a character-level language model (an MLP over a window of characters)
on a text corpus with each rule in turn, from the same initialisation and on
the same batches, then prints a table and draws the loss curves (SVG and PNG,
with gnuplot).

rules:
  --rule NAME|FILE      a built-in rule (adamw, ademamix) or a .opt file, compiled
                        when the trainer starts (repeatable; default: adamw and
                        ademamix)
  --hyper [RULE:]NAME=VALUE
                        set a hyper for every rule of the run that has NAME, or
                        for RULE only (repeatable); lr is the schedule's peak
  --layout TEXT         state storage to run every rule with (repeatable: one
                        run per rule and layout; default f32): state=bf16,
                        state=q8 (8-bit block-wise), or per state, e.g.
                        m1=q8,m2=bf16 (docs/layouts.md); also mixed precision:
                        param=bf16,master=f32 (the model computes with the bf16
                        params) or param=f16,grad=f16,master=f32 (with
                        --loss-scale). Built-in rules carry f32, state=bf16,
                        state=q8, these two and param=bf16,grad=bf16,master=f32
                        with and without state=q8
data and model:
  --corpus PATH         a file, or a directory whose text files are read in sorted
                        order (default /usr/share/games/fortunes, Debian's
                        fortunes package: 2.6 MB of quotations, poems, jokes)
  --validation F        fraction of each file held out (default 0.1)
  --context N           characters of context (default 16)
  --embed N             embedding width (default 16)
  --hidden N[,N...]     widths of the tanh layers (default 512,512)
training:
  --steps N             optimizer steps per rule (default 5000)
  --batch N             characters per step (default 256)
  --warmup N            LR warm-up steps (default steps/20), then cosine decay
  --min-lr F            the decay's floor as a fraction of the peak (default 0.1)
  --clip NORM           clip the gradients by their global L2 norm, fused into the
                        optimizer's step (torch's clip_grad_norm_)
  --loss-scale dynamic|S
                        multiply the loss by a scale before the backward pass and
                        divide it out in the step; dynamic: torch GradScaler's
                        (2^16, halved on an overflow, doubled after 2000 clean
                        steps); a step with an Inf/NaN gradient is skipped
  --eval-every N        steps between curve points (default steps/100; a progress
                        line every steps/10)
  --eval-chars N        validation characters per curve point (default 4096;
                        the final loss uses all of them)
  --seed N              initialisation and batch order (default 1)
  --threads N           threads for the model and the optimizer (default: all cores)
  --zero 1              data-parallel under mpirun: each rank computes the
                        gradients of its slice of every batch (--batch must be
                        a multiple of the ranks), and the optimizer state is
                        sharded across the ranks (ZeRO stage 1, docs/sharding.md);
                        e.g. mpirun -np 2 charlm --zero 1 --threads 1
output:
  --plot FILE           the loss curves: FILE.svg and FILE.png, with the data and
                        the gnuplot script beside them (default charlm-loss)
  --csv FILE            the curves as CSV as well
  --help                this text
)";

namespace {

/// Every option of kUsage, for "did you mean".
std::vector<std::string> optionNames() {
  std::vector<std::string> names;
  std::string usage = kUsage;
  for (size_t at = usage.find("\n  --"); at != std::string::npos; at = usage.find("\n  --", at + 1)) {
    size_t start = at + 3, end = usage.find_first_of(" \n", start);
    names.push_back(usage.substr(start, end - start));
  }
  return names;
}

long long parseInteger(const std::string &option, const std::string &text, long long low, long long high) {
  errno = 0;
  char *end = nullptr;
  long long value = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end || errno || value < low || value > high)
    throw UsageError(option + " expects an integer in [" + std::to_string(low) + ", " + std::to_string(high) +
                     "], got '" + text + "'");
  return value;
}

double parseNumber(const std::string &option, const std::string &text) {
  errno = 0;
  char *end = nullptr;
  double value = std::strtod(text.c_str(), &end);
  if (text.empty() || *end || errno)
    throw UsageError(option + " expects a number, got '" + text + "'");
  return value;
}

HyperSetting parseHyper(const std::string &text) {
  size_t equals = text.find('=');
  if (equals == std::string::npos || equals == 0)
    throw UsageError("--hyper expects [RULE:]NAME=VALUE, got '" + text + "'");
  std::string target = text.substr(0, equals);
  HyperSetting setting;
  size_t colon = target.find(':');
  if (colon != std::string::npos) {
    setting.rule = target.substr(0, colon);
    target = target.substr(colon + 1);
    if (setting.rule.empty() || target.empty())
      throw UsageError("--hyper expects [RULE:]NAME=VALUE, got '" + text + "'");
  }
  setting.name = target;
  setting.value = parseNumber("--hyper " + setting.name, text.substr(equals + 1));
  return setting;
}

/// The canonical form of a layout the trainer can run: params in f32, or 16
/// bits with an f32 master (the model computes with their f32 values);
/// grads in f32 or 16 bits.
std::string parseLayout(const std::string &text) {
  optrt::Layout layout;
  try {
    layout = optrt::Layout::parse(text);
  } catch (const std::invalid_argument &e) {
    throw UsageError(std::string("--layout: ") + e.what());
  }
  if (layout.param != optrt::Dtype::F32 && layout.master != optrt::Dtype::F32)
    throw UsageError("--layout " + text +
                     ": charlm keeps 16-bit params with an f32 master (master=f32), e.g. param=bf16,master=f32");
  return layout.str();
}

} // namespace

Options parseOptions(const std::vector<std::string> &args) {
  Options options;
  constexpr long long kMax = std::numeric_limits<int>::max();
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string &arg = args[i];
    auto value = [&]() -> std::string {
      if (i + 1 == args.size())
        throw UsageError(arg + " needs a value");
      return args[++i];
    };
    if (arg == "--help" || arg == "-h") {
      options.help = true;
    } else if (arg == "--rule") {
      options.rules.push_back(value());
    } else if (arg == "--hyper") {
      options.hypers.push_back(parseHyper(value()));
    } else if (arg == "--layout") {
      std::string layout = parseLayout(value());
      if (std::find(options.layouts.begin(), options.layouts.end(), layout) != options.layouts.end())
        throw UsageError("--layout " + layout + " is given twice");
      options.layouts.push_back(layout);
    } else if (arg == "--corpus") {
      options.corpus = value();
    } else if (arg == "--validation") {
      options.validationFraction = parseNumber(arg, value());
      if (!(options.validationFraction > 0 && options.validationFraction < 1))
        throw UsageError("--validation expects a fraction strictly between 0 and 1");
    } else if (arg == "--context") {
      options.context = parseInteger(arg, value(), 1, 256);
    } else if (arg == "--embed") {
      options.embed = parseInteger(arg, value(), 1, 1024);
    } else if (arg == "--hidden") {
      std::string list = value();
      options.hidden.clear();
      for (size_t start = 0; start <= list.size();) {
        size_t comma = std::min(list.find(',', start), list.size());
        options.hidden.push_back(parseInteger(arg, list.substr(start, comma - start), 1, 16384));
        start = comma + 1;
      }
    } else if (arg == "--steps") {
      options.steps = parseInteger(arg, value(), 1, kMax);
    } else if (arg == "--batch") {
      options.batch = parseInteger(arg, value(), 1, 1 << 20);
    } else if (arg == "--warmup") {
      options.warmup = parseInteger(arg, value(), 0, kMax);
    } else if (arg == "--min-lr") {
      options.minLr = parseNumber(arg, value());
      if (!(options.minLr >= 0 && options.minLr <= 1))
        throw UsageError("--min-lr expects a fraction in [0, 1]");
    } else if (arg == "--clip") {
      options.clip = parseNumber(arg, value());
      if (!(options.clip > 0) || !std::isfinite(options.clip))
        throw UsageError("--clip expects a finite positive norm");
    } else if (arg == "--loss-scale") {
      std::string text = value();
      options.lossScale = text == "dynamic" ? -1 : parseNumber(arg, text);
      if (options.lossScale != -1 && (!(options.lossScale > 0) || !std::isfinite(options.lossScale)))
        throw UsageError("--loss-scale expects 'dynamic' or a finite positive scale, got '" + text + "'");
    } else if (arg == "--eval-every") {
      options.evalEvery = parseInteger(arg, value(), 1, kMax);
    } else if (arg == "--eval-chars") {
      options.evalPositions = parseInteger(arg, value(), 1, kMax);
    } else if (arg == "--seed") {
      options.seed = parseInteger(arg, value(), 0, std::numeric_limits<long long>::max());
    } else if (arg == "--threads") {
      options.threads = parseInteger(arg, value(), 1, 1024);
    } else if (arg == "--zero") {
      options.zero = parseInteger(arg, value(), 0, kMax);
      if (options.zero > 1)
        throw UsageError("--zero " + std::to_string(options.zero) +
                         ": only stage 1 (the optimizer state sharded) exists; 0 turns it off");
    } else if (arg == "--plot") {
      options.plot = value();
    } else if (arg == "--csv") {
      options.csv = value();
    } else {
      // The help hint is the caller's, printed once under every usage error.
      throw UsageError("unknown option '" + arg + "'" + optrt::didYouMean(arg, optionNames()));
    }
  }
  if (options.warmup > options.steps)
    throw UsageError("--warmup (" + std::to_string(options.warmup) + ") exceeds --steps (" +
                     std::to_string(options.steps) + ")");
  return options;
}

} // namespace charlm
