// optc: the OptDSL compiler driver. Checks a rule file and emits one of its
// intermediate forms. Exit status: 0 success, 1 errors in the input, 2 usage.
#include "optdsl/CUDACompile.h"
#include "optdsl/KernelGen.h"
#include "optdsl/MLIRDiagnostics.h"
#include "optdsl/MLIRGen.h"
#include "optdsl/Sema.h"
#include "optdsl/Transforms/Passes.h"
#include "optdsl/Version.h"

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>

#include "mlir/IR/MLIRContext.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Target/LLVMIR/Dialect/Builtin/BuiltinToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/LLVMIR/LLVMToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Export.h"
#include "llvm/IR/LLVMContext.h"
#include "llvm/IR/Module.h"
#include "llvm/Support/raw_os_ostream.h"

namespace {

const char *kUsage = R"(usage: optc [options] FILE        (FILE '-' reads standard input)

Checks an OptDSL rule file and prints every error as file:line:col.

options:
  --emit=KIND     what to produce:
                    check  (default) parse and check only
                    ast    the AST with source locations
                    mlir     the rule in the opt MLIR dialect, as built from the
                             source (flat update; --fix not applied)
                    opt      the rule after the opt passes (opt-kernel-prep:
                             hypers fixed, one opt.phase per pass over memory,
                             uniform work hoisted)
                    lowered  the CPU kernels (func/scf/vector/arith/math)
                    llvm     the CPU kernels as LLVM IR
                    gpu      the CUDA kernels (gpu.module) before lowering
                    nvvm     the CUDA kernels in the LLVM and NVVM dialects
                    ptx      the CUDA kernels as PTX for --gpu-arch
  --gpu-arch=ARCH GPU architecture of --emit=ptx (default sm_90; sm_80, sm_90)
  --fix NAME=VALUE
                  build the kernels with hyper NAME fixed to VALUE (repeatable):
                  branches on it fold away, as do states it leaves untouched
  -o FILE         write the output to FILE instead of standard output
  --help          this text
  --version       version of OptDSL and of the MLIR/LLVM it uses
)";

int usageError(const std::string &message) {
  std::cerr << "optc: error: " << message << "\n" << kUsage;
  return 2;
}

} // namespace

