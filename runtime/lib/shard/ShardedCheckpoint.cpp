// Checkpoints of sharded optimizers (docs/checkpoints.md, "Sharded"): a
// folder with one state stream per rank, holding the rank's part of each
// tensor, and a manifest saying which part each file holds. Loading takes,
// for each part this optimizer owns, the bytes from whichever files hold
// them, so a checkpoint of N ranks loads into M ranks, into one process, and
// one process's file into M ranks. Parts start at chunk boundaries, which a
// q8 layout keeps at whole blocks, so raw storage (q8 codes with their
// absmax) is copied exactly, without decoding.
#include "../CpuStateAccess.h"

#include "Agreement.h"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace optrt {

namespace detail {

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
// converts when asked to), without touching the optimizer.
// (It reads the optimizer through CpuStateAccess and writes nothing to it.)
template <typename Impl> class PartsReader : public CpuStateAccess<Impl> {
public:
  PartsReader(const Impl &s, const std::vector<OwnedRange> &parts)
      : CpuStateAccess<Impl>(const_cast<Impl &>(s)), s_(s), parts_(parts), buffers_(s.tensors.size()) {}
  size_t tensorSize(size_t t) const override { return parts_[t].size(); }
  std::vector<double> scalars(size_t) const override { return {}; }
  // The stream asks a state per row or column for its length, to refuse one
  // of another shape (every file holds them whole: each rank keeps them).
  void withBuffer(size_t t, size_t b, const std::function<void(const void *, size_t)> &use) const override {
    const BufferDesc &buffer = s_.tensors[t].layout->buffers[b];
    if (buffer.role == BufferRole::AxisState)
      use(nullptr, tensorBufferBytes(buffer, 0, s_.tensors[t].matrixDims, s_.layout.rule().states));
  }
  void writeBuffer(size_t t, size_t b, const void *data) override {
    const BufferDesc &buffer = s_.tensors[t].layout->buffers[b];
    const auto *bytes = static_cast<const char *>(data);
    buffers_[t].resize(s_.tensors[t].layout->buffers.size());
    buffers_[t][b].assign(bytes, bytes + tensorBufferBytes(buffer, parts_[t].size(), s_.tensors[t].matrixDims,
                                                           s_.layout.rule().states));
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
  const Impl &s_;
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

} // namespace detail

void Optimizer::Impl::refuseSharded(const char *caller) const {
  if (comm)
    throw std::logic_error(std::string(caller) + ": the optimizer is sharded over " + std::to_string(comm->size()) +
                           " ranks; its state goes to a folder, one file per rank: saveState(path) and "
                           "loadState(path) (streams and safetensors hold one process's state)");
}

void Optimizer::Impl::saveShards(const std::string &folder) const {
  static const char *caller = "optrt::Optimizer::saveState";
  size_t ranks = plan.ranks(), me = plan.rank();
  std::exception_ptr error;
  try {
    std::filesystem::create_directories(folder);
    writeFileAtomically(
        folder + "/" + shardFileName(me, ranks),
        // The access only reads when writing a stream.
        [&](std::ostream &out) { writeStateStream(out, CpuStateAccess<Impl>(const_cast<Impl &>(*this)), caller); },
        caller);
  } catch (...) {
    error = std::current_exception();
  }
  // The manifest only once every rank's file is complete.
  agreeAcrossRanks(*comm, caller, "saving", error, "");
  if (me == 0) {
    try {
      nlohmann::json manifest;
      manifest["format"] = kFormat;
      manifest["version"] = 1;
      manifest["rule"] = layout.rule().name;
      manifest["layout"] = layout.layout().name;
      manifest["step"] = stepCount;
      manifest["ranks"] = ranks;
      nlohmann::json sizes = nlohmann::json::array(), files = nlohmann::json::array(),
                     parts = nlohmann::json::array();
      for (const Tensor &t : tensors)
        sizes.push_back(t.size);
      for (size_t r = 0; r < ranks; ++r) {
        files.push_back(shardFileName(r, ranks));
        nlohmann::json mine = nlohmann::json::array();
        for (size_t t = 0; t < tensors.size(); ++t) {
          OwnedRange range = plan.ownedBy(r, t, tensors[t].size);
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
  agreeAcrossRanks(*comm, caller, "saving", error, "");
}

namespace {

// The files of a checkpoint folder with the part of each tensor each holds,
// checked against this optimizer's tensors: every element of every tensor
// in exactly one file.
std::vector<detail::Source> readManifest(const std::string &folder, const std::vector<detail::Tensor> &tensors,
                                         const std::string &rule, int64_t &step, const char *caller) {
  std::string path = folder + "/" + detail::kManifest;
  auto fail = [&](const std::string &problem) {
    throw std::invalid_argument(std::string(caller) + ": '" + path + "': " + problem);
  };
  std::ifstream in(path);
  if (!in)
    fail("cannot be read; a sharded checkpoint is a folder with a manifest.json and one file per rank");
  nlohmann::json manifest = nlohmann::json::parse(in, nullptr, false);
  if (manifest.is_discarded() || !manifest.is_object() || !manifest.contains("format") ||
      manifest["format"] != detail::kFormat)
    fail("not the manifest of a sharded optimizer state");
  if (!manifest.contains("version") || manifest["version"] != 1)
    fail("manifest version " + (manifest.contains("version") ? manifest["version"].dump() : "(none)") +
         " is not 1");
  std::vector<detail::Source> sources;
  try {
    if (manifest.at("rule").get<std::string>() != rule)
      fail("the state is of rule '" + manifest.at("rule").get<std::string>() + "', this optimizer runs '" + rule +
           "'");
    step = manifest.at("step").get<int64_t>();
    auto sizes = manifest.at("tensors").get<std::vector<size_t>>();
    if (sizes.size() != tensors.size())
      fail("the state has " + std::to_string(sizes.size()) + " tensors, this optimizer " +
           std::to_string(tensors.size()));
    for (size_t t = 0; t < sizes.size(); ++t)
      if (sizes[t] != tensors[t].size)
        fail("tensor " + std::to_string(t) + " has " + std::to_string(sizes[t]) + " elements in the state and " +
             std::to_string(tensors[t].size) + " here");
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
      detail::Source source{folder + "/" + files[r], {}};
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

void Optimizer::Impl::loadParts(const std::string &path, bool convert) {
  static const char *caller = "optrt::Optimizer::loadState";
  using Reader = detail::PartsReader<Impl>;
  // Everything is read, checked and assembled first; sharded, the ranks then
  // agree that each succeeded before any of them changes anything.
  std::vector<std::vector<std::vector<char>>> staged(tensors.size()); // tensor, buffer
  std::unique_ptr<Reader> metadata;
  std::exception_ptr error;
  try {
    int64_t manifestStep = -1;
    std::vector<detail::Source> sources;
    if (detail::isShardedCheckpoint(path)) {
      sources = readManifest(path, tensors, layout.rule().name, manifestStep, caller);
    } else {
      detail::Source whole{path, {}};
      for (const Tensor &t : tensors)
        whole.parts.push_back({0, t.size});
      sources.push_back(std::move(whole));
    }
    for (size_t t = 0; t < tensors.size(); ++t) {
      const Tensor &tensor = tensors[t];
      staged[t].resize(tensor.layout->buffers.size());
      for (size_t b = 2; b < keptBuffersEnd(tensor.layout->buffers); ++b) {
        const auto *current = static_cast<const char *>(bufferAt(tensor, b));
        // Buffers a file lacks (a master) keep their values.
        staged[t][b].assign(current, current + bufferBytes(tensor.layout->buffers[b], tensor.owned.size()));
      }
    }
    for (size_t i = 0; i < sources.size(); ++i) {
      const detail::Source &source = sources[i];
      bool needed = !metadata && i + 1 == sources.size(); // one file for the hypers and steps at least
      for (size_t t = 0; t < tensors.size(); ++t)
        needed |= std::max(source.parts[t].begin, tensors[t].owned.begin) <
                  std::min(source.parts[t].end, tensors[t].owned.end);
      if (!needed)
        continue;
      auto reader = std::make_unique<Reader>(*this, source.parts);
      detail::readFile(
          source.path, [&](std::istream &in) { detail::readStateStream(in, *reader, convert, caller); }, caller);
      if ((manifestStep >= 0 && reader->step() != manifestStep) ||
          (metadata && reader->step() != metadata->step()))
        throw std::invalid_argument(std::string(caller) + ": '" + source.path + "' is of step " +
                                    std::to_string(reader->step()) + " and the checkpoint of step " +
                                    std::to_string(manifestStep >= 0 ? manifestStep : metadata->step()) +
                                    "; a save was interrupted, or files of two checkpoints were mixed");
      for (size_t t = 0; t < tensors.size(); ++t) {
        const Tensor &tensor = tensors[t];
        size_t from = std::max(source.parts[t].begin, tensor.owned.begin);
        size_t to = std::min(source.parts[t].end, tensor.owned.end);
        if (from >= to)
          continue;
        for (size_t b = 2; b < keptBuffersEnd(tensor.layout->buffers); ++b) {
          const BufferDesc &buffer = tensor.layout->buffers[b];
          const std::vector<char> &bytes = reader->buffer(t, b);
          if (bytes.empty())
            continue;
          // Parts start at chunk boundaries (whole q8 blocks), so the bytes
          // of the elements before `from` are its offset in every storage,
          // absmax included.
          size_t at = bufferBytes(buffer, from - source.parts[t].begin);
          std::copy_n(bytes.data() + at, bufferBytes(buffer, to - from),
                      staged[t][b].data() + bufferBytes(buffer, from - tensor.owned.begin));
        }
      }
      if (!metadata) {
        // States per row or column: whole in every file; from the first.
        for (size_t t = 0; t < tensors.size(); ++t)
          for (size_t b : savedBuffers(tensors[t].layout->buffers, layout.rule().states))
            if (tensors[t].layout->buffers[b].role == BufferRole::AxisState)
              staged[t][b] = reader->buffer(t, b);
        metadata = std::move(reader);
      }
    }
  } catch (...) {
    error = std::current_exception();
  }
  if (comm)
    detail::agreeAcrossRanks(*comm, caller, "loading", error, "");
  else if (error)
    std::rethrow_exception(error);

  for (size_t t = 0; t < tensors.size(); ++t)
    for (size_t b = 2; b < staged[t].size(); ++b) {
      char *target = tensors[t].layout->buffers[b].role == BufferRole::AxisState
                         ? reinterpret_cast<char *>(tensors[t].axisBuffer(b))
                         : static_cast<char *>(bufferAt(tensors[t], b));
      std::copy(staged[t][b].begin(), staged[t][b].end(), target);
    }
  CpuStateAccess<Impl>(*this).finishLoad(metadata->step(), metadata->groupRecords(), metadata->scalarStates());
}

} // namespace optrt
