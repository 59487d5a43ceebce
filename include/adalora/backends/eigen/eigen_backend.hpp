// The Eigen backend: the CPU reference backend, host memory, Eigen maps for the reductions.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cstddef>

#include "adalora/backends/backend.hpp"
#include "adalora/backends/host_loop_primitives.hpp"
#include "adalora/backends/kth_order.hpp"

namespace adalora {

/// Host backend built on Eigen. Stateless; reductions accumulate in double and round once to float.
struct eigen_backend : detail::host_loop_primitives {
  using backend_concept = backend_tag;
  using memory_space = host_space;
  static constexpr const char* name = "eigen";

  void col_sums(const float* m, std::size_t rows, std::size_t cols, float* out) const {
    if (cols == 0) return;
    if (rows == 0) {
      std::fill(out, out + cols, 0.0f);
      return;
    }
    const Eigen::Array<double, 1, Eigen::Dynamic> sums = map(m, rows, cols).cast<double>().colwise().sum();
    for (std::size_t j = 0; j < cols; ++j) out[j] = static_cast<float>(sums(static_cast<Eigen::Index>(j)));
  }

  void gemm(transpose op_a, transpose op_b, std::size_t m, std::size_t n, std::size_t k, float alpha,
            const float* a, std::size_t lda, const float* b, std::size_t ldb, float beta, float* c,
            std::size_t ldc) const {
    using stride = Eigen::OuterStride<>;
    using matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    const auto ix = [](std::size_t v) { return static_cast<Eigen::Index>(v); };
    Eigen::Map<matrix, 0, stride> C(c, ix(m), ix(n), stride(ix(ldc)));
    if (m == 0 || n == 0) return;
    if (k == 0) {
      if (beta == 0.0f) C.setZero(); else C *= beta;
      return;
    }
    // A is stored m × k (or k × m when transposed), B k × n (or n × k)
    const Eigen::Map<const matrix, 0, stride> A(a, ix(op_a == transpose::no ? m : k),
                                                ix(op_a == transpose::no ? k : m), stride(ix(lda)));
    const Eigen::Map<const matrix, 0, stride> B(b, ix(op_b == transpose::no ? k : n),
                                                ix(op_b == transpose::no ? n : k), stride(ix(ldb)));
    auto run = [&](const auto& opA, const auto& opB) {
      if (beta == 0.0f)
        C.noalias() = alpha * (opA * opB);
      else {
        C *= beta;
        C.noalias() += alpha * (opA * opB);
      }
    };
    if (op_a == transpose::no && op_b == transpose::no) run(A, B);
    else if (op_a == transpose::no) run(A, B.transpose());
    else if (op_b == transpose::no) run(A.transpose(), B);
    else run(A.transpose(), B.transpose());
  }

  float kth_smallest(const float* v, std::size_t n, std::size_t k) const {
    detail::check_kth_argument(n, k);
    return detail::kth_smallest_on_host(v, n, k);
  }


private:
  using row_major_array = Eigen::Array<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  static Eigen::Map<const row_major_array> map(const float* m, std::size_t rows, std::size_t cols) {
    return Eigen::Map<const row_major_array>(m, static_cast<Eigen::Index>(rows), static_cast<Eigen::Index>(cols));
  }
};

static_assert(Backend<eigen_backend>);

}  // namespace adalora
