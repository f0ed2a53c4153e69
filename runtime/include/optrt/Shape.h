// How OptDSL reads a tensor's shape (dsl/README.md "Matrices"): a stack of
// matrices over its last two dimensions, the dimensions before them the
// batch; a rank-1 tensor, or one given without a shape, is one row. The
// interpreter, the runtime (a rule's rank, rows and cols) and the memory
// report all read shapes through this one function.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace optrt {

/// A tensor as batch × rows × cols matrices.
struct MatrixView {
  size_t batch = 1; ///< matrices: the product of the dimensions before the last two
  size_t rows = 1;  ///< the second-to-last dimension (1 for a rank-1 tensor)
  size_t cols = 0;  ///< the last dimension
  size_t rank = 1;  ///< the number of dimensions (1 without a shape)
};

/// The view of a tensor of `size` elements with dimensions `shape` (empty:
/// 1-D). The product of `shape` must be `size` (shapeProblem checks it).
inline MatrixView matrixView(const std::vector<size_t> &shape, size_t size) {
  MatrixView view;
  view.cols = size;
  if (shape.empty())
    return view;
  view.rank = shape.size();
  view.cols = shape.back();
  if (view.rank >= 2)
    view.rows = shape[view.rank - 2];
  for (size_t k = 0; k + 2 < view.rank; ++k)
    view.batch *= shape[k];
  return view;
}

/// "2x3x5": a shape as the messages write it.
inline std::string shapeText(const std::vector<size_t> &shape) {
  std::string text;
  for (size_t dim : shape)
    text += (text.empty() ? "" : "x") + std::to_string(dim);
  return text;
}

/// What is wrong with a group's shapes (empty: every tensor 1-D), or "":
/// one shape per tensor, of positive dimensions multiplying out to its size.
inline std::string shapeProblem(const std::vector<std::vector<size_t>> &shapes, const std::vector<size_t> &sizes) {
  if (shapes.empty())
    return {};
  if (shapes.size() != sizes.size())
    return std::to_string(shapes.size()) + " shapes but " + std::to_string(sizes.size()) + " tensors";
  for (size_t i = 0; i < shapes.size(); ++i) {
    size_t product = 1;
    bool overflow = false;
    for (size_t dim : shapes[i])
      overflow = overflow || __builtin_mul_overflow(product, dim, &product);
    if (shapes[i].empty())
      return "tensor " + std::to_string(i) + " has an empty shape; a 1-D tensor of n elements is {n}";
    if (overflow || product != sizes[i])
      return "tensor " + std::to_string(i) + " has shape " + shapeText(shapes[i]) + ", which does not hold its " +
             std::to_string(sizes[i]) + " elements";
  }
  return {};
}

} // namespace optrt
