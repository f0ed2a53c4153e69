// optc: the OptDSL compiler driver. Checks a rule file and emits one of its
// intermediate forms. Exit status: 0 success, 1 errors in the input, 2 usage.
#include "optdsl/Artifact.h"
#include "optdsl/CUDACompile.h"
#include "optdsl/CpuPipeline.h"
#include "optrt/MemoryReport.h"
#include "optdsl/KernelGen.h"
#include "optdsl/MLIRDiagnostics.h"
#include "optdsl/MLIRGen.h"
#include "optdsl/NativeCode.h"
#include "optdsl/Sema.h"
#include "optdsl/Transforms/Passes.h"
#include "optdsl/Version.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <numeric>
#include <optional>
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
                    check  (default) parse, check, and run the analyses of the
                           build (phases, kernel generation for --layout)
                    ast    the AST with source locations
                    mlir     the rule in the opt MLIR dialect, as built from the
                             source (flat update; --fix not applied)
                    opt      the rule after the opt passes (opt-kernel-prep:
                             hypers fixed, one opt.phase per pass over memory,
                             uniform work hoisted)
                    lowered  the CPU kernels (func/scf/vector/arith/math)
                    llvm     the CPU kernels as LLVM IR
                    asm      the kernel artifact's native assembly
                    so       the kernel artifact: a shared library with the
                             C ABI of optrt/artifact_abi.h (default output
                             libopt_<rule>.so)
                    gpu      the CUDA kernels (gpu.module) before lowering
                    nvvm     the CUDA kernels in the LLVM and NVVM dialects
                    ptx      the CUDA kernels as PTX for --gpu-arch
                  (gpu, nvvm, ptx: of the one --layout given, default f32)
  --cpu=NAME      CPU to compile asm/so for (default portable: kernels for
                  x86-64-v4 with VBMI and BF16, x86-64-v4, x86-64-v3 and
                  x86-64-v2 in one artifact, the loader runs the best this
                  CPU has); host, x86-64, x86-64-v2, x86-64-v3 (AVX2),
                  x86-64-v4 (AVX-512), any CPU name LLVM knows (znver4,
                  ...), optionally with +feature... (x86-64-v4+avx512vbmi)
  --layout=TEXT   storage layout to compile (repeatable; default f32),
                  written as in docs/layouts.md: f32, param=bf16,master=f32,
                  state=q8, m1=q8,nu=f32, ...; a q8 layout brings its
                  small-tensor fallback (q8 states in f32) along
  --memory        print bytes per parameter (param, grad, master, state) of
                  each --layout (default: f32, state=bf16, state=q8,
                  param=bf16,master=f32 and param=bf16,master=f32,state=q8)
                  over GPT-2 small's tensors (their shapes), or over --sizes
                  or --shapes
  --sizes=N,N,... tensor sizes (elements) for --memory, every tensor 1-D
  --shapes=RxC,N,... tensor shapes for --memory (dimensions joined by x):
                  what [rows] and [cols] states hold
  --gpu-arch=ARCH GPU architecture of --emit=ptx (default sm_90; sm_80, sm_90)
  --cuda          with --emit=so: also embed the CUDA kernels of every
                  layout (PTX for sm_80 and sm_90, cubins where ptxas is
                  found; needs the CUDA toolkit's libdevice, not a GPU)
  --fix NAME=VALUE
                  build the kernels with hyper NAME fixed to VALUE (repeatable):
                  branches on it fold away, as do states it leaves untouched
  -o FILE         write the output to FILE instead of standard output
  --help          this text
  --version       version of OptDSL and of the MLIR/LLVM it uses
)";

/// "768x2304,2304" as {{768, 2304}, {2304}} (with `dims` false, one positive
/// number per item); nullopt with `bad` the item that is not.
std::optional<std::vector<std::vector<size_t>>> parseShapes(const std::string &list, bool dims, std::string &bad) {
  std::vector<std::vector<size_t>> shapes;
  for (size_t start = 0; start <= list.size();) {
    size_t comma = std::min(list.find(',', start), list.size());
    std::string item = list.substr(start, comma - start);
    std::vector<size_t> &shape = shapes.emplace_back();
    for (size_t from = 0; from <= item.size();) {
      size_t x = dims ? std::min(item.find('x', from), item.size()) : item.size();
      std::string dim = item.substr(from, x - from);
      char *end = nullptr;
      unsigned long long n = std::strtoull(dim.c_str(), &end, 10);
      if (dim.empty() || *end || n == 0) {
        bad = item;
        return std::nullopt;
      }
      shape.push_back(static_cast<size_t>(n));
      from = x + 1;
    }
    start = comma + 1;
  }
  return shapes;
}

int usageError(const std::string &message) {
  std::cerr << "optc: error: " << message << "\n" << kUsage;
  return 2;
}

