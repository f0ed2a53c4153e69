#include "ParallelObjects.h"

#include "llvm/Bitcode/BitcodeReader.h"
#include "llvm/Bitcode/BitcodeWriter.h"
#include "llvm/IR/LegacyPassManager.h"
#include "llvm/Support/SmallVectorMemoryBuffer.h"
#include "llvm/Support/raw_ostream.h"
#include "llvm/Target/TargetMachine.h"
#include "llvm/Transforms/Utils/Cloning.h"

#include <algorithm>
#include <atomic>
#include <exception>
#include <map>
#include <mutex>
#include <stdexcept>
#include <thread>

namespace optdsl {
namespace {

/// The module's functions in `bins` parts of about equal work (the longest
/// first, each to the part with the fewest instructions so far: their
/// optimisation and code generation time grows with their length), each
/// part as bitcode: the only form an LLVM module crosses contexts in. Every
/// part defines its functions and declares the rest; the first also defines
/// the global variables (the q8 tables), made external so the others can
/// reach them.
std::vector<llvm::SmallVector<char, 0>> splitToBitcode(llvm::Module &module, unsigned bins) {
  std::vector<std::pair<size_t, const llvm::Function *>> functions;
  for (const llvm::Function &function : module)
    if (!function.isDeclaration())
      functions.emplace_back(function.getInstructionCount(), &function);
  std::stable_sort(functions.begin(), functions.end(),
                   [](const auto &a, const auto &b) { return a.first > b.first; });
  bins = std::max<unsigned>(1, std::min<size_t>(bins, functions.size()));
  std::vector<size_t> load(bins, 0);
  std::map<const llvm::GlobalValue *, unsigned> binOf;
  for (const auto &[size, function] : functions) {
    unsigned lightest = static_cast<unsigned>(std::min_element(load.begin(), load.end()) - load.begin());
    load[lightest] += size;
    binOf[function] = lightest;
  }
  for (llvm::GlobalValue &global : module.global_values())
    if (global.hasLocalLinkage() && !global.isDeclaration()) {
      global.setLinkage(llvm::GlobalValue::ExternalLinkage);
      global.setVisibility(llvm::GlobalValue::HiddenVisibility);
    }
  std::vector<llvm::SmallVector<char, 0>> parts;
  for (unsigned bin = 0; bin < bins; ++bin) {
    llvm::ValueToValueMapTy map;
    std::unique_ptr<llvm::Module> part = llvm::CloneModule(module, map, [&](const llvm::GlobalValue *global) {
      auto it = binOf.find(global);
      return it == binOf.end() ? bin == 0 : it->second == bin;
    });
    llvm::SmallVector<char, 0> bitcode;
    llvm::raw_svector_ostream stream(bitcode);
    llvm::WriteBitcodeToFile(*part, stream);
    parts.push_back(std::move(bitcode));
  }
  return parts;
}

std::unique_ptr<llvm::MemoryBuffer> compilePart(const llvm::SmallVector<char, 0> &bitcode,
                                                llvm::orc::JITTargetMachineBuilder target,
                                                const std::function<llvm::Error(llvm::Module *)> &optimize) {
  auto fail = [](const std::string &what, llvm::Error error) {
    return std::runtime_error("JIT: " + what + ": " + llvm::toString(std::move(error)));
  };
  llvm::LLVMContext context;
  llvm::Expected<std::unique_ptr<llvm::Module>> part =
      llvm::parseBitcodeFile(llvm::MemoryBufferRef(llvm::StringRef(bitcode.data(), bitcode.size()), "part"), context);
  if (!part)
    throw fail("reading a part of the module", part.takeError());
  if (llvm::Error error = optimize(part->get()))
    throw fail("optimising", std::move(error));
  llvm::Expected<std::unique_ptr<llvm::TargetMachine>> machine = target.createTargetMachine();
  if (!machine)
    throw fail("creating the target machine", machine.takeError());
  llvm::SmallVector<char, 0> object;
  llvm::raw_svector_ostream stream(object);
  llvm::legacy::PassManager passes;
  if ((*machine)->addPassesToEmitFile(passes, stream, nullptr, llvm::CodeGenFileType::ObjectFile))
    throw std::runtime_error("JIT: the host's LLVM target cannot emit object files");
  passes.run(**part);
  return std::make_unique<llvm::SmallVectorMemoryBuffer>(std::move(object), "optdsl-jit-part", false);
}

} // namespace

std::vector<std::unique_ptr<llvm::MemoryBuffer>>
compileInParallel(llvm::Module &module, const llvm::orc::JITTargetMachineBuilder &target,
                  const std::function<llvm::Error(llvm::Module *)> &optimize, unsigned threads) {
  // As many parts as threads: each part pays for its own pass pipeline and
  // target machine (about 2 ms), so more parts than threads cost more than
  // the balance they buy (docs/benchmarks.md "JIT").
  std::vector<llvm::SmallVector<char, 0>> parts = splitToBitcode(module, std::max(1u, threads));
  std::vector<std::unique_ptr<llvm::MemoryBuffer>> objects(parts.size());
  std::atomic<size_t> next{0};
  std::exception_ptr failure;
  std::mutex failureMutex;
  // Each worker takes the next part until none is left.
  auto work = [&] {
    for (size_t i = next++; i < parts.size(); i = next++) {
      try {
        objects[i] = compilePart(parts[i], target, optimize);
      } catch (...) {
        std::lock_guard<std::mutex> lock(failureMutex);
        if (!failure)
          failure = std::current_exception();
      }
    }
  };
  std::vector<std::thread> workers;
  for (unsigned t = 1; t < std::min<size_t>(std::max(1u, threads), parts.size()); ++t)
    workers.emplace_back(work);
  work();
  for (std::thread &worker : workers)
    worker.join();
  if (failure)
    std::rethrow_exception(failure);
  return objects;
}

} // namespace optdsl
