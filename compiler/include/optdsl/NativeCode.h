// From LLVM IR to native code for a named CPU: the target machine, LLVM's O3
// pipeline, and object or assembly output. Shared by `optc --emit=asm|so`
// and the kernel artifact. No fast-math: TargetOptions keep IEEE semantics,
// and the IR carries no fast-math flags, so results match the JIT's bitwise.
#pragma once

#include "llvm/IR/Module.h"
#include "llvm/Target/TargetMachine.h"

#include <memory>
#include <string>
#include <vector>

namespace optdsl {

/// CPU names to suggest in errors and help.
inline constexpr const char *kCpuExamples =
    "portable, host, x86-64, x86-64-v2, x86-64-v3 (AVX2), x86-64-v4 (AVX-512), x86-64-v4+avx512vbmi, "
    "skylake-avx512, znver4";

/// The CPU of a fat artifact: kernels for every x86-64 level, the loader
/// picks the best the running CPU has (portableCpus).
inline constexpr const char *kPortableCpu = "portable";

/// What `portable` compiles for, best first; the last is the baseline every
/// x86-64 CPU since 2009 runs, whose code also holds the host functions.
std::vector<std::string> portableCpus();

/// A target machine for this process's architecture and `cpu`: "host" (the
/// CPU this runs on, with its features), an LLVM CPU name, or a name with
/// extra features ("x86-64-v4+avx512vbmi+avx512bf16", features from the
/// artifact ABI's list). Throws std::invalid_argument for a CPU name LLVM
/// does not know or a feature outside that list.
std::unique_ptr<llvm::TargetMachine> createCpuTargetMachine(const std::string &cpu);

/// The instruction-set features from the artifact ABI's list (artifact_abi.h)
/// that code for this target machine may use, comma-separated.
std::string requiredCpuFeatures(const llvm::TargetMachine &machine);

/// Sets the module's triple and data layout and runs LLVM's O3 pipeline.
/// Throws std::runtime_error when optimisation fails.
void optimizeForTarget(llvm::Module &module, llvm::TargetMachine &machine);

enum class NativeFileKind { Object, Assembly };

/// Code for the module (already optimised). Throws std::runtime_error when
/// the target cannot emit this kind of file.
std::vector<char> emitNativeCode(llvm::Module &module, llvm::TargetMachine &machine,
                                 NativeFileKind kind);

} // namespace optdsl
