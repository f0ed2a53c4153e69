// Sharded checkpoints (ShardedCheckpoint.h). Parts start at chunk
// boundaries, which a q8 layout keeps at whole blocks, so raw storage (q8
// codes with their absmax) is copied exactly, without decoding.
#include "ShardedCheckpoint.h"

#include "../LayoutBuffers.h"
#include "Agreement.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

namespace optrt::detail {

namespace {

constexpr const char *kManifest = "manifest.json";
constexpr const char *kFormat = "optdsl sharded optimizer state";

std::string shardFileName(size_t rank, size_t ranks) {
  char name[64];
  std::snprintf(name, sizeof name, "rank-%05zu-of-%05zu.state", rank, ranks);
  return name;
}

// One file of a checkpoint and the part of each tensor it holds.
struct Source {
  std::string path;
  std::vector<OwnedRange> parts;
};

// A StateAccess that keeps what a stream holds of given parts of the
// optimizer's tensors, encoded in the optimizer's own layouts (the stream
// converts when asked to), without touching the optimizer: it answers the
// stream's questions (rule, layouts, groups) from the optimizer's access.
class PartsReader : public StateAccess {
public:
  PartsReader(const StateAccess &base, const std::vector<OwnedRange> &parts)
      : base_(base), parts_(parts), buffers_(base.numTensors()) {}
  const RuleLayout &rule() const override { return base_.rule(); }
  size_t numTensors() const override { return base_.numTensors(); }
  size_t tensorSize(size_t t) const override { return parts_[t].size(); }
  const LayoutKernels &tensorLayout(size_t t) const override { return base_.tensorLayout(t); }
  int64_t stepCount() const override { return base_.stepCount(); }
  std::vector<GroupRecord> groups() const override { return base_.groups(); }
  bool perGroupSteps() const override { return base_.perGroupSteps(); }
  std::vector<double> scalars(size_t) const override { return {}; }
  // The stream asks a state per row or column for its length, to refuse one
  // of another shape (every file holds them whole: each rank keeps them).
  void withBuffer(size_t t, size_t b, const std::function<void(const void *, size_t)> &use) const override {
    if (base_.tensorLayout(t).buffers[b].role == BufferRole::AxisState)
      use(nullptr, axisBytes(t, b));
  }
  void writeBuffer(size_t t, size_t b, const void *data) override {
    const BufferDesc &buffer = base_.tensorLayout(t).buffers[b];
    const auto *bytes = static_cast<const char *>(data);
    buffers_[t].resize(base_.tensorLayout(t).buffers.size());
    size_t n = buffer.role == BufferRole::AxisState ? axisBytes(t, b) : bufferBytes(buffer, parts_[t].size());
    buffers_[t][b].assign(bytes, bytes + n);
  }
  void finishLoad(int64_t stepCount, const std::vector<GroupRecord> &groups,
                  const std::vector<std::vector<double>> &scalars) override {
    stepCount_ = stepCount;
    groups_ = groups;
    scalars_ = scalars;
  }

  /// Bytes of buffer b of tensor t for its part; empty when the stream had none (a master it lacked).
  const std::vector<char> &buffer(size_t t, size_t b) const {
    static const std::vector<char> none;
    return b < buffers_[t].size() ? buffers_[t][b] : none;
  }
  int64_t step() const { return stepCount_; }
  const std::vector<GroupRecord> &groupRecords() const { return groups_; }
  const std::vector<std::vector<double>> &scalarStates() const { return scalars_; }

private:
  size_t axisBytes(size_t t, size_t b) const {
    size_t n = 0;
    base_.withBuffer(t, b, [&](const void *, size_t bytes) { n = bytes; });
    return n;
  }

