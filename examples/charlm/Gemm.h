// Dense row-major matrix products for the model, on a range of output rows
// (the caller splits rows over threads). One kernel serves all three
// products of a linear layer: forward X·W, and backward dY·Wᵀ and Xᵀ·dY after
// an explicit transpose, which costs one pass over a matrix and keeps every
// inner loop contiguous.
//
// float: a register-blocked micro-kernel (4 rows x 64 columns of C held in
// sixteen 16-wide vectors, one row of B loaded per k and reused by 4 rows of
// A), over 64-column panels of B small enough to stay in L2 across the row
// tiles. double (gradient checks only): the plain triple loop.
//
// Every C element is a sum over k in increasing order with no reassociation
// (IEEE, no fast-math), so results do not depend on how rows are split.
#pragma once

#include <cstddef>

namespace charlm {

/// C[i][j] (accumulate ? += : =) sum_k A[i][k] * B[k][j] for rows i in
/// [rowBegin, rowEnd), j < n, k < depth. lda/ldb/ldc are row strides.
void gemmRows(size_t rowBegin, size_t rowEnd, size_t n, size_t depth, const float *a, size_t lda,
              const float *b, size_t ldb, float *c, size_t ldc, bool accumulate);
void gemmRows(size_t rowBegin, size_t rowEnd, size_t n, size_t depth, const double *a, size_t lda,
              const double *b, size_t ldb, double *c, size_t ldc, bool accumulate);

/// dst (cols x rows) = transpose of src (rows x cols), both dense.
template <typename T> void transpose(size_t rows, size_t cols, const T *src, T *dst) {
  constexpr size_t kBlock = 32; // a block of both matrices fits in L1
  for (size_t i0 = 0; i0 < rows; i0 += kBlock)
    for (size_t j0 = 0; j0 < cols; j0 += kBlock)
      for (size_t i = i0; i < i0 + kBlock && i < rows; ++i)
        for (size_t j = j0; j < j0 + kBlock && j < cols; ++j)
          dst[j * rows + i] = src[i * cols + j];
}

} // namespace charlm
