// The xtensor backend: host memory, xtensor adaptors over the raw pointers for the reductions and GEMM.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <utility>

#include <xtensor/xadapt.hpp>
#include <xtensor/xmath.hpp>
#include <xtensor/xnoalias.hpp>
#include <xtensor/xtensor.hpp>

#include "adalora/backends/backend.hpp"
#include "adalora/backends/gemm_dots.hpp"
#include "adalora/backends/host_loop_primitives.hpp"
#include "adalora/backends/kth_order.hpp"

namespace adalora {

namespace detail {

/// Non-owning xtensor adaptors over raw host pointers. The pointer is taken by value and moved in, so that the
/// adaptor holds a copy of it (xt::adapt keeps a reference to an lvalue pointer, which would dangle here).
template <class T>
auto xt_vector(T* p, std::size_t n) {
  return xt::adapt(std::move(p), n, xt::no_ownership(), std::array<std::size_t, 1>{n});
}

/// A contiguous row-major rows × cols matrix (static row-major layout: reductions step along memory).
inline auto xt_matrix(const float* p, std::size_t rows, std::size_t cols) {
  return xt::adapt(std::move(p), rows * cols, xt::no_ownership(), std::array<std::size_t, 2>{rows, cols});
}

}  // namespace detail

/// Host backend built on xtensor. Stateless; reductions accumulate in double and round once to float, so that its
/// results equal the Eigen backend's; GEMM accumulates each element of C in double and rounds it once.
struct xtensor_backend : detail::host_loop_primitives {
  using backend_concept = backend_tag;
  using memory_space = host_space;
  static constexpr const char* name = "xtensor";

  void col_sums(const float* m, std::size_t rows, std::size_t cols, float* out) const {
    if (cols == 0) return;
    auto o = detail::xt_vector(out, cols);
    if (rows == 0) {
      o.fill(0.0f);
      return;
    }
    xt::noalias(o) = xt::cast<float>(xt::sum(xt::cast<double>(detail::xt_matrix(m, rows, cols)), {std::size_t{0}}));
  }

  void gemm(transpose op_a, transpose op_b, std::size_t m, std::size_t n, std::size_t k, float alpha,
            const float* a, std::size_t lda, const float* b, std::size_t ldb, float beta, float* c,
            std::size_t ldc) const {
    if (m == 0 || n == 0) return;
    const auto c_row = [&](std::size_t i) { return detail::xt_vector(c + i * ldc, n); };
    if (k == 0) {
      for (std::size_t i = 0; i < m; ++i) {
        auto row = c_row(i);
        if (beta == 0.0f) row.fill(0.0f); else row *= beta;
      }
      return;
    }
    // C in blocks of a row × gemm_dot_block columns, block-major (the block of op(B) stays in cache across the
    // rows): the dot products accumulated in double (gemm_block_dots, the loops the Thrust backend shares: they run
    // through B in its layout and sum over p in one order either way), then scaled and rounded once.
    const detail::gemm_operands g{a, lda, op_a == transpose::yes, b, ldb, op_b == transpose::yes, m, n, k};
    std::array<double, detail::gemm_dot_block> dot{};
    const double alpha_d = alpha, beta_d = beta;
    for (std::size_t j0 = 0; j0 < n; j0 += detail::gemm_dot_block) {
      const std::size_t width = std::min(detail::gemm_dot_block, n - j0);
      const auto dots = detail::xt_vector(dot.data(), width);
      for (std::size_t i = 0; i < m; ++i) {
        detail::gemm_block_dots(g, i, j0, width, dot.data());
        auto part = detail::xt_vector(c + i * ldc + j0, width);
        if (beta == 0.0f)  // C is not read: NaNs in it do not propagate
          xt::noalias(part) = xt::cast<float>(alpha_d * dots);
        else
          xt::noalias(part) = xt::cast<float>(alpha_d * dots + beta_d * xt::cast<double>(part));
      }
    }
  }

  /// In the order every backend shares (backends/kth_order.hpp), which xt::partition's `<` does not give with NaN.
  float kth_smallest(const float* v, std::size_t n, std::size_t k) const {
    detail::check_kth_argument(n, k);
    return detail::kth_smallest_on_host(v, n, k);
  }

};

static_assert(Backend<xtensor_backend>);

}  // namespace adalora
