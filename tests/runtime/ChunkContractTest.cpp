// The calls a step makes, as RuleKernels.h specifies them: every tensor of
// every group cut into chunks of at most chunkElements, each chunk one call
// with begin/end relative to its tensor and buffers offset to the tensor's
// first element, and the chunks' partials summed into the tensor's reduction.
#include "TestData.h"
#include "TestRules.h"

#include <algorithm>
#include <tuple>

namespace optrt::test {
namespace {

using CallKey = std::tuple<const float *, const float *, const float *, int64_t, int64_t>;

std::vector<CallKey> keysOf(const std::vector<KernelCall> &calls) {
  std::vector<CallKey> keys;
  for (const KernelCall &call : calls)
    keys.emplace_back(call.param, call.grad, call.state, call.begin, call.end);
  std::sort(keys.begin(), keys.end());
  return keys;
}

TEST(ChunkContract, ChunksCoverEveryTensorWithTensorRelativeRanges) {
  for (size_t chunkElements : {size_t(65536), size_t(333)}) {
    for (unsigned threads : {1u, 3u}) {
      SCOPED_TRACE("chunkElements " + std::to_string(chunkElements) + ", threads " +
                   std::to_string(threads));
      Training run(recorderKernels(), {threads, chunkElements}, randomTensors(oddShape(), 5));
      GroupedTensors grads = randomTensors(oddShape(), 6);
      takeRecordedCalls();
      run.step(grads);

      std::vector<CallKey> expected;
      for (size_t g = 0; g < oddShape().size(); ++g)
        for (size_t t = 0; t < oddShape()[g].size(); ++t) {
          int64_t n = static_cast<int64_t>(oddShape()[g][t]);
          const float *state = run.optimizer.state("s", static_cast<int>(g), t).data();
          for (int64_t begin = 0; begin < n; begin += static_cast<int64_t>(chunkElements))
            expected.emplace_back(run.params[g][t].data(), grads[g][t].data(), state, begin,
                                  std::min(n, begin + static_cast<int64_t>(chunkElements)));
          // Partials (chunk lengths) summed over the tensor's chunks.
          EXPECT_EQ(run.optimizer.scalarState("seen", static_cast<int>(g), t),
                    static_cast<double>(n));
        }
      std::sort(expected.begin(), expected.end());
      EXPECT_EQ(keysOf(takeRecordedCalls()), expected);
    }
  }
}

TEST(ChunkContract, DefaultChunkSplitsOnlyTheLargeTensor) {
  Optimizer optimizer(recorderKernels());
  EXPECT_EQ(optimizer.chunkElements(), 65536u);
  GroupedTensors params = randomTensors(oddShape(), 5);
  for (Tensors &group : params) {
    std::vector<float *> pointers;
    std::vector<size_t> sizes;
    for (std::vector<float> &tensor : group) {
      pointers.push_back(tensor.data());
      sizes.push_back(tensor.size());
    }
    optimizer.addGroup(pointers, sizes);
  }
  takeRecordedCalls();
  optimizer.step(pointersTo(randomTensors(oddShape(), 6)));
  std::vector<KernelCall> calls = takeRecordedCalls();
  // Five tensors, the one of 70001 elements in two chunks.
  EXPECT_EQ(calls.size(), 6u);
  int largeChunks = 0;
  for (const KernelCall &call : calls)
    if (call.param == params[0][1].data()) {
      ++largeChunks;
      EXPECT_TRUE((call.begin == 0 && call.end == 65536) ||
                  (call.begin == 65536 && call.end == 70001));
    }
  EXPECT_EQ(largeChunks, 2);
}

} // namespace
} // namespace optrt::test
