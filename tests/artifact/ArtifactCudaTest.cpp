// An artifact built with TARGETS cpu cuda carries, next to its CPU kernels,
// the CUDA kernels of compiler/lib/CUDA: the same PTX per architecture, the
// cubins ptxas made, the entries and launch facts — what CudaOptimizer runs.
#include "optdsl/CUDACompile.h"
#include "optrt/Artifact.h"
#include "optrt/CudaKernels.h"
#include "optrt/CudaOptimizer.h"

#include <gtest/gtest.h>

#include <regex>

namespace optdsl {
namespace {

TEST(ArtifactCuda, CarriesTheCompilersCudaKernels) {
#ifndef OPTDSL_HAVE_CUDA_TOOLKIT
  GTEST_SKIP() << "no CUDA toolkit (libdevice) at configure time: no TARGETS cuda artifact built";
#else
  auto host = optrt::loadArtifact(std::string(ARTIFACT_DIR) + "/libopt_ademamix_cuda.so");
  ASSERT_EQ(host->layouts.size(), 1u);
  ASSERT_TRUE(host->layouts[0].cuda) << "the f32 layout has no CUDA kernels";
  const optrt::CudaKernels &loaded = *host->layouts[0].cuda;
  optrt::CudaKernels expected =
      cudaCompile(loadRuleFile(std::string(OPTDSL_DSL_DIR) + "/ademamix.opt"), {{"beta1", 0}});

  EXPECT_EQ(loaded.rule, "ademamix");
  EXPECT_EQ(loaded.fixedHypers, expected.fixedHypers);
  EXPECT_EQ(loaded.uniformsEntries, expected.uniformsEntries);
  EXPECT_EQ(loaded.elementEntries, expected.elementEntries);
  EXPECT_EQ(loaded.finishEntries, expected.finishEntries);
  EXPECT_EQ(loaded.scalarsEntry, expected.scalarsEntry);
  EXPECT_EQ(loaded.advanceEntry, expected.advanceEntry);
  EXPECT_EQ(loaded.gradStatsEntry, expected.gradStatsEntry);
  EXPECT_EQ(loaded.stepOptionsEntry, expected.stepOptionsEntry);
  EXPECT_FALSE(loaded.gradStatsEntry.empty());
  EXPECT_EQ(loaded.blockSize, expected.blockSize);
  EXPECT_EQ(loaded.buffersPerTensor, expected.buffersPerTensor);
  EXPECT_EQ(loaded.uniformStride, expected.uniformStride);
  EXPECT_EQ(loaded.partialStride, expected.partialStride);
  ASSERT_EQ(loaded.images.size(), expected.images.size());
  for (size_t i = 0; i < loaded.images.size(); ++i) {
    SCOPED_TRACE(loaded.images[i].arch);
    EXPECT_EQ(loaded.images[i].arch, expected.images[i].arch);
    EXPECT_EQ(loaded.images[i].ptxVersion, expected.images[i].ptxVersion);
    EXPECT_EQ(loaded.images[i].ptx, expected.images[i].ptx);
    // A cubin embeds nothing time-dependent: the same PTX gives the same bytes.
    EXPECT_EQ(loaded.images[i].cubin, expected.images[i].cubin);
    if (findPtxas())
      EXPECT_EQ(loaded.images[i].cubin.substr(0, 4), "\x7f" "ELF") << "the cubin is not an ELF image";
  }
  // beta1 fixed to 0 drops the fast EMA on the device too: the host layout
  // and the device tables agree on the buffers.
  EXPECT_EQ(static_cast<size_t>(loaded.buffersPerTensor), host->layouts[0].buffers.size());
#endif
}

/// PTX without the NVPTX backend's "// callseq N, M" comments, whose
/// numbers count calls across every compilation in the process.
std::string withoutCallSequenceComments(const std::string &ptx) {
  return std::regex_replace(ptx, std::regex("// callseq [0-9]+(, [0-9]+)?"), "");
}

TEST(ArtifactCuda, EveryLayoutCarriesItsOwnCudaKernels) {
#ifndef OPTDSL_HAVE_CUDA_TOOLKIT
  GTEST_SKIP() << "no CUDA toolkit (libdevice) at configure time: no TARGETS cuda artifact built";
#else
  auto host = optrt::loadArtifact(std::string(ARTIFACT_DIR) + "/libopt_adamw_cuda_layouts.so");
  // Four layouts and the q8 layout's small-tensor fallback.
  ASSERT_EQ(host->layouts.size(), 5u);
  CheckedRule rule = loadRuleFile(std::string(OPTDSL_DSL_DIR) + "/adamw.opt");
  for (const optrt::LayoutKernels &layout : host->layouts) {
    SCOPED_TRACE(layout.name);
    ASSERT_TRUE(layout.cuda) << "no CUDA kernels";
    EXPECT_EQ(layout.cuda->layout, layout.name);
    EXPECT_EQ(static_cast<size_t>(layout.cuda->buffersPerTensor), layout.buffers.size());
    CudaCompileOptions options;
    options.layout = layout.name;
    options.assemble = false;
    optrt::CudaKernels expected = cudaCompile(rule, {}, options);
    EXPECT_EQ(layout.cuda->elementEntries, expected.elementEntries);
    EXPECT_EQ(layout.cuda->uniformStride, expected.uniformStride);
    ASSERT_EQ(layout.cuda->images.size(), expected.images.size());
    for (size_t i = 0; i < expected.images.size(); ++i)
      EXPECT_EQ(withoutCallSequenceComments(layout.cuda->images[i].ptx),
                withoutCallSequenceComments(expected.images[i].ptx))
          << expected.images[i].arch;
  }
  // A layout the artifact was not built for is refused by name before any
  // driver call (this machine may have none).
  optrt::CudaOptimizerOptions options;
  options.layout = "state=f16";
  try {
    optrt::CudaOptimizer optimizer(host, options);
    FAIL() << "a layout the artifact lacks was accepted";
  } catch (const std::invalid_argument &e) {
    EXPECT_NE(std::string(e.what()).find("state=f16"), std::string::npos) << e.what();
  }
#endif
}

TEST(ArtifactCuda, ACpuOnlyArtifactCannotRunOnTheGpu) {
  auto cpuOnly = optrt::loadArtifact(std::string(ARTIFACT_DIR) + "/libopt_adamw.so");
  try {
    optrt::CudaOptimizer optimizer(cpuOnly);
    FAIL() << "a CPU-only artifact was accepted by CudaOptimizer";
  } catch (const std::invalid_argument &e) {
    std::string message = e.what();
    EXPECT_NE(message.find("rule 'adamw' carries no CUDA kernels"), std::string::npos) << message;
    EXPECT_NE(message.find("TARGETS cpu cuda"), std::string::npos) << message;
  }
}

} // namespace
} // namespace optdsl