int main(int argc, char **argv) {
  std::string emit = "check", input, output, gpuArch = "sm_90";
  optdsl::FixedHypers fixed;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::cout << kUsage;
      return 0;
    }
    if (arg == "--version") {
      std::cout << optdsl::versionString() << "\n";
      return 0;
    }
    if (arg.rfind("--emit=", 0) == 0) {
      emit = arg.substr(7);
      if (emit != "check" && emit != "ast" && emit != "mlir" && emit != "opt" && emit != "lowered" &&
          emit != "llvm" && emit != "gpu" && emit != "nvvm" && emit != "ptx")
        return usageError("unknown emit kind '" + emit +
                          "' (expected check, ast, mlir, opt, lowered, llvm, gpu, nvvm or ptx)");
    } else if (arg.rfind("--gpu-arch=", 0) == 0) {
      gpuArch = arg.substr(11);
      if (gpuArch.rfind("sm_", 0) != 0 || gpuArch.size() < 5)
        return usageError("--gpu-arch expects sm_NN (e.g. sm_80, sm_90), got '" + gpuArch + "'");
    } else if (arg == "--fix") {
      if (++i == argc)
        return usageError("--fix needs NAME=VALUE");
      std::string assignment = argv[i];
      size_t equals = assignment.find('=');
      char *end = nullptr;
      double value = equals == std::string::npos ? 0 : std::strtod(assignment.c_str() + equals + 1, &end);
      if (equals == std::string::npos || equals == 0 || end == assignment.c_str() + equals + 1 || *end)
        return usageError("--fix expects NAME=NUMBER, got '" + assignment + "'");
      fixed[assignment.substr(0, equals)] = value;
    } else if (arg == "-o") {
      if (++i == argc)
        return usageError("-o needs a file name");
      output = argv[i];
    } else if (arg.size() > 1 && arg[0] == '-') {
      return usageError("unknown option '" + arg + "'");
    } else if (!input.empty()) {
      return usageError("more than one input file ('" + input + "' and '" + arg + "')");
    } else {
      input = arg;
    }
  }
  if (input.empty())
    return usageError("no input file");

  std::shared_ptr<const optdsl::SourceFile> file;
  try {
    file = std::make_shared<const optdsl::SourceFile>(optdsl::SourceFile::load(input));
  } catch (const std::exception &e) {
    std::cerr << "optc: error: " << e.what() << "\n";
    return 1;
  }
  std::optional<optdsl::CheckedRule> rule = optdsl::compileSource(file, std::cerr);
  if (!rule)
    return 1;
  if (emit == "check")
    return 0;

  std::ofstream fileOut;
  if (!output.empty()) {
    fileOut.open(output);
    if (!fileOut) {
      std::cerr << "optc: error: cannot write '" << output << "': " << std::strerror(errno) << "\n";
      return 1;
    }
  }
  std::ostream &out = output.empty() ? std::cout : fileOut;
  if (emit == "ast") {
    optdsl::ast::print(out, rule->ast, *file);
    return out.good() ? 0 : 1;
  }
  if (emit == "gpu" || emit == "nvvm" || emit == "ptx") {
    try {
      if (emit == "ptx") {
        optdsl::CudaCompileOptions options;
        options.archs = {gpuArch};
        options.assemble = false;
        out << optdsl::cudaCompile(*rule, fixed, options).images.at(0).ptx;
      } else {
        out << optdsl::cudaModuleText(*rule, fixed, emit);
      }
    } catch (const std::exception &e) {
      std::cerr << "optc: error: " << e.what() << "\n";
      return 1;
    }
    return out.good() ? 0 : 1;
  }
  mlir::MLIRContext context;
  optdsl::DiagnosticEngine irDiagnostics(*file);
  optdsl::MLIRDiagnosticBridge bridge(context, irDiagnostics);
  try {
    optdsl::checkFixedHypers(*rule, fixed);
  } catch (const std::invalid_argument &e) {
    std::cerr << "optc: error: " << e.what() << "\n";
    return 1;
  }
  mlir::OwningOpRef<mlir::ModuleOp> module = optdsl::buildModule(context, *rule);
  if (!module) {
    std::cerr << "optc: internal error: the generated MLIR does not verify\n";
    return 1;
  }
  llvm::raw_os_ostream stream(out);
  if (emit == "mlir") {
    module->print(stream);
    stream.flush();
    return out.good() ? 0 : 1;
  }
  mlir::PassManager prep(&context);
  optdsl::buildKernelPrepPipeline(prep, fixed);
  if (mlir::failed(prep.run(*module))) {
    irDiagnostics.print(std::cerr);
    return 1;
  }
  if (emit == "opt") {
    module->print(stream);
    stream.flush();
    return out.good() ? 0 : 1;
  }
  optdsl::KernelSignature signature;
  mlir::OwningOpRef<mlir::ModuleOp> kernels = optdsl::buildKernels(*module, signature);
  if (!kernels) {
    irDiagnostics.print(std::cerr);
    return 1;
  }
  if (emit == "lowered") {
    kernels->print(stream);
    stream.flush();
    return out.good() ? 0 : 1;
  }
  if (mlir::failed(optdsl::lowerToLLVMDialect(*kernels))) {
    std::cerr << "optc: internal error: lowering to the LLVM dialect failed\n";
    return 1;
  }
  mlir::registerBuiltinDialectTranslation(context);
  mlir::registerLLVMDialectTranslation(context);
  llvm::LLVMContext llvmContext;
  std::unique_ptr<llvm::Module> llvmModule = mlir::translateModuleToLLVMIR(*kernels, llvmContext);
  if (!llvmModule) {
    std::cerr << "optc: internal error: translation to LLVM IR failed\n";
    return 1;
  }
  llvmModule->print(stream, nullptr);
  stream.flush();
  return out.good() ? 0 : 1;
}