/// Runs one of the artifact builders, turning its exceptions into the exit
/// status: 2 for a bad option value (unknown CPU, layout, fixed hyper), 1 for
/// a rule that does not compile or a file that cannot be written.
template <typename Build> int reportErrors(Build &&build) {
  try {
    build();
    return 0;
  } catch (const std::invalid_argument &e) {
    std::cerr << "optc: error: " << e.what() << "\n";
    return 2;
  } catch (const std::exception &e) {
    std::cerr << "optc: error: " << e.what() << "\n";
    return 1;
  }
}

/// `optc --memory`: the memory table of the rule's states (after --fix,
/// which can drop states) under each layout, from optrt::memoryReport.
int printMemory(const optdsl::CheckedRule &rule, const optdsl::ArtifactOptions &options,
                std::vector<std::string> layouts, const std::vector<size_t> &sizes,
                const std::vector<std::vector<size_t>> &shapes, std::ostream &out) {
  if (layouts.empty())
    layouts = {"f32", "state=bf16", "state=q8", "param=bf16,master=f32", "param=bf16,master=f32,state=q8"};
  return reportErrors([&] {
    mlir::MLIRContext context;
    // Building the kernels checks each layout against the rule, as --emit=so
    // would.
    optdsl::CpuKernelModule kernels = optdsl::buildCpuKernelModule(context, rule, options.fixed, layouts);
    const std::vector<optrt::StateInfo> &states = kernels.signature.states;
    optrt::MemoryOptions memoryOptions;
    memoryOptions.shapes = shapes;
    std::string names;
    for (const optrt::StateInfo &state : states)
      if (!state.scratch)
        names += (names.empty() ? "" : ", ") + state.name;
    char line[256];
    std::snprintf(line, sizeof line, "| %-40s | %6s | %6s | %6s | %6s | %6s |\n", "layout", "param", "grad",
                  "master", "state", "total");
    out << "rule " << rule.name() << " (states: " << names << ")\n" << line;
    out << "| ---------------------------------------- | -----: | -----: | -----: | -----: | -----: |\n";
    size_t params = 0;
    for (const std::string &text : layouts) {
      optrt::MemoryReport r = optrt::memoryReport(states, optrt::Layout::parse(text), sizes, memoryOptions);
      std::snprintf(line, sizeof line, "| %-40s | %6.3f | %6.3f | %6.3f | %6.3f | %6.3f |\n",
                    optrt::Layout::parse(text).str().c_str(), r.param, r.grad, r.master, r.state, r.total());
      out << line;
      params = r.numParams;
    }
    out << "bytes per parameter over " << params << " parameters in " << sizes.size()
        << " tensors; q8 states of tensors under 4096 elements are kept in f32\n";
    for (const optrt::StateInfo &state : states)
      if (!state.scalar && state.span != optrt::StateSpan::Elements) {
        std::snprintf(line, sizeof line, "%s %s: one f32 per %s, %.4f B/param%s, in every layout\n",
                      state.scratch ? "scratch of" : "state", state.name.c_str(),
                      state.span == optrt::StateSpan::Rows   ? "row of each matrix"
                      : state.span == optrt::StateSpan::Cols ? "column of each matrix"
                                                             : "matrix",
                      optrt::memoryReport({state}, optrt::Layout{}, sizes, memoryOptions).state,
                      shapes.empty() ? " (every tensor 1-D: one row)" : "");
        out << line;
      }
    // Inputs are the trainer's memory, as the gradients are, not the optimizer's.
    for (const optrt::InputInfo &input : kernels.signature.inputs)
      out << "input " << input.name << ": held by the trainer, stored like the grad (not counted above)\n";
  });
}

int emitArtifact(const optdsl::CheckedRule &rule, const optdsl::ArtifactOptions &options,
                 const std::string &output) {
  return reportErrors([&] { optdsl::buildArtifact(rule, options, output); });
}

int emitAssembly(const optdsl::CheckedRule &rule, const optdsl::ArtifactOptions &options,
                 std::ostream &out) {
  int status = reportErrors([&] {
    llvm::LLVMContext llvmContext;
    optdsl::ArtifactModule compiled = optdsl::compileArtifactModule(rule, options, llvmContext);
    std::vector<char> text =
        optdsl::emitNativeCode(*compiled.module, *compiled.machine, optdsl::NativeFileKind::Assembly);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
  });
  return status != 0 ? status : out.good() ? 0 : 1;
}

} // namespace

