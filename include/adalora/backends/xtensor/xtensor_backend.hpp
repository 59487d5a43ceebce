// The xtensor backend: host memory, xtensor adaptors over the raw pointers for the reductions, k-th smallest and GEMM.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <string>
#include <utility>

#include <xtensor/xadapt.hpp>
#include <xtensor/xmath.hpp>
#include <xtensor/xnoalias.hpp>
#include <xtensor/xsort.hpp>
#include <xtensor/xstrided_view.hpp>
#include <xtensor/xtensor.hpp>

#include "adalora/backends/backend.hpp"
#include "adalora/backends/host_loop_primitives.hpp"
#include "adalora/core/error.hpp"

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

/// `len` elements p[0], p[stride], p[2 · stride], …: a row or column of a GEMM operand with its leading dimension.
/// A strided view of a 1-D adaptor over exactly the memory it spans (xt::adapt with strides wants a buffer of as
/// many elements as the shape holds, which a strided line is not).
inline auto xt_line(const float* p, std::size_t len, std::size_t stride) {
  const std::size_t span = (len - 1) * stride + 1;  // len > 0
  return xt::strided_view(xt_vector(p, span), std::array<std::size_t, 1>{len},
                          std::array<std::ptrdiff_t, 1>{static_cast<std::ptrdiff_t>(len == 1 ? 0 : stride)});
}

}  // namespace detail

/// Host backend built on xtensor. Stateless; reductions accumulate in double and round once to float, so that its
/// results equal the Eigen backend's; GEMM accumulates each row of C in double and rounds it once.
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
    // Row i of C is row i of op(A) times op(B), accumulated in double and rounded once. Row i of op(A) is converted
    // to double once; the inner loops then run over contiguous memory in either layout of B (a row of B when it is
    // used as stored, a row of the stored n × k matrix when transposed), and both sum over p in the same order, so
    // a transposition does not change the bits of the result.
    xt::xtensor<double, 1> a_row = xt::xtensor<double, 1>::from_shape({k});
    xt::xtensor<double, 1> acc = xt::xtensor<double, 1>::from_shape({n});
    double* const ar = a_row.data();
    double* const ac = acc.data();
    const double alpha_d = alpha, beta_d = beta;
    for (std::size_t i = 0; i < m; ++i) {
      // A is stored m × k (row i is contiguous), or k × m when transposed (row i of op(A) is column i, stride lda)
      xt::noalias(a_row) = xt::cast<double>(op_a == transpose::no ? detail::xt_line(a + i * lda, k, 1)
                                                                  : detail::xt_line(a + i, k, lda));
      if (op_b == transpose::no) {  // B is stored k × n: acc = Σ_p a_row[p] · row p of B
        std::fill(ac, ac + n, 0.0);
        for (std::size_t p = 0; p < k; ++p) {
          const double ap = ar[p];
          const float* const b_row = b + p * ldb;
          for (std::size_t j = 0; j < n; ++j) ac[j] += ap * static_cast<double>(b_row[j]);
        }
      } else {  // B is stored n × k: acc[j] = a_row · row j of B, four j at a time (four independent sums)
        std::size_t j = 0;
        for (; j + 4 <= n; j += 4) {
          const float* const b0 = b + j * ldb;
          const float *const b1 = b0 + ldb, *const b2 = b1 + ldb, *const b3 = b2 + ldb;
          double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
          for (std::size_t p = 0; p < k; ++p) {
            const double ap = ar[p];
            s0 += ap * static_cast<double>(b0[p]);
            s1 += ap * static_cast<double>(b1[p]);
            s2 += ap * static_cast<double>(b2[p]);
            s3 += ap * static_cast<double>(b3[p]);
          }
          ac[j] = s0, ac[j + 1] = s1, ac[j + 2] = s2, ac[j + 3] = s3;
        }
        for (; j < n; ++j) {
          const float* const b_row = b + j * ldb;
          double s = 0.0;
          for (std::size_t p = 0; p < k; ++p) s += ar[p] * static_cast<double>(b_row[p]);
          ac[j] = s;
        }
      }
      auto row = c_row(i);
      if (beta == 0.0f)  // C is not read: NaNs in it do not propagate
        xt::noalias(row) = xt::cast<float>(alpha_d * acc);
      else
        xt::noalias(row) = xt::cast<float>(alpha_d * acc + beta_d * xt::cast<double>(row));
    }
  }

  float kth_smallest(const float* v, std::size_t n, std::size_t k) const {
    if (k < 1 || k > n)
      throw usage_error("kth_smallest: k = " + std::to_string(k) + " is outside [1, " + std::to_string(n) + "]");
    // a partitioned copy (std::nth_element inside): exact, and the input is left as it was
    const auto partitioned = xt::partition(detail::xt_vector(v, n), k - 1, xt::xnone());
    return partitioned.unchecked(k - 1);
  }

};

static_assert(Backend<xtensor_backend>);

}  // namespace adalora
