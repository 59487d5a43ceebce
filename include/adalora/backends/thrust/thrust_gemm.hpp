// The Thrust backend's own GEMM work items: one element per item (devices), a row × a block of columns (host).
#pragma once

#include <cstddef>

#include "adalora/backends/gemm_dots.hpp"
#include "adalora/core/host_device.hpp"

namespace adalora::detail {

/// Where and how a Thrust GEMM writes C = alpha · op(A) · op(B) (+ beta · C), row-major with leading dimension ldc.
struct thrust_gemm_output {
  float* c;
  std::size_t ldc;
  float alpha;
  float beta;

  /// C[i, j] from its dot product (gemm_dot): rounded once to float, times alpha (0 when k = 0, whatever alpha),
  /// plus beta · C[i, j] (C is not read when beta = 0, so NaNs there do not propagate).
  ADALORA_HOST_DEVICE void store(std::size_t i, std::size_t j, std::size_t k, double dot) const noexcept {
    const float result = k == 0 ? 0.0f : alpha * static_cast<float>(dot);
    float& out = c[i * ldc + j];
    out = beta == 0.0f ? result : beta * out + result;
  }
};

/// One element of C per item, item i · n + j: the device form (neighbouring threads write neighbouring elements).
struct thrust_gemm_fn {
  gemm_operands g;
  thrust_gemm_output out;

  ADALORA_HOST_DEVICE void operator()(std::size_t idx) const noexcept {
    const std::size_t i = idx / g.n, j = idx % g.n;
    out.store(i, j, g.k, gemm_dot(g, i, j));
  }
};

/// One row of C × a block of up to gemm_dot_block columns per item: the host form. Items are column-block-major
/// (item = block · m + i), so that consecutive items, which one thread runs, reuse the same block of op(B). The
/// same bits as thrust_gemm_fn (gemm_block_dots adds the products of gemm_dot in its order).
struct thrust_gemm_block_fn {
  gemm_operands g;
  thrust_gemm_output out;

  static std::size_t items(std::size_t m, std::size_t n) noexcept {
    return m * ((n + gemm_dot_block - 1) / gemm_dot_block);
  }

  void operator()(std::size_t idx) const noexcept {
    const std::size_t i = idx % g.m, j0 = (idx / g.m) * gemm_dot_block;
    const std::size_t width = g.n - j0 < gemm_dot_block ? g.n - j0 : gemm_dot_block;
    double dot[gemm_dot_block];
    gemm_block_dots(g, i, j0, width, dot);
    for (std::size_t jj = 0; jj < width; ++jj) out.store(i, j0 + jj, g.k, dot[jj]);
  }
};

}  // namespace adalora::detail
