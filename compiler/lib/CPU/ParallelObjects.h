// Object code of an LLVM module compiled on several threads, for the JIT:
// the module's functions are split into one part per thread, of about equal
// length, and each part, moved into an LLVMContext of its own through
// bitcode, is optimised by `optimize` and compiled by its own
// TargetMachine. The parts link back together in the JIT like the objects
// of any program.
// Why: LLVM's optimisation and code generation are three quarters of a
// rule's JIT time, and a rule's kernels are independent functions.
#pragma once

#include "llvm/ExecutionEngine/Orc/JITTargetMachineBuilder.h"
#include "llvm/IR/Module.h"
#include "llvm/Support/MemoryBuffer.h"

#include <functional>
#include <memory>
#include <vector>

namespace optdsl {

/// One object file per part of `module` (its triple and data layout already
/// the target's), made on at most `threads` threads (at least one).
/// `optimize` runs on each part first. Throws std::runtime_error with LLVM's
/// message on failure.
std::vector<std::unique_ptr<llvm::MemoryBuffer>>
compileInParallel(llvm::Module &module, const llvm::orc::JITTargetMachineBuilder &target,
                  const std::function<llvm::Error(llvm::Module *)> &optimize, unsigned threads);

} // namespace optdsl
