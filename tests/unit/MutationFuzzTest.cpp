// A bounded random-mutation test of the front end: every rule of the library,
// mutated at random (bytes deleted, duplicated, swapped, inserted; tokens
// inserted; the file truncated), goes through compileSource. It must never
// throw or crash, must either return a rule or print at least one error, and
// every diagnostic must have the clang shape: a `name:line:col: severity: `
// header, the source line, and a caret line. Mutants that still check are
// run through the interpreter. Then hostile inputs, each of which must come
// back quickly: the parser's nesting limits at work.
#include "optdsl/Interpreter.h"
#include "optdsl/Parser.h"
#include "optdsl/Sema.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <random>
#include <cctype>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

namespace optdsl {
namespace {

using Clock = std::chrono::steady_clock;

double threadCpuSeconds() {
  timespec now{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
  return static_cast<double>(now.tv_sec) + 1e-9 * static_cast<double>(now.tv_nsec);
}

constexpr const char *kFileName = "fuzz.opt";

/// Hostile inputs must come back within a second of CPU time in an
/// optimized build (linear work takes milliseconds: the limit catches
/// quadratic blow-ups, not speed); sanitizers and -O0 are several times
/// slower. CPU time of this thread, not wall time, so a busy machine cannot
/// fail the test.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__) || !defined(__OPTIMIZE__)
constexpr double kSecondsLimit = 10.0;
#else
constexpr double kSecondsLimit = 1.0;
#endif

/// The fixed seed and a fresh one; OPTDSL_FUZZ_SEED=N runs only seed N.
std::vector<uint32_t> fuzzSeeds() {
  if (const char *env = std::getenv("OPTDSL_FUZZ_SEED"))
    return {static_cast<uint32_t>(std::strtoul(env, nullptr, 10))};
  return {20240611u, std::random_device{}()};
}

std::vector<std::pair<std::string, std::string>> libraryFiles() {
  std::vector<std::pair<std::string, std::string>> files;
  for (const auto &entry : std::filesystem::directory_iterator(OPTDSL_DSL_DIR)) {
    if (entry.path().extension() != ".opt")
      continue;
    std::ifstream in(entry.path(), std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    files.emplace_back(entry.path().filename().string(), text.str());
  }
  std::sort(files.begin(), files.end());
  return files;
}

std::vector<std::string> splitLines(const std::string &text) {
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) {
      lines.push_back(text.substr(start)); // no final newline: reported below
      break;
    }
    lines.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return lines;
}

/// A source line as diagnostics show it: control bytes as '?'.
std::string shown(std::string_view line) {
  std::string out(line);
  for (char &c : out)
    if ((static_cast<unsigned char>(c) < 0x20 && c != '\t') || c == 0x7f)
      c = '?';
  return out;
}

struct Header {
  std::string file;
  uint32_t line = 0;
  size_t column = 0;
  std::string severity;
};

/// Parses `FILE:LINE:COL: SEVERITY: MESSAGE` (by hand: std::regex
/// recurses per character and overflows the stack on a 1 MB message). FILE
/// is fuzz.opt or a transform file it applies.
std::optional<Header> parseHeader(const std::string &text) {
  size_t colon = text.find(':');
  if (colon == std::string::npos || colon == 0)
    return std::nullopt;
  size_t at = colon + 1;
  auto number = [&](size_t &value) {
    size_t start = at;
    while (at < text.size() && std::isdigit(static_cast<unsigned char>(text[at])))
      ++at;
    if (at == start || at - start > 9 || at >= text.size() || text[at] != ':')
      return false;
    value = std::stoul(text.substr(start, at - start));
    ++at;
    return true;
  };
  Header header;
  header.file = text.substr(0, colon);
  size_t line = 0;
  if (!number(line) || !number(header.column))
    return std::nullopt;
  header.line = static_cast<uint32_t>(line);
  for (const char *severity : {"error", "warning", "note"}) {
    std::string expected = std::string(" ") + severity + ": ";
    if (text.compare(at, expected.size(), expected) == 0 && text.size() > at + expected.size()) {
      header.severity = severity;
      return header;
    }
  }
  return std::nullopt;
}

/// Checks the diagnostics rendered for `file`: a sequence of (header, source
/// line, caret line) triples, and at least one error when `failed`, none
/// when not. Returns an empty string when all is well, else what is wrong.
std::string checkDiagnostics(const std::string &output, bool failed, const SourceFile &file) {
  if (!output.empty() && output.back() != '\n')
    return "the output does not end with a newline";
  std::vector<std::string> lines = splitLines(output);
  if (lines.size() % 3 != 0)
    return "the output has " + std::to_string(lines.size()) + " lines, not a multiple of 3";
  bool sawError = false;
  for (size_t i = 0; i < lines.size(); i += 3) {
    std::optional<Header> header = parseHeader(lines[i]);
    if (!header)
      return "line " + std::to_string(i + 1) + " is not a diagnostic header: " +
             lines[i].substr(0, 200);
    sawError = sawError || header->severity == "error";
    const std::string &source = lines[i + 1];
    const std::string &marker = lines[i + 2];
    size_t caretIndex = marker.find('^');
    if (caretIndex == std::string::npos ||
        marker.find_first_not_of(" \t") != caretIndex ||
        marker.find_first_not_of('~', caretIndex + 1) != std::string::npos)
      return "line " + std::to_string(i + 3) + " is not a caret line: '" + marker + "'";
    uint32_t lineNumber = header->line;
    size_t column = header->column;
    if (lineNumber == 0 || column == 0)
      return "line and column are 1-based: " + lines[i];
    // The line in the file the header names (the rule's, or a transform's).
    uint32_t offset = file.offsetIn(header->file, {lineNumber, 1});
    if (offset == UINT32_MAX)
      return "a diagnostic in a file the rule does not include: " + lines[i].substr(0, 200);
    std::string_view real = file.locate(offset).first->lineText(lineNumber);
    if (marker.size() > std::max(source.size(), caretIndex) + 1)
      return "the tildes run past the end of the line: '" + lines[i] + "'";
    for (char c : source)
      if ((static_cast<unsigned char>(c) < 0x20 && c != '\t') || c == 0x7f)
        return "the source line shows a control byte: '" + lines[i] + "'";
    // Multi-byte characters take one column: check positions on ASCII only.
    bool ascii = std::all_of(source.begin(), source.end(),
                             [](char c) { return static_cast<unsigned char>(c) < 0x80; });
    if (source.size() >= real.size()) {
      if (source != shown(real))
        return "the source line of '" + lines[i] + "' is not line " + std::to_string(lineNumber);
      if (ascii && caretIndex + 1 != column)
        return "the caret of '" + lines[i] + "' is in column " + std::to_string(caretIndex + 1);
    } else if (ascii) {
      // A long line may be shown in part: the part around the caret.
      if (caretIndex + 1 > column || column - 1 - caretIndex > real.size() ||
          shown(real.substr(column - 1 - caretIndex, source.size())) != source)
        return "the part of line " + std::to_string(lineNumber) + " shown for '" + lines[i] +
               "' is not where the caret says";
    }
  }
  if (failed && !sawError)
    return "no rule, and no error";
  if (!failed && sawError)
    return "a rule, yet an error";
  return "";
}

/// Steps a rule that checked, twice, on two small random tensors.
void runMutant(const CheckedRule &rule, std::mt19937 &rng) {
  Interpreter interpreter(rule);
  HyperValues hypers = interpreter.defaultHypers();
  std::uniform_real_distribution<double> value(-2, 2);
  std::vector<TensorState> tensors;
  std::vector<std::vector<double>> grads;
  // A single element, and a 2 x 3 matrix (rows and columns differ).
  for (std::vector<int64_t> shape : {std::vector<int64_t>{}, std::vector<int64_t>{2, 3}}) {
    size_t size = shape.empty() ? 1 : 6;
    std::vector<double> param(size), grad(size);
    for (size_t i = 0; i < size; ++i) {
      param[i] = value(rng);
      grad[i] = value(rng);
    }
    tensors.push_back(interpreter.initTensor(param, hypers, shape));
    grads.push_back(grad);
  }
  // Every input at step 1; at step 2 only those the rule needs (it tests
  // the others with given()), so both paths run.
  for (int64_t step = 1; step <= 2; ++step) {
    StepInputs inputs(rule.inputs.size());
    for (size_t slot = 0; slot < rule.inputs.size(); ++slot)
      if (step == 1 || !rule.symbol(rule.inputs[slot]).tested)
        for (const std::vector<double> &grad : grads)
          inputs[slot].push_back(grad);
    interpreter.step(tensors, grads, step, hypers, inputs);
  }
  for (const TensorState &tensor : tensors) {
    ASSERT_EQ(tensor.param.size(), grads[&tensor - tensors.data()].size());
    ASSERT_EQ(tensor.states.size(), rule.states.size());
    for (size_t slot = 0; slot < rule.states.size(); ++slot) {
      // One value per element, or per row (2) or column (3) of the matrix.
      Axes axes = rule.symbol(rule.states[slot]).axes;
      size_t expected = tensor.shape.empty() ? 1 : axes == kElementAxes ? 6 : axes & kRowAxis ? 2 : 3;
      ASSERT_EQ(tensor.states[slot].size(), expected);
    }
    ASSERT_EQ(tensor.scalarStates.size(), rule.scalarStates.size());
  }
}

class Mutator {
public:
  explicit Mutator(uint32_t seed) : rng_(seed) {}

  std::string mutate(std::string text) {
    int count = pick(1, 4);
    for (int i = 0; i < count; ++i)
      mutateOnce(text);
    return text;
  }

  std::mt19937 &rng() { return rng_; }

private:
  int pick(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }
  size_t position(const std::string &text) {
    return std::uniform_int_distribution<size_t>(0, text.size())(rng_);
  }
  /// A range [begin, begin + length) inside text, mostly short.
  std::pair<size_t, size_t> range(const std::string &text) {
    size_t begin = position(text);
    size_t maxLength = std::min<size_t>(text.size() - begin, pick(0, 3) == 0 ? 200 : 12);
    size_t length = std::uniform_int_distribution<size_t>(0, maxLength)(rng_);
    return {begin, length};
  }

  void mutateOnce(std::string &text) {
    static const char *const tokens[] = {
        "(",      ")",      "?",    ":",        ";",        "}",       "{",     "^",
        "norm(",  "sum(",   "max(", "mean(",    "sqrt(",    "1e999",   "0x",    "1e-999",
        "0x1.8p3", ".5",    "5.",   "1e",       "#",        "\n",      "=",     "==",
        "!=",     "<=",     "&&",   "||",       "!",        "-",       "+",     "*",
        "/",      ",",      "let ", "state ",   "scalar ",  "hyper ",  "param", "grad",
        "step",   "optimizer ", "x", " ? 1 : ", "((((((((", "))))))))", "--",   "\r\n",
        "\t",     "\xc3\xa9", "\xff", "lr",     "sum",      "1f",      "0x1p-1074"};
    switch (pick(0, 7)) {
    case 0: { // delete a range
      auto [begin, length] = range(text);
      text.erase(begin, length);
      break;
    }
    case 1: { // duplicate a range in place
      auto [begin, length] = range(text);
      text.insert(begin, text.substr(begin, length));
      break;
    }
    case 2: { // swap two ranges
      auto [a, aLength] = range(text);
      auto [b, bLength] = range(text);
      if (a > b) {
        std::swap(a, b);
        std::swap(aLength, bLength);
      }
      if (a + aLength > b)
        break;
      std::string first = text.substr(a, aLength), second = text.substr(b, bLength);
      text.replace(b, bLength, first);
      text.replace(a, aLength, second);
      break;
    }
    case 3: { // random bytes: NUL, controls, ASCII, and 0x80-0xFF
      std::string bytes;
      for (int i = pick(1, 6); i > 0; --i) {
        switch (pick(0, 3)) {
        case 0: bytes += '\0'; break;
        case 1: bytes += static_cast<char>(pick(0x80, 0xFF)); break;
        case 2: bytes += static_cast<char>(pick(0x01, 0x1F)); break;
        default: bytes += static_cast<char>(pick(0x20, 0x7E)); break;
        }
      }
      text.insert(position(text), bytes);
      break;
    }
    case 4:
    case 5: // tokens, twice as often
      text.insert(position(text), tokens[pick(0, std::size(tokens) - 1)]);
      break;
    case 6: // truncate
      text.resize(position(text));
      break;
    default: { // replace one byte with another from the file
      if (text.empty())
        break;
      size_t at = position(text) % text.size();
      text[at] = text[position(text) % text.size()];
      break;
    }
    }
  }

  std::mt19937 rng_;
};

struct Outcome {
  bool threw = true; // until compileAndCheck returns
  bool compiled = false;
  std::string problem; // from checkDiagnostics
  double seconds = 0;  // CPU time of compileSource
  size_t outputBytes = 0;
};

/// Compiles `text` (and steps the rule when it checks and `rng` is given).
/// Exceptions are left to the caller's EXPECT_NO_THROW. A crash cannot be
/// reported: with OPTDSL_FUZZ_DUMP=FILE each input is written to FILE first,
/// so that after a crash FILE holds the input that crashed.
Outcome compileAndCheck(const std::string &text, std::mt19937 *rng) {
  if (const char *dump = std::getenv("OPTDSL_FUZZ_DUMP"))
    std::ofstream(dump, std::ios::binary) << text;
  Outcome outcome;
  auto file = std::make_shared<const SourceFile>(kFileName, text);
  std::ostringstream diagnostics;
  double start = threadCpuSeconds();
  std::optional<CheckedRule> rule = compileSource(file, diagnostics);
  outcome.seconds = threadCpuSeconds() - start;
  outcome.compiled = rule.has_value();
  outcome.outputBytes = diagnostics.str().size();
  outcome.problem = checkDiagnostics(diagnostics.str(), !rule, *file);
  if (rule && rng)
    runMutant(*rule, *rng);
  outcome.threw = false;
  return outcome;
}

/// Escapes a mutant for a failure message: printable ASCII as is.
std::string escaped(const std::string &text, size_t limit = 2000) {
  std::ostringstream out;
  for (size_t i = 0; i < text.size() && i < limit; ++i) {
    unsigned char c = static_cast<unsigned char>(text[i]);
    if (c == '\n')
      out << "\\n\n";
    else if (c >= 0x20 && c < 0x7f && c != '\\')
      out << c;
    else
      out << "\\x" << std::hex << static_cast<int>(c) << std::dec;
  }
  if (text.size() > limit)
    out << "... (" << text.size() << " bytes)";
  return out.str();
}

TEST(MutationFuzz, LibraryRulesSurviveRandomMutation) {
  const auto files = libraryFiles();
  ASSERT_GE(files.size(), 10u);
  // About a second per seed on an optimized build; the budget bounds a slow
  // (sanitizer) build.
  constexpr int kMutantsPerFile = 2000;
  constexpr double kBudgetSeconds = 1.5;
  for (uint32_t seed : fuzzSeeds()) {
    SCOPED_TRACE("seed " + std::to_string(seed) + " (OPTDSL_FUZZ_SEED=" + std::to_string(seed) +
                 " reruns it)");
    std::cout << "[ seed     ] MutationFuzz seed " << seed << std::endl;
    Mutator mutator(seed);
    auto start = Clock::now();
    int mutants = 0, compiled = 0, failures = 0;
    for (int round = 0; round < kMutantsPerFile; ++round) {
      if (std::chrono::duration<double>(Clock::now() - start).count() > kBudgetSeconds)
        break;
      for (const auto &[name, original] : files) {
        std::string mutant = mutator.mutate(original);
        ++mutants;
        Outcome outcome;
        EXPECT_NO_THROW(outcome = compileAndCheck(mutant, &mutator.rng()))
            << name << " mutant:\n" << escaped(mutant);
        EXPECT_EQ(outcome.problem, "") << name << " mutant:\n" << escaped(mutant);
        compiled += outcome.compiled;
        if (outcome.threw || !outcome.problem.empty())
          ++failures;
        if (failures >= 5)
          break; // enough to go on
      }
      if (failures >= 5)
        break;
    }
    std::cout << "[ seed     ] " << mutants << " mutants, " << compiled << " still checked"
              << std::endl;
    // The mutations are neither all fatal nor all harmless.
    EXPECT_GT(compiled, 0);
    EXPECT_LT(compiled, mutants);
  }
}

TEST(MutationFuzz, UnmutatedLibraryChecksCleanly) {
  std::mt19937 rng(1);
  for (const auto &[name, text] : libraryFiles()) {
    Outcome outcome = compileAndCheck(text, &rng);
    EXPECT_TRUE(outcome.compiled) << name;
    EXPECT_EQ(outcome.problem, "") << name;
  }
}

TEST(MutationFuzz, TheCheckerCatchesMalformedOutput) {
  // The checks above would pass vacuously if checkDiagnostics accepted anything.
  SourceFile file(kFileName, "ab c\nline two is longer\n");
  auto check = [&](const std::string &output, bool failed) {
    return checkDiagnostics(output, failed, file);
  };
  EXPECT_EQ(check("", false), "");
  EXPECT_NE(check("", true), "") << "failed silently";
  EXPECT_EQ(check("fuzz.opt:1:3: error: x\nab c\n  ^\n", true), "");
  EXPECT_EQ(check("fuzz.opt:2:6: error: x\nline two is longer\n     ^~~\n", true), "");
  EXPECT_EQ(check("fuzz.opt:2:6: error: x\ntwo is\n^~~\n", true), "") << "a part of line 2";
  EXPECT_EQ(check("fuzz.opt:2:6: error: x\ne two\n  ^~~\n", true), "") << "a part of line 2";
  EXPECT_NE(check("fuzz.opt:2:6: error: x\ntwo is\n ^~~\n", true), "") << "the wrong part";
  EXPECT_NE(check("fuzz.opt:1:3: error: x\nab c\n", true), "") << "no caret line";
  EXPECT_NE(check("fuzz.opt:1:3: error: x\nab c\n ^\n", true), "") << "wrong column";
  EXPECT_NE(check("fuzz.opt:1:3: error: x\nab\n  ^~~~~\n", true), "") << "tildes";
  EXPECT_NE(check("fuzz.opt:2:3: error: x\nab c\n  ^\n", true), "") << "wrong line";
  EXPECT_NE(check("fuzz.opt:1:3: error: x\nab c\n  x\n", true), "") << "not a caret";
  EXPECT_NE(check("other.opt:1:3: error: x\nab c\n  ^\n", true), "") << "file name";
  EXPECT_NE(check("fuzz.opt:1:3: remark: x\nab c\n  ^\n", true), "") << "severity";
  EXPECT_NE(check("fuzz.opt:1:3: warning: x\nab c\n  ^\n", true), "") << "no error";
  EXPECT_NE(check("fuzz.opt:1:3: error: x\nab c\n  ^\n", false), "") << "a rule and an error";
  EXPECT_NE(check("fuzz.opt:1:3: error: x\nab c\n  ^", true), "") << "no final newline";
}

// --- Hostile inputs ---------------------------------------------------------

std::string repeat(const std::string &piece, size_t times) {
  std::string out;
  out.reserve(piece.size() * times);
  for (size_t i = 0; i < times; ++i)
    out += piece;
  return out;
}

std::string randomBytes(size_t size, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string bytes(size, '\0');
  for (char &c : bytes)
    c = static_cast<char>(rng());
  return bytes;
}

Outcome expectQuickAndClean(const std::string &what, const std::string &text,
                            bool mayCompile = false) {
  SCOPED_TRACE(what);
  Outcome outcome;
  EXPECT_NO_THROW(outcome = compileAndCheck(text, nullptr));
  double seconds = outcome.seconds;
  EXPECT_EQ(outcome.problem, "");
  if (!mayCompile)
    EXPECT_FALSE(outcome.compiled);
  EXPECT_LT(seconds, kSecondsLimit) << "took " << seconds << " s";
  if (std::getenv("OPTDSL_FUZZ_TIMES"))
    std::cout << "[ time     ] " << what << ": " << seconds << " s" << std::endl;
  return outcome;
}

const std::string kHeader = "optimizer hostile { hyper a = 1; param = ";

TEST(MutationFuzzHostile, Empty) {
  expectQuickAndClean("empty", "");
  expectQuickAndClean("blank", " \n\t\r\n");
  expectQuickAndClean("a comment", "# nothing here");
  expectQuickAndClean("NUL", std::string(1, '\0'));
}

TEST(MutationFuzzHostile, AMegabyteOfOpenParentheses) {
  expectQuickAndClean("at the top", std::string(1 << 20, '('));
  expectQuickAndClean("in a statement", kHeader + std::string(1 << 20, '('));
  expectQuickAndClean("closed", kHeader + std::string(1 << 19, '(') + "1" +
                                    std::string(1 << 19, ')') + "; }");
}

TEST(MutationFuzzHostile, LongChains) {
  expectQuickAndClean("1+1+... 200000 terms", kHeader + "1" + repeat("+1", 199999) + "; }");
  expectQuickAndClean("a*a*... 200000 terms", kHeader + "a" + repeat("*a", 199999) + "; }");
  expectQuickAndClean("a^a^... 200000 terms", kHeader + "a" + repeat("^a", 199999) + "; }");
  expectQuickAndClean("a<a<... 200000 terms", kHeader + "a" + repeat("<a", 199999) + "; }");
  expectQuickAndClean("f(a,a,...) 200000 arguments",
                      kHeader + "max(a" + repeat(",a", 199999) + "); }");
  // Within the limit, a long flat chain is fine.
  expectQuickAndClean("1+1+... 200 terms", kHeader + "param" + repeat("+1", 199) + "; }", true);
}

TEST(MutationFuzzHostile, ManyUnaryOperators) {
  expectQuickAndClean("100000 unary minuses", kHeader + std::string(100000, '-') + "1; }");
  expectQuickAndClean("100000 nots", kHeader + std::string(100000, '!') + "1; }");
  expectQuickAndClean("minus, space, minus", kHeader + repeat("- ", 100000) + "1; }");
  expectQuickAndClean("2^-----1", kHeader + "2^" + std::string(100000, '-') + "1; }");
}

TEST(MutationFuzzHostile, NestedConditionals) {
  expectQuickAndClean("10000 nested 'a ? ('", kHeader + repeat("a ? (", 10000) + "1; }");
  expectQuickAndClean("10000 'a ? a : '", kHeader + repeat("a ? a : ", 10000) + "1; }");
  expectQuickAndClean("10000 'a ? '", kHeader + repeat("a ? ", 10000) + "1" +
                                         repeat(" : 2", 10000) + "; }");
  expectQuickAndClean("10000 nested calls", kHeader + repeat("sqrt(", 10000) + "a" +
                                               std::string(10000, ')') + "; }");
}

TEST(MutationFuzzHostile, AMegabyteOfRandomBytes) {
  for (uint32_t seed : {1u, 2u, 3u}) {
    std::string bytes = randomBytes(1 << 20, seed);
    expectQuickAndClean("at the top, seed " + std::to_string(seed), bytes);
    expectQuickAndClean("in the rule, seed " + std::to_string(seed), kHeader + "a; " + bytes);
  }
  // Printable noise: mostly tokens, so the parser works harder.
  std::mt19937 rng(4);
  const std::string alphabet = "abcxyz019.e+-*/^()?:;,=<>!&| \n#";
  std::string noise(1 << 20, ' ');
  for (char &c : noise)
    c = alphabet[rng() % alphabet.size()];
  expectQuickAndClean("printable noise", "optimizer noise { " + noise + " }");
}

TEST(MutationFuzzHostile, UnterminatedInput) {
  expectQuickAndClean("unterminated block", "optimizer t { hyper lr = 1; param = param - lr * grad;");
  expectQuickAndClean("unterminated statement", "optimizer t { param = param - ");
  expectQuickAndClean("unterminated comment", "optimizer t { param = param; # no end");
  expectQuickAndClean("header only", "optimizer t {");
  expectQuickAndClean("keyword only", "optimizer");
}

TEST(MutationFuzzHostile, ManyErrorsOnOneLongLine) {
  // 20000 errors on one 40 KB line: each diagnostic shows its source line, so
  // showing all of the line every time would print 800 MB. checkDiagnostics
  // checks that the part shown is the part around the caret.
  Outcome statements =
      expectQuickAndClean("x; x; x; ...", "optimizer t { " + repeat("x;", 20000) + " }");
  EXPECT_LT(statements.outputBytes, 40u << 20);
  EXPECT_GT(statements.outputBytes, 20000u * 3 * 40) << "every error is still reported";
  // Twice as many: the time per error must not grow with the line.
  expectQuickAndClean("x; x; x; ... 40000", "optimizer t { " + repeat("x;", 40000) + " }");
  Outcome names =
      expectQuickAndClean("unknown names", "optimizer t { " + repeat("param = q;", 4000) + " }");
  EXPECT_LT(names.outputBytes, 10u << 20);
  // A long line with multi-byte characters (shown from a character start).
  expectQuickAndClean("UTF-8", "optimizer t { " + repeat("\xc3\xa9;", 3000) + " }");
}

TEST(MutationFuzzHostile, ThousandsOfNamesAndMisspellings) {
  // Each unknown name is looked up among the lets and offered a "did you
  // mean" from every name in scope: that must not be quadratic.
  std::string lets, assignments;
  for (int i = 0; i < 20000; ++i) {
    lets += "let v" + std::to_string(i) + " = q" + std::to_string(i) + ";\n";
    assignments += "w" + std::to_string(i) + " = grad;\n";
  }
  expectQuickAndClean("20000 lets of unknown names", "optimizer t {\n" + lets + "param = grad; }");
  expectQuickAndClean("20000 assignments to unknown names",
                      "optimizer t {\n state m;\n" + assignments + "param = grad; }");
  expectQuickAndClean("20000 uses before declaration",
                      "optimizer t {\n" + repeat("param = late;\n", 20000) +
                          "let late = 1; }");
}

TEST(MutationFuzzHostile, LongNames) {
  expectQuickAndClean("a 1 MB name", kHeader + std::string(1 << 20, 'n') + "; }");
  expectQuickAndClean("a 1 MB number", kHeader + std::string(1 << 20, '7') + "; }");
  expectQuickAndClean("a 1 MB comment", "optimizer t { # " + std::string(1 << 20, '(') +
                                            "\n param = param; }", true);
}

} // namespace
} // namespace optdsl