int main(int argc, char **argv) {
  std::string emit = "check", input, output, gpuArch = "sm_90";
  optdsl::FixedHypers fixed;
  optdsl::ArtifactOptions artifact;
  bool layoutGiven = false, memory = false;
  std::vector<std::string> memoryLayouts;
  std::vector<size_t> sizes = optrt::gpt2SmallTensorSizes();
  std::vector<std::vector<size_t>> shapes = optrt::gpt2SmallTensorShapes();
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
          emit != "llvm" && emit != "asm" && emit != "so" && emit != "gpu" && emit != "nvvm" &&
          emit != "ptx")
        return usageError("unknown emit kind '" + emit +
                          "' (expected check, ast, mlir, opt, lowered, llvm, asm, so, gpu, nvvm or ptx)");
    } else if (arg.rfind("--gpu-arch=", 0) == 0) {
      gpuArch = arg.substr(11);
      if (gpuArch.rfind("sm_", 0) != 0 || gpuArch.size() < 5)
        return usageError("--gpu-arch expects sm_NN (e.g. sm_80, sm_90), got '" + gpuArch + "'");
    } else if (arg == "--cuda") {
      artifact.cuda = true;
    } else if (arg.rfind("--cpu=", 0) == 0) {
      artifact.cpu = arg.substr(6);
      if (artifact.cpu.empty())
        return usageError("--cpu needs a CPU name");
    } else if (arg.rfind("--layout=", 0) == 0) {
      if (!layoutGiven)
        artifact.layouts.clear();
      layoutGiven = true;
      artifact.layouts.push_back(arg.substr(9));
      memoryLayouts.push_back(arg.substr(9));
    } else if (arg == "--memory") {
      memory = true;
    } else if (arg.rfind("--shapes=", 0) == 0 || arg.rfind("--sizes=", 0) == 0) {
      bool sized = arg.rfind("--sizes=", 0) == 0;
      std::string bad;
      std::optional<std::vector<std::vector<size_t>>> parsed = parseShapes(arg.substr(sized ? 8 : 9), !sized, bad);
      if (!parsed)
        return usageError(sized ? "--sizes expects positive element counts separated by commas, got '" + bad + "'"
                                : "--shapes expects dimensions like 768x2304 separated by commas, got '" + bad + "'");
      sizes.clear();
      for (const std::vector<size_t> &shape : *parsed)
        sizes.push_back(std::accumulate(shape.begin(), shape.end(), size_t{1}, std::multiplies<>()));
      // --sizes: every tensor 1-D.
      shapes = sized ? std::vector<std::vector<size_t>>{} : *parsed;
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
  // A transform is checked as written; its kernels are built in the rules
  // that apply it.
  if (rule->ast.transform && (emit == "check" || emit == "ast") && !memory) {
    if (emit == "ast")
      optdsl::ast::print(std::cout, rule->ast, *file);
    return 0;
  }
  if (rule->ast.transform) {
    std::cerr << "optc: error: '" << rule->name() << "' is a transform, not an optimizer: apply it in one ('apply "
              << rule->name() << ";') to build kernels\n";
    return 1;
  }
  artifact.fixed = fixed;
  if (memory)
    return printMemory(*rule, artifact, memoryLayouts, sizes, shapes, std::cout);
  // Checking runs every analysis the build runs (the opt passes, kernel
  // generation for the layouts), so a rule that passes builds.
  if (emit == "check")
    return optdsl::checkKernels(*rule, fixed, artifact.layouts, std::cerr) ? 0 : 1;
  if (emit == "so")
    return emitArtifact(*rule, artifact, output.empty() ? "libopt_" + rule->name() + ".so" : output);

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
    // One device module per layout: these print one.
    if (artifact.layouts.size() != 1) {
      std::cerr << "optc: error: --emit=" << emit << " prints the kernels of one layout; got "
                << artifact.layouts.size() << " --layout options\n";
      return 2;
    }
    try {
      if (emit == "ptx") {
        optdsl::CudaCompileOptions options;
        options.archs = {gpuArch};
        options.assemble = false;
        options.layout = artifact.layouts.front();
        out << optdsl::cudaCompile(*rule, fixed, options).images.at(0).ptx;
      } else {
        out << optdsl::cudaModuleText(*rule, fixed, emit, artifact.layouts.front());
      }
    } catch (const std::exception &e) {
      std::cerr << "optc: error: " << e.what() << "\n";
      return 1;
    }
    return out.good() ? 0 : 1;
  }
  if (emit == "asm")
    return emitAssembly(*rule, artifact, out);
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
    // A located error (a rule the kernels cannot take yet), or a bug.
    if (irDiagnostics.hasErrors())
      irDiagnostics.print(std::cerr);
    else
      std::cerr << "optc: internal error: the generated MLIR does not verify\n";
    return 1;
  }
  llvm::raw_os_ostream stream(out);
  if (emit == "mlir") {
    module->print(stream);
    stream << "\n";
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
    stream << "\n";
    stream.flush();
    return out.good() ? 0 : 1;
  }
  optdsl::KernelSignature signature;
  mlir::OwningOpRef<mlir::ModuleOp> kernels;
  try {
    kernels = optdsl::buildKernels(*module, signature, artifact.layouts);
  } catch (const std::invalid_argument &e) {
    std::cerr << "optc: error: " << e.what() << "\n";
    return 2;
  }
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
