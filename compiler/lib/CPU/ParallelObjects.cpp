#include "ParallelObjects.h"

#include "optdsl/KernelGen.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/IR/Builders.h"
#include "mlir/Target/LLVMIR/Export.h"
#include "llvm/IR/LegacyPassManager.h"
#include "llvm/Passes/PassBuilder.h"
#include "llvm/Support/SmallVectorMemoryBuffer.h"
#include "llvm/Support/raw_ostream.h"
#include "llvm/Target/TargetMachine.h"

#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <thread>

namespace optdsl {
namespace {

/// The kernels' functions in `bins` parts of about equal work (the longest
/// first, each to the part with the fewest operations so far: lowering,
/// optimisation and code generation grow with a function's length), each
/// part a module of its own in the same context. Every part also gets the
/// globals (the q8 tables: internal constants, so each object holds its own
/// copy and LLVM drops those a part does not read) and the declarations.
std::vector<mlir::OwningOpRef<mlir::ModuleOp>> splitKernels(mlir::ModuleOp kernels, unsigned bins) {
  std::vector<std::pair<size_t, mlir::Operation *>> functions;
  std::vector<mlir::Operation *> globals;
  for (mlir::Operation &op : kernels.getBody()->getOperations()) {
    auto function = mlir::dyn_cast<mlir::func::FuncOp>(op);
    if (function && !function.isExternal()) {
      size_t size = 0;
      op.walk([&](mlir::Operation *) { ++size; });
      functions.emplace_back(size, &op);
    } else if (function || mlir::isa<mlir::LLVM::GlobalOp>(op)) {
      globals.push_back(&op); // declarations too: any part may call them
    } else {
      throw std::runtime_error("JIT: unexpected operation '" + op.getName().getStringRef().str() +
                               "' among the kernels");
    }
  }
  std::stable_sort(functions.begin(), functions.end(),
                   [](const auto &a, const auto &b) { return a.first > b.first; });
  bins = std::max<unsigned>(1, std::min<size_t>(bins, functions.size()));
  std::vector<mlir::OwningOpRef<mlir::ModuleOp>> parts;
  std::vector<size_t> load(bins, 0);
  mlir::OpBuilder builder(kernels.getContext());
  for (unsigned bin = 0; bin < bins; ++bin) {
    parts.push_back(mlir::ModuleOp::create(kernels.getLoc()));
    parts.back()->getOperation()->setAttrs(kernels->getAttrDictionary());
    builder.setInsertionPointToEnd(parts.back()->getBody());
    for (mlir::Operation *global : globals)
      builder.clone(*global);
  }
  for (const auto &[size, function] : functions) {
    unsigned lightest = static_cast<unsigned>(std::min_element(load.begin(), load.end()) - load.begin());
    load[lightest] += size;
    builder.setInsertionPointToEnd(parts[lightest]->getBody());
    builder.clone(*function);
  }
  return parts;
}

/// What the kernels need of LLVM's optimiser, and no more: allocas to
/// registers, common subexpressions, instruction combining (which also
/// makes the IR smaller for code generation), loop-invariant code out of
/// the loops, and the q8 tables a part does not read dropped. The kernels
/// arrive vectorised (16 lanes) and unrolled from KernelGen: the standard
/// O1/O2 pipelines, five to six times longer to run, made no faster
/// kernels (their vectorisers only copy the scalar tails; the step
/// benchmarks equal within noise, docs/benchmarks.md "Compile latency").
constexpr const char *kKernelPipeline =
    "function(sroa,early-cse,simplifycfg,instcombine,loop-mssa(licm),simplifycfg),globaldce";

void optimize(llvm::Module &module, llvm::TargetMachine &machine) {
  llvm::LoopAnalysisManager loops;
  llvm::FunctionAnalysisManager functions;
  llvm::CGSCCAnalysisManager calls;
  llvm::ModuleAnalysisManager modules;
  llvm::PassBuilder builder(&machine);
  builder.registerModuleAnalyses(modules);
  builder.registerCGSCCAnalyses(calls);
  builder.registerFunctionAnalyses(functions);
  builder.registerLoopAnalyses(loops);
  builder.crossRegisterProxies(loops, functions, calls, modules);
  llvm::ModulePassManager passes;
  if (llvm::Error error = builder.parsePassPipeline(passes, kKernelPipeline))
    throw std::runtime_error("JIT: the optimisation pipeline: " + llvm::toString(std::move(error)));
  passes.run(module, modules);
}

std::unique_ptr<llvm::MemoryBuffer> compilePart(mlir::ModuleOp part, llvm::orc::JITTargetMachineBuilder target,
                                                const llvm::DataLayout &dataLayout) {
  if (mlir::failed(lowerToLLVMDialect(part)))
    throw std::runtime_error("JIT: lowering to the LLVM dialect failed");
  llvm::LLVMContext context;
  std::unique_ptr<llvm::Module> module = mlir::translateModuleToLLVMIR(part, context);
  if (!module)
    throw std::runtime_error("JIT: translation to LLVM IR failed");
  module->setDataLayout(dataLayout);
  module->setTargetTriple(target.getTargetTriple().str());
  llvm::Expected<std::unique_ptr<llvm::TargetMachine>> machine = target.createTargetMachine();
  if (!machine)
    throw std::runtime_error("JIT: creating the target machine: " + llvm::toString(machine.takeError()));
  optimize(*module, **machine);
  llvm::SmallVector<char, 0> object;
  llvm::raw_svector_ostream stream(object);
  llvm::legacy::PassManager passes;
  if ((*machine)->addPassesToEmitFile(passes, stream, nullptr, llvm::CodeGenFileType::ObjectFile))
    throw std::runtime_error("JIT: the host's LLVM target cannot emit object files");
  passes.run(*module);
  return std::make_unique<llvm::SmallVectorMemoryBuffer>(std::move(object), "optdsl-jit-part", false);
}

} // namespace

std::vector<std::unique_ptr<llvm::MemoryBuffer>>
compileInParallel(mlir::ModuleOp kernels, const llvm::orc::JITTargetMachineBuilder &target,
                  const llvm::DataLayout &dataLayout, unsigned threads) {
  // As many parts as threads: each part pays for its own pass pipelines and
  // target machine (about 2 ms), so more parts than threads cost more than
  // the balance they buy (docs/benchmarks.md "Compile latency").
  std::vector<mlir::OwningOpRef<mlir::ModuleOp>> parts = splitKernels(kernels, std::max(1u, threads));
  loadLoweringDialects(*kernels.getContext());
  std::vector<std::unique_ptr<llvm::MemoryBuffer>> objects(parts.size());
  std::atomic<size_t> next{0};
  std::exception_ptr failure;
  std::mutex failureMutex;
  // Each worker takes the next part until none is left.
  auto work = [&] {
    for (size_t i = next++; i < parts.size(); i = next++) {
      try {
        objects[i] = compilePart(*parts[i], target, dataLayout);
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
