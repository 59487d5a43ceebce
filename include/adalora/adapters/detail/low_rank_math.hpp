// Forward and backward of y += s·((drop(x) Aᵀ) ⊙ λ) Bᵀ over backend GEMMs, shared by the SVD and LoRA adapters.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "adalora/adapters/detail/adapter_kernels.hpp"
#include "adalora/backends/backend.hpp"
#include "adalora/core/error.hpp"
#include "adalora/core/view.hpp"

namespace adalora::detail {

/// Raw parameter and gradient pointers of one low-rank adapter; E (and grad_E) null for plain LoRA.
struct low_rank_params {
  const float* A;
  const float* E;
  const float* B;
  float* grad_A;
  float* grad_E;
  float* grad_B;
  std::size_t r, in, out;
  float scaling;
};

/// Throws shape_error unless v is (rows × cols), row-major with unit column stride (what a GEMM reads).
template <class View>
void check_gemm_operand(const View& v, std::size_t rows, std::size_t cols, const char* what) {
  if (v.extents[0] != rows || v.extents[1] != cols)
    throw shape_error(std::string(what) + " is " + extents_string(v) + ", expected (" + std::to_string(rows) + ", " +
                      std::to_string(cols) + ")");
  if (rows * cols != 0 && (v.data == nullptr || v.strides[1] != 1 ||
                           v.strides[0] < static_cast<std::ptrdiff_t>(cols)))
    throw shape_error(std::string(what) + " must be row-major with unit column stride (strides " +
                      std::to_string(v.strides[0]) + ", " + std::to_string(v.strides[1]) + ")");
}

/// The activation state between one forward and its backward, and the scratch they use.
template <Backend B>
class low_rank_math {
public:
  using space = typename B::memory_space;

  /// y += s·((drop(x) Aᵀ) ⊙ λ) Bᵀ. Remembers x (which must stay valid until backward) and h = drop(x) Aᵀ.
  void forward(B& backend, const low_rank_params& p, matrix_view<const float, space> x, matrix_view<float, space> y,
               float dropout, std::uint64_t seed) {
    const std::size_t batch = x.extents[0];
    check_gemm_operand(x, batch, p.in, "x");
    check_gemm_operand(y, batch, p.out, "y");
    batch_ = batch;
    dropout_ = dropout;
    seed_ = seed;
    ++counter_;
    if (dropout > 0.0f) {
      reserve(backend, dropped_, batch * p.in);
      backend.for_each(batch * p.in, dropout_fn{x.data, p.in, x.strides[0], dropout, seed, counter_, dropped_.data()});
      x_ = dropped_.data();
      ldx_ = p.in;
    } else {
      x_ = x.data;
      ldx_ = static_cast<std::size_t>(x.strides[0]);
    }
    reserve(backend, h_, batch * p.r);
    reserve(backend, t_, batch * p.r);
    if (batch == 0 || p.r == 0) return;
    backend.gemm(transpose::no, transpose::yes, batch, p.r, p.in, 1.0f, x_, ldx_, p.A, p.in, 0.0f, h_.data(), p.r);
    backend.for_each(batch * p.r, scale_columns_fn{h_.data(), p.E, p.scaling, p.r, t_.data()});
    backend.gemm(transpose::no, transpose::yes, batch, p.out, p.r, 1.0f, t_.data(), p.r, p.B, p.r, 1.0f, y.data,
                 static_cast<std::size_t>(y.strides[0]));
  }

  /// Accumulates ∂A, ∂λ, ∂B of ⟨y, dy⟩ into the gradients, and ∂x into dx when dx has data.
  void backward(B& backend, const low_rank_params& p, matrix_view<const float, space> dy,
                matrix_view<float, space> dx) {
    if (counter_ == 0) throw usage_error("backward() before any forward(): the adapter has no saved activations");
    check_gemm_operand(dy, batch_, p.out, "dy");
    if (dx.data) check_gemm_operand(dx, batch_, p.in, "dx");
    const std::size_t batch = batch_;
    if (batch == 0 || p.r == 0) return;
    const auto lddy = static_cast<std::size_t>(dy.strides[0]);
    reserve(backend, u_, batch * p.r);
    // u = dy B   (batch × r)
    backend.gemm(transpose::no, transpose::no, batch, p.r, p.out, 1.0f, dy.data, lddy, p.B, p.r, 0.0f, u_.data(), p.r);
    // ∂B += dyᵀ (s·h⊙λ)
    backend.for_each(batch * p.r, scale_columns_fn{h_.data(), p.E, p.scaling, p.r, t_.data()});
    backend.gemm(transpose::yes, transpose::no, p.out, p.r, batch, 1.0f, dy.data, lddy, t_.data(), p.r, 1.0f,
                 p.grad_B, p.r);
    // ∂λ += s · Σ_b u ⊙ h
    if (p.grad_E) {
      reserve(backend, col_, p.r);
      backend.for_each(batch * p.r, multiply_fn{u_.data(), h_.data(), t_.data()});
      backend.col_sums(t_.data(), batch, p.r, col_.data());
      backend.for_each(p.r, axpy_fn{p.scaling, col_.data(), p.grad_E});
    }
    // dh = s · u ⊙ λ;  ∂A += dhᵀ drop(x)
    backend.for_each(batch * p.r, scale_columns_fn{u_.data(), p.E, p.scaling, p.r, t_.data()});
    backend.gemm(transpose::yes, transpose::no, p.r, p.in, batch, 1.0f, t_.data(), p.r, x_, ldx_, 1.0f, p.grad_A,
                 p.in);
    // ∂x += (dh A) ⊙ dropout mask
    if (dx.data) {
      const auto lddx = static_cast<std::size_t>(dx.strides[0]);
      if (dropout_ > 0.0f) {
        reserve(backend, dropped_grad_, batch * p.in);
        backend.gemm(transpose::no, transpose::no, batch, p.in, p.r, 1.0f, t_.data(), p.r, p.A, p.in, 0.0f,
                     dropped_grad_.data(), p.in);
        backend.for_each(batch * p.in, dropout_backward_fn{dropped_grad_.data(), p.in, dx.strides[0], dropout_, seed_,
                                                           counter_, dx.data});
      } else {
        backend.gemm(transpose::no, transpose::no, batch, p.in, p.r, 1.0f, t_.data(), p.r, p.A, p.in, 1.0f, dx.data,
                     lddx);
      }
    }
  }

private:
  static void reserve(B& backend, buffer_t<B, float>& buf, std::size_t n) {
    if (buf.size() < n) buf = backend.template allocate<float>(n);
  }

  std::size_t batch_ = 0;
  const float* x_ = nullptr;
  std::size_t ldx_ = 0;
  float dropout_ = 0.0f;
  std::uint64_t seed_ = 0, counter_ = 0;
  buffer_t<B, float> dropped_{}, dropped_grad_{}, h_{}, t_{}, u_{}, col_{};
};

}  // namespace adalora::detail
