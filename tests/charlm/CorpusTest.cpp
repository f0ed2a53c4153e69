// Reading, ordering, splitting and the alphabet of the corpus.
#include "Corpus.h"
#include "Trainer.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <unistd.h>

namespace charlm {
namespace {
namespace fs = std::filesystem;

struct TempDir {
  fs::path path = fs::temp_directory_path() / ("charlm-corpus-" + std::to_string(getpid()));
  TempDir() { fs::create_directories(path); }
  ~TempDir() { fs::remove_all(path); }
  void write(const std::string &name, const std::string &text) { std::ofstream(path / name) << text; }
};

std::string decode(const Corpus &corpus, const std::vector<uint8_t> &ids) {
  std::string text;
  for (uint8_t id : ids)
    text += static_cast<char>(corpus.chars[id]);
  return text;
}

// fortune's directory holds a binary .dat index beside each text file.
TEST(Corpus, BinaryFilesSkipped) {
  TempDir dir;
  dir.write("text", std::string(2000, 'a'));
  dir.write("text.dat", std::string("\x02\0\0\0", 4) + std::string(2000, 'z'));
  Corpus corpus = loadCorpus(dir.path.string(), 0.1);
  ASSERT_EQ(corpus.files.size(), 1u);
  EXPECT_EQ(fs::path(corpus.files[0]).filename(), "text");
  EXPECT_EQ(corpus.binaryFilesSkipped, 1u);
  EXPECT_EQ(corpus.vocabSize(), 1);
}

TEST(Corpus, SortedFilesTailsHeldOutSymlinksSkipped) {
  TempDir dir;
  // 1000 and 2000 bytes: the last 10% of each is held out.
  dir.write("b", std::string(900, 'b') + std::string(100, 'B'));
  dir.write("a", std::string(1800, 'a') + std::string(200, 'A'));
  fs::create_symlink(dir.path / "a", dir.path / "link-to-a");
  Corpus corpus = loadCorpus(dir.path.string(), 0.1);
  ASSERT_EQ(corpus.files.size(), 2u);
  EXPECT_EQ(fs::path(corpus.files[0]).filename(), "a");
  EXPECT_EQ(fs::path(corpus.files[1]).filename(), "b");
  EXPECT_EQ(decode(corpus, corpus.train), std::string(1800, 'a') + std::string(900, 'b'));
  // The alphabet is the training split's: A and B are unknown.
  EXPECT_EQ(corpus.vocabSize(), 2);
  EXPECT_EQ(corpus.idOf['A'], -1);
  EXPECT_EQ(corpus.validation.size(), 300u);
  EXPECT_EQ(corpus.unknownValidationChars(), 300u);
  EXPECT_TRUE(validationPositions(corpus, 4, 0).empty());
  // The entropy of the training frequencies, 1800 a and 900 b, in nats.
  double pa = 1800.0 / 2700, pb = 900.0 / 2700;
  EXPECT_NEAR(corpus.unigramEntropy(), -pa * std::log(pa) - pb * std::log(pb), 1e-12);
}

TEST(Corpus, ValidationWindowsWithUnknownCharactersAreSkipped) {
  TempDir dir;
  // Held out: the last 100 of 2000 (5%), "xyxy..." with one '_' at 50.
  std::string tail;
  for (int i = 0; i < 100; ++i)
    tail += i == 50 ? '_' : "xy"[i % 2];
  dir.write("text", std::string(950, 'x') + std::string(950, 'y') + tail);
  Corpus corpus = loadCorpus((dir.path / "text").string(), 0.05);
  EXPECT_EQ(corpus.unknownValidationChars(), 1u);
  auto positions = validationPositions(corpus, 4, 0);
  // Positions 4..99 are candidates; those with 50 in [p-4, p] are not: 50..54.
  EXPECT_EQ(positions.size(), 96u - 5u);
  for (size_t p : positions)
    EXPECT_TRUE(p < 50 || p > 54) << p;
  auto spread = validationPositions(corpus, 4, 10);
  EXPECT_EQ(spread.size(), 10u);
}

TEST(Corpus, TooSmallOrMissing) {
  TempDir dir;
  dir.write("tiny", "hello");
  EXPECT_THROW(loadCorpus((dir.path / "tiny").string(), 0.1), std::runtime_error);
  EXPECT_THROW(loadCorpus((dir.path / "missing").string(), 0.1), std::runtime_error);
}

} // namespace
} // namespace charlm