  const StateAccess &base_;
  std::vector<OwnedRange> parts_;
  std::vector<std::vector<std::vector<char>>> buffers_; // tensor, buffer
  int64_t stepCount_ = 0;
  std::vector<GroupRecord> groups_;
  std::vector<std::vector<double>> scalars_;
};

} // namespace

bool isShardedCheckpoint(const std::string &path) {
  std::error_code error;
  return std::filesystem::is_directory(path, error);
}

void saveShards(const std::string &folder, const ShardedView &view, const char *caller) {
  size_t ranks = view.plan->ranks(), me = view.plan->rank();
  std::exception_ptr error;
  try {
    std::filesystem::create_directories(folder);
    writeFileAtomically(
        folder + "/" + shardFileName(me, ranks),
        [&](std::ostream &out) { writeStateStream(out, view.access, caller); }, caller);
  } catch (...) {
    error = std::current_exception();
  }
  // The manifest only once every rank's file is complete.
  agreeAcrossRanks(*view.comm, caller, "saving", error, "");
  if (me == 0) {
    try {
      nlohmann::json manifest;
      manifest["format"] = kFormat;
      manifest["version"] = 1;
      manifest["rule"] = view.rule;
      manifest["layout"] = view.layout;
      manifest["step"] = view.step;
      manifest["ranks"] = ranks;
      nlohmann::json sizes = nlohmann::json::array(), files = nlohmann::json::array(),
                     parts = nlohmann::json::array();
      for (size_t size : view.sizes)
        sizes.push_back(size);
      for (size_t r = 0; r < ranks; ++r) {
        files.push_back(shardFileName(r, ranks));
        nlohmann::json mine = nlohmann::json::array();
        for (size_t t = 0; t < view.sizes.size(); ++t) {
          OwnedRange range = view.plan->ownedBy(r, t, view.sizes[t]);
          mine.push_back({range.begin, range.end});
        }
        parts.push_back(std::move(mine));
      }
      manifest["tensors"] = std::move(sizes);
      manifest["files"] = std::move(files);
      manifest["parts"] = std::move(parts);
      writeFileAtomically(folder + "/" + kManifest, [&](std::ostream &out) { out << manifest.dump(1) << "\n"; },
                          caller);
    } catch (...) {
      error = std::current_exception();
    }
  }
  agreeAcrossRanks(*view.comm, caller, "saving", error, "");
}

namespace {

// The files of a checkpoint folder with the part of each tensor each holds,
// checked against this optimizer's tensors: every element of every tensor
// in exactly one file.
std::vector<Source> readManifest(const std::string &folder, const std::vector<size_t> &tensorSizes,
                                 const std::string &rule, int64_t &step, const char *caller) {
  std::string path = folder + "/" + kManifest;
  auto fail = [&](const std::string &problem) {
    throw std::invalid_argument(std::string(caller) + ": '" + path + "': " + problem);
  };
  std::ifstream in(path);
  if (!in)
    fail("cannot be read; a sharded checkpoint is a folder with a manifest.json and one file per rank");
  nlohmann::json manifest = nlohmann::json::parse(in, nullptr, false);
  if (manifest.is_discarded() || !manifest.is_object() || !manifest.contains("format") ||
      manifest["format"] != kFormat)
    fail("not the manifest of a sharded optimizer state");
  if (!manifest.contains("version") || manifest["version"] != 1)
    fail("manifest version " + (manifest.contains("version") ? manifest["version"].dump() : "(none)") +
         " is not 1");
  std::vector<Source> sources;
  try {
    if (manifest.at("rule").get<std::string>() != rule)
      fail("the state is of rule '" + manifest.at("rule").get<std::string>() + "', this optimizer runs '" + rule +
           "'");
    step = manifest.at("step").get<int64_t>();
    auto sizes = manifest.at("tensors").get<std::vector<size_t>>();
    if (sizes.size() != tensorSizes.size())
      fail("the state has " + std::to_string(sizes.size()) + " tensors, this optimizer " +
           std::to_string(tensorSizes.size()));
    for (size_t t = 0; t < sizes.size(); ++t)
      if (sizes[t] != tensorSizes[t])
        fail("tensor " + std::to_string(t) + " has " + std::to_string(sizes[t]) + " elements in the state and " +
             std::to_string(tensorSizes[t]) + " here");
    auto files = manifest.at("files").get<std::vector<std::string>>();
    auto parts = manifest.at("parts").get<std::vector<std::vector<std::pair<size_t, size_t>>>>();
    size_t ranks = manifest.at("ranks").get<size_t>();
    if (files.size() != ranks || parts.size() != ranks || ranks == 0)
      fail("it lists " + std::to_string(files.size()) + " files and " + std::to_string(parts.size()) +
           " ranks' parts for " + std::to_string(ranks) + " ranks");
    std::vector<size_t> covered(sizes.size(), 0);
    for (size_t r = 0; r < ranks; ++r) {
      if (parts[r].size() != sizes.size() || files[r].find('/') != std::string::npos)
        fail("the entry of rank " + std::to_string(r) + " is damaged");
      Source source{folder + "/" + files[r], {}};
      for (size_t t = 0; t < sizes.size(); ++t) {
        auto [begin, end] = parts[r][t];
        // Parts of ranks in order, back to back: every element once.
        if (begin > end || end > sizes[t] || (begin != end && begin != covered[t]))
          fail("rank " + std::to_string(r) + "'s part of tensor " + std::to_string(t) + " is damaged");
        if (begin != end)
          covered[t] = end;
        source.parts.push_back({begin, end});
      }
      sources.push_back(std::move(source));
    }
    for (size_t t = 0; t < sizes.size(); ++t)
      if (covered[t] != sizes[t])
        fail("no file holds elements " + std::to_string(covered[t]) + " and up of tensor " + std::to_string(t));
  } catch (const nlohmann::json::exception &e) {
    fail(std::string("damaged: ") + e.what());
  }
  return sources;
}

} // namespace

void loadParts(const std::string &path, ShardedView &view, bool convert, const char *caller) {
  StateAccess &access = view.access;
  size_t numTensors = view.sizes.size();
  // Everything is read, checked and assembled first; sharded, the ranks then
  // agree that each succeeded before any of them changes anything.
  std::vector<std::vector<std::vector<char>>> staged(numTensors); // tensor, buffer
  std::unique_ptr<PartsReader> metadata;
  std::exception_ptr error;
  try {
    int64_t manifestStep = -1;
    std::vector<Source> sources;
    if (isShardedCheckpoint(path)) {
      sources = readManifest(path, view.sizes, view.rule, manifestStep, caller);
    } else {
      Source whole{path, {}};
      for (size_t size : view.sizes)
        whole.parts.push_back({0, size});
      sources.push_back(std::move(whole));
    }
    for (size_t t = 0; t < numTensors; ++t) {
      const std::vector<BufferDesc> &buffers = access.tensorLayout(t).buffers;
      staged[t].resize(buffers.size());
      // Buffers a file lacks (a master) keep their values.
      for (size_t b = 2; b < keptBuffersEnd(buffers); ++b)
        access.withBuffer(t, b, [&](const void *data, size_t bytes) {
          const auto *from = static_cast<const char *>(data);
          staged[t][b].assign(from, from + bytes);
        });
    }
    for (size_t i = 0; i < sources.size(); ++i) {
      const Source &source = sources[i];
      bool needed = !metadata && i + 1 == sources.size(); // one file for the hypers and steps at least
      for (size_t t = 0; t < numTensors; ++t)
        needed |= std::max(source.parts[t].begin, view.owned[t].begin) <
                  std::min(source.parts[t].end, view.owned[t].end);
      if (!needed)
        continue;
      auto reader = std::make_unique<PartsReader>(access, source.parts);
      readFile(source.path, [&](std::istream &in) { readStateStream(in, *reader, convert, caller); }, caller);
      if ((manifestStep >= 0 && reader->step() != manifestStep) ||
          (metadata && reader->step() != metadata->step()))
        throw std::invalid_argument(std::string(caller) + ": '" + source.path + "' is of step " +
                                    std::to_string(reader->step()) + " and the checkpoint of step " +
                                    std::to_string(manifestStep >= 0 ? manifestStep : metadata->step()) +
                                    "; a save was interrupted, or files of two checkpoints were mixed");
      for (size_t t = 0; t < numTensors; ++t) {
        const OwnedRange &owned = view.owned[t];
        size_t from = std::max(source.parts[t].begin, owned.begin);
        size_t to = std::min(source.parts[t].end, owned.end);
        if (from >= to)
          continue;
        const std::vector<BufferDesc> &buffers = access.tensorLayout(t).buffers;
        for (size_t b = 2; b < keptBuffersEnd(buffers); ++b) {
          const BufferDesc &buffer = buffers[b];
          const std::vector<char> &bytes = reader->buffer(t, b);
          if (bytes.empty())
            continue;
          // Parts start at chunk boundaries (whole q8 blocks), so the bytes
          // of the elements before `from` are its offset in every storage,
          // absmax included.
          size_t at = bufferBytes(buffer, from - source.parts[t].begin);
          std::copy_n(bytes.data() + at, bufferBytes(buffer, to - from),
                      staged[t][b].data() + bufferBytes(buffer, from - owned.begin));
        }
      }
      if (!metadata) {
        // States per row or column: whole in every file; from the first.
        for (size_t t = 0; t < numTensors; ++t) {
          const std::vector<BufferDesc> &buffers = access.tensorLayout(t).buffers;
          for (size_t b : savedBuffers(buffers, access.rule().rule().states))
            if (buffers[b].role == BufferRole::AxisState)
              staged[t][b] = reader->buffer(t, b);
        }
        metadata = std::move(reader);
      }
    }
  } catch (...) {
    error = std::current_exception();
  }
  if (view.comm)
    agreeAcrossRanks(*view.comm, caller, "loading", error, "");
  else if (error)
    std::rethrow_exception(error);

  for (size_t t = 0; t < numTensors; ++t)
    for (size_t b = 2; b < staged[t].size(); ++b)
      if (!staged[t][b].empty()) // an empty part, or a buffer no file holds
        access.writeBuffer(t, b, staged[t][b].data());
  access.finishLoad(metadata->step(), metadata->groupRecords(), metadata->scalarStates());
}

} // namespace optrt::detail
