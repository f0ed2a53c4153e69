#include "Gemm.h"

#include <cstring>
#include <vector>

namespace charlm {
namespace {

typedef float v16 __attribute__((vector_size(64)));
typedef float v16u __attribute__((vector_size(64), aligned(4))); // unaligned access

inline v16 load(const float *p) { return *reinterpret_cast<const v16u *>(p); }
inline void store(float *p, v16 v) { *reinterpret_cast<v16u *>(p) = v; }

/// MR rows x (16 * NV) columns of C, over the whole depth.
template <int MR, int NV>
inline void microKernel(size_t depth, const float *a, size_t lda, const float *b, size_t ldb, float *c,
                        size_t ldc, bool accumulate) {
  v16 acc[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v)
      acc[r][v] = accumulate ? load(c + r * ldc + 16 * v) : v16{};
  for (size_t k = 0; k < depth; ++k) {
    v16 row[NV];
    for (int v = 0; v < NV; ++v)
      row[v] = load(b + k * ldb + 16 * v);
    for (int r = 0; r < MR; ++r) {
      float scalar = a[r * lda + k];
      for (int v = 0; v < NV; ++v)
        acc[r][v] += scalar * row[v];
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v)
      store(c + r * ldc + 16 * v, acc[r][v]);
}

template <int NV>
void panel(size_t rowBegin, size_t rowEnd, size_t depth, const float *a, size_t lda, const float *b,
           size_t ldb, float *c, size_t ldc, bool accumulate) {
  size_t i = rowBegin;
  for (; i + 4 <= rowEnd; i += 4)
    microKernel<4, NV>(depth, a + i * lda, lda, b, ldb, c + i * ldc, ldc, accumulate);
  for (; i < rowEnd; ++i)
    microKernel<1, NV>(depth, a + i * lda, lda, b, ldb, c + i * ldc, ldc, accumulate);
}

template <typename T>
void naiveRows(size_t rowBegin, size_t rowEnd, size_t colBegin, size_t colEnd, size_t depth, const T *a,
               size_t lda, const T *b, size_t ldb, T *c, size_t ldc, bool accumulate) {
  for (size_t i = rowBegin; i < rowEnd; ++i) {
    T *ci = c + i * ldc;
    if (!accumulate)
      for (size_t j = colBegin; j < colEnd; ++j)
        ci[j] = 0;
    for (size_t k = 0; k < depth; ++k) {
      T scalar = a[i * lda + k];
      const T *bk = b + k * ldb;
      for (size_t j = colBegin; j < colEnd; ++j)
        ci[j] += scalar * bk[j];
    }
  }
}

} // namespace

void gemmRows(size_t rowBegin, size_t rowEnd, size_t n, size_t depth, const float *a, size_t lda,
              const float *b, size_t ldb, float *c, size_t ldc, bool accumulate) {
  size_t j = 0;
  for (; j + 64 <= n; j += 64)
    panel<4>(rowBegin, rowEnd, depth, a, lda, b + j, ldb, c + j, ldc, accumulate);
  size_t left = (n - j) / 16;
  if (left == 3)
    panel<3>(rowBegin, rowEnd, depth, a, lda, b + j, ldb, c + j, ldc, accumulate);
  else if (left == 2)
    panel<2>(rowBegin, rowEnd, depth, a, lda, b + j, ldb, c + j, ldc, accumulate);
  else if (left == 1)
    panel<1>(rowBegin, rowEnd, depth, a, lda, b + j, ldb, c + j, ldc, accumulate);
  j += 16 * left;
  if (j == n)
    return;
  // Fewer than 16 columns left (the vocabulary is rarely a multiple of 16):
  // run the vector kernel on a zero-padded copy of those columns of B and a
  // 16-wide copy of C's rows, then copy the real columns back.
  const size_t width = n - j;
  thread_local std::vector<float> paddedB, paddedC;
  paddedB.assign(depth * 16, 0.0f);
  for (size_t k = 0; k < depth; ++k)
    std::memcpy(&paddedB[k * 16], b + k * ldb + j, width * sizeof(float));
  paddedC.assign((rowEnd - rowBegin) * 16, 0.0f);
  for (size_t i = rowBegin; i < rowEnd; ++i)
    std::memcpy(&paddedC[(i - rowBegin) * 16], c + i * ldc + j, width * sizeof(float));
  panel<1>(0, rowEnd - rowBegin, depth, a + rowBegin * lda, lda, paddedB.data(), 16, paddedC.data(), 16,
           accumulate);
  for (size_t i = rowBegin; i < rowEnd; ++i)
    std::memcpy(c + i * ldc + j, &paddedC[(i - rowBegin) * 16], width * sizeof(float));
}

void gemmRows(size_t rowBegin, size_t rowEnd, size_t n, size_t depth, const double *a, size_t lda,
              const double *b, size_t ldb, double *c, size_t ldc, bool accumulate) {
  naiveRows(rowBegin, rowEnd, 0, n, depth, a, lda, b, ldb, c, ldc, accumulate);
}

} // namespace charlm
