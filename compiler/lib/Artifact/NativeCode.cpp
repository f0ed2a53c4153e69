#include "optdsl/NativeCode.h"

#include "mlir/ExecutionEngine/OptUtils.h"
#include "llvm/ADT/SmallVector.h"
#include "llvm/IR/LegacyPassManager.h"
#include "llvm/MC/MCSubtargetInfo.h"
#include "llvm/MC/TargetRegistry.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/Support/raw_ostream.h"
#include "llvm/TargetParser/Host.h"
#include "llvm/TargetParser/SubtargetFeature.h"

#include <mutex>
#include <stdexcept>

namespace optdsl {

namespace {

void initializeNativeTarget() {
  static std::once_flag once;
  std::call_once(once, [] {
    llvm::InitializeNativeTarget();
    llvm::InitializeNativeTargetAsmPrinter();
  });
}

// The features a loader can test (artifact_abi.h), as LLVM spells them.
constexpr const char *kCheckableFeatures[] = {"sse4.2",   "avx",      "avx2",     "fma",      "f16c",
                                              "avx512f",  "avx512bw", "avx512dq", "avx512vl", "avx512vbmi",
                                              "avx512bf16"};

} // namespace

std::vector<std::string> portableCpus() {
  // x86-64-v4 with the extras the q8 and bf16 paths use (Ice Lake server,
  // Sapphire Rapids, Zen 4 and later), plain AVX-512, AVX2 + FMA, SSE4.2.
  return {"x86-64-v4+avx512vbmi+avx512bf16", "x86-64-v4", "x86-64-v3", "x86-64-v2"};
}

std::unique_ptr<llvm::TargetMachine> createCpuTargetMachine(const std::string &requested) {
  std::string cpu = requested;
  std::vector<std::string> extras;
  if (size_t plus = requested.find('+'); plus != std::string::npos) {
    cpu = requested.substr(0, plus);
    for (size_t at = plus; at != std::string::npos;) {
      size_t next = requested.find('+', at + 1);
      std::string feature = requested.substr(at + 1, next == std::string::npos ? std::string::npos : next - at - 1);
      bool known = false;
      for (const char *checkable : kCheckableFeatures)
        known = known || feature == checkable;
      if (!known)
        throw std::invalid_argument("unknown CPU feature '" + feature + "' in '" + requested +
                                    "' (features: sse4.2 avx avx2 fma f16c avx512f avx512bw avx512dq avx512vl "
                                    "avx512vbmi avx512bf16)");
      extras.push_back(feature);
      at = next;
    }
  }
  initializeNativeTarget();
  std::string triple = llvm::sys::getProcessTriple();
  std::string error;
  const llvm::Target *target = llvm::TargetRegistry::lookupTarget(triple, error);
  if (!target)
    throw std::runtime_error("no LLVM target for " + triple + ": " + error);
  std::string cpuName = cpu == "host" ? llvm::sys::getHostCPUName().str() : cpu;
  // Checked before the target machine exists: LLVM would only print a
  // warning and fall back to a generic CPU.
  std::unique_ptr<llvm::MCSubtargetInfo> probe(target->createMCSubtargetInfo(triple, "", ""));
  if (!probe || !probe->isCPUStringValid(cpuName))
    throw std::invalid_argument("unknown CPU '" + cpu + "' for " + triple + " (try " +
                                kCpuExamples + ")");
  llvm::SubtargetFeatures features;
  // "host" means this machine exactly: LLVM's CPU name alone can miss
  // features a virtual machine exposes or hides.
  if (cpu == "host")
    for (const auto &feature : llvm::sys::getHostCPUFeatures())
      features.AddFeature(feature.first(), feature.second);
  for (const std::string &feature : extras)
    features.AddFeature(feature, true);
  llvm::TargetOptions options; // IEEE: no unsafe or fast math
  std::unique_ptr<llvm::TargetMachine> machine(target->createTargetMachine(
      triple, cpuName, features.getString(), options, llvm::Reloc::PIC_, std::nullopt,
      llvm::CodeGenOptLevel::Aggressive));
  if (!machine)
    throw std::runtime_error("LLVM cannot create a target machine for " + triple + " / " + cpuName);
  return machine;
}

std::string requiredCpuFeatures(const llvm::TargetMachine &machine) {
  std::string list;
  const llvm::MCSubtargetInfo &subtarget = *machine.getMCSubtargetInfo();
  for (const char *feature : kCheckableFeatures)
    if (subtarget.checkFeatures(std::string("+") + feature))
      list += (list.empty() ? "" : ",") + std::string(feature);
  return list;
}

void optimizeForTarget(llvm::Module &module, llvm::TargetMachine &machine) {
  module.setTargetTriple(machine.getTargetTriple().str());
  module.setDataLayout(machine.createDataLayout());
  // The JIT's pipeline (this transformer, at O2 there), so an
  // artifact's code is the JIT's code.
  if (llvm::Error error = mlir::makeOptimizingTransformer(3, 0, &machine)(&module))
    throw std::runtime_error("LLVM optimisation failed: " + llvm::toString(std::move(error)));
}

std::vector<char> emitNativeCode(llvm::Module &module, llvm::TargetMachine &machine,
                                 NativeFileKind kind) {
  llvm::SmallVector<char, 0> buffer;
  llvm::raw_svector_ostream stream(buffer);
  llvm::legacy::PassManager passes;
  auto fileType = kind == NativeFileKind::Object ? llvm::CodeGenFileType::ObjectFile
                                                 : llvm::CodeGenFileType::AssemblyFile;
  if (machine.addPassesToEmitFile(passes, stream, nullptr, fileType))
    throw std::runtime_error("the LLVM target cannot emit this kind of file");
  passes.run(module);
  return {buffer.begin(), buffer.end()};
}

} // namespace optdsl
