// Object code of a rule's kernels compiled on several threads, for the JIT:
// the kernels (KernelGen's module, not yet lowered) are split into one part
// per thread, of about equal size, and each part is lowered to the LLVM
// dialect, translated into an LLVMContext of its own, optimised and
// compiled by its own TargetMachine, all on its thread. The parts link back
// together in the JIT like the objects of any program.
// Why: lowering, LLVM's optimisation and code generation are nine tenths of
// a rule's JIT time, and a rule's kernels are independent functions.
#pragma once

#include "mlir/IR/BuiltinOps.h"
#include "llvm/ExecutionEngine/Orc/JITTargetMachineBuilder.h"
#include "llvm/IR/DataLayout.h"
#include "llvm/Support/MemoryBuffer.h"

#include <memory>
#include <vector>

namespace optdsl {

/// One object file per part of `kernels` (buildCpuKernels' module: its
/// functions and the globals they read; left as it was), made on at most
/// `threads` threads (at least one) for `target` with `dataLayout`. The
/// MLIR context must have the LLVM IR translations registered. Throws
/// std::runtime_error naming what failed.
std::vector<std::unique_ptr<llvm::MemoryBuffer>>
compileInParallel(mlir::ModuleOp kernels, const llvm::orc::JITTargetMachineBuilder &target,
                  const llvm::DataLayout &dataLayout, unsigned threads);

} // namespace optdsl
