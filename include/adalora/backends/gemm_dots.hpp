// A row-major GEMM's dot products accumulated in double, for the backends without a BLAS (Thrust, xtensor).
#pragma once

#include <cstddef>

#include "adalora/core/host_device.hpp"

namespace adalora::detail {

/// The inputs of a row-major GEMM op(A) · op(B): A stored m × k (k × m when transposed), B stored k × n (n × k when
/// transposed), leading dimensions in elements.
struct gemm_operands {
  const float* a;
  std::size_t lda;
  bool a_transposed;
  const float* b;
  std::size_t ldb;
  bool b_transposed;
  std::size_t m;
  std::size_t n;
  std::size_t k;

  ADALORA_HOST_DEVICE float a_at(std::size_t i, std::size_t p) const noexcept {
    return a_transposed ? a[p * lda + i] : a[i * lda + p];
  }
  ADALORA_HOST_DEVICE float b_at(std::size_t p, std::size_t j) const noexcept {
    return b_transposed ? b[j * ldb + p] : b[p * ldb + j];
  }
};

/// Σ_p op(A)[i, p] · op(B)[p, j] in double, the products added in order p = 0, 1, …, k − 1 (each product of two
/// floats is exact in double): the plain loop, and the form of one element per GPU thread.
ADALORA_HOST_DEVICE inline double gemm_dot(const gemm_operands& g, std::size_t i, std::size_t j) noexcept {
  double dot = 0.0;
  for (std::size_t p = 0; p < g.k; ++p) dot += static_cast<double>(g.a_at(i, p)) * static_cast<double>(g.b_at(p, j));
  return dot;
}

/// The column-block width callers give gemm_block_dots: a block of op(B) small enough to stay in cache across rows.
inline constexpr std::size_t gemm_dot_block = 128;

/// dot[jj] = gemm_dot(g, i, j0 + jj) for jj < width, to the bit, with loops that run through memory the way it is
/// laid out (the host form):
///  - op(B) = B (B stored k × n): p outer, the columns inner, reading row p of B contiguously;
///  - op(B) = Bᵀ (B stored n × k): a dot product per column along row j of B, four columns at a time.
inline void gemm_block_dots(const gemm_operands& g, std::size_t i, std::size_t j0, std::size_t width,
                            double* dot) noexcept {
  if (!g.b_transposed || g.k == 0) {  // (k = 0: no pointer arithmetic on operands that may be null)
    for (std::size_t jj = 0; jj < width; ++jj) dot[jj] = 0.0;
    for (std::size_t p = 0; p < g.k; ++p) {
      const double ap = g.a_at(i, p);
      const float* const b_row = g.b + p * g.ldb + j0;
      for (std::size_t jj = 0; jj < width; ++jj) dot[jj] += ap * static_cast<double>(b_row[jj]);
    }
    return;
  }
  std::size_t jj = 0;
  for (; jj + 4 <= width; jj += 4) {
    const float* const b0 = g.b + (j0 + jj) * g.ldb;
    const float *const b1 = b0 + g.ldb, *const b2 = b1 + g.ldb, *const b3 = b2 + g.ldb;
    double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
    for (std::size_t p = 0; p < g.k; ++p) {
      const double ap = g.a_at(i, p);
      s0 += ap * static_cast<double>(b0[p]);
      s1 += ap * static_cast<double>(b1[p]);
      s2 += ap * static_cast<double>(b2[p]);
      s3 += ap * static_cast<double>(b3[p]);
    }
    dot[jj] = s0, dot[jj + 1] = s1, dot[jj + 2] = s2, dot[jj + 3] = s3;
  }
  for (; jj < width; ++jj) dot[jj] = gemm_dot(g, i, j0 + jj);
}

}  // namespace adalora::detail
