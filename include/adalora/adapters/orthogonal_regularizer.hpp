// The orthogonal regularizer (SPEC §2): γ·(1/N)·Σ(‖QQᵀ − I‖_F + ‖PᵀP − I‖_F), its value and its gradient.
#pragma once

#include <cmath>
#include <cstddef>
#include <span>
#include <string>
#include <vector>

#include "adalora/adapters/detail/adapter_kernels.hpp"
#include "adalora/adapters/detail/low_rank_math.hpp"
#include "adalora/adapters/svd_adapter.hpp"
#include "adalora/backends/backend.hpp"
#include "adalora/core/error.hpp"
#include "adalora/core/view.hpp"

namespace adalora {

/// Which form of the penalty.
enum class orth_reg_form {
  peft,           ///< (1/N) Σ (‖QQᵀ − I‖_F + ‖PᵀP − I‖_F), N = 2 × adapters: un-squared norms, averaged (default)
  paper_squared,  ///< Σ (‖QQᵀ − I‖²_F + ‖PᵀP − I‖²_F): the paper's formula, squared and summed
};

/// Q = lora_A (r × in), P = lora_B (out × r), and the gradients the penalty is added into (null: value only).
template <MemorySpace Space>
struct orthogonal_views {
  matrix_view<const float, Space> lora_A;
  matrix_view<const float, Space> lora_B;
  matrix_view<float, Space> grad_A;
  matrix_view<float, Space> grad_B;
};

/// The views of an svd_adapter the regularizer needs.
template <Backend B>
orthogonal_views<typename B::memory_space> orthogonal_views_of(svd_adapter<B>& a) {
  return {a.lora_A(), a.lora_B(), a.grad_A(), a.grad_B()};
}

/// Returns γ·R over `adapters` and, where gradient views have data, adds γ·∂R into them. ‖X‖_F has gradient
/// X/‖X‖_F, defined as 0 at X = 0. Masked singular directions are regularized like the others.
template <Backend B>
double orthogonal_regularization(B& backend, std::span<const orthogonal_views<typename B::memory_space>> adapters,
                                 double orth_reg_weight, orth_reg_form form = orth_reg_form::peft) {
  if (!std::isfinite(orth_reg_weight) || orth_reg_weight < 0.0)
    throw config_error("orth_reg_weight = " + std::to_string(orth_reg_weight) + "; need a finite value >= 0");
  if (adapters.empty()) return 0.0;
  const bool squared = form == orth_reg_form::paper_squared;
  const double n = squared ? 1.0 : 2.0 * static_cast<double>(adapters.size());
  const double coef = orth_reg_weight / n;
  double total = 0.0;
  buffer_t<B, float> x{};
  for (const auto& a : adapters) {
    const std::size_t r = a.lora_A.extents[0], in = a.lora_A.extents[1], out = a.lora_B.extents[0];
    detail::check_gemm_operand(a.lora_A, r, in, "lora_A");
    detail::check_gemm_operand(a.lora_B, out, r, "lora_B");
    if (a.grad_A.data) detail::check_gemm_operand(a.grad_A, r, in, "grad_A");
    if (a.grad_B.data) detail::check_gemm_operand(a.grad_B, out, r, "grad_B");
    if (r == 0) continue;
    if (x.size() < r * r) x = backend.template allocate<float>(r * r);
    const auto lda = static_cast<std::size_t>(a.lora_A.strides[0]);
    const auto ldb = static_cast<std::size_t>(a.lora_B.strides[0]);
    // X = Q Qᵀ − I;  ∂‖X‖/∂Q = 2 X Q / ‖X‖,  ∂‖X‖²/∂Q = 4 X Q
    backend.gemm(transpose::no, transpose::yes, r, r, in, 1.0f, a.lora_A.data, lda, a.lora_A.data, lda, 0.0f, x.data(),
                 r);
    backend.for_each(r, detail::subtract_identity_fn{x.data(), r});
    const double sq_a = backend.transform_sum(r * r, detail::square_fn{x.data()});
    const double norm_a = std::sqrt(sq_a);
    total += squared ? sq_a : norm_a;
    if (a.grad_A.data && (squared || norm_a > 0.0)) {
      const double g = coef * (squared ? 4.0 : 2.0 / norm_a);
      backend.gemm(transpose::no, transpose::no, r, in, r, static_cast<float>(g), x.data(), r, a.lora_A.data, lda,
                   1.0f, a.grad_A.data, static_cast<std::size_t>(a.grad_A.strides[0]));
    }
    // Y = Pᵀ P − I;  ∂‖Y‖/∂P = 2 P Y / ‖Y‖
    backend.gemm(transpose::yes, transpose::no, r, r, out, 1.0f, a.lora_B.data, ldb, a.lora_B.data, ldb, 0.0f, x.data(),
                 r);
    backend.for_each(r, detail::subtract_identity_fn{x.data(), r});
    const double sq_b = backend.transform_sum(r * r, detail::square_fn{x.data()});
    const double norm_b = std::sqrt(sq_b);
    total += squared ? sq_b : norm_b;
    if (a.grad_B.data && (squared || norm_b > 0.0)) {
      const double g = coef * (squared ? 4.0 : 2.0 / norm_b);
      backend.gemm(transpose::no, transpose::no, out, r, r, static_cast<float>(g), a.lora_B.data, ldb, x.data(), r,
                   1.0f, a.grad_B.data, static_cast<std::size_t>(a.grad_B.strides[0]));
    }
  }
  return coef * total;
}

/// The same over owning svd_adapters.
template <Backend B>
double orthogonal_regularization(std::span<svd_adapter<B>* const> adapters, double orth_reg_weight,
                                 orth_reg_form form = orth_reg_form::peft) {
  std::vector<orthogonal_views<typename B::memory_space>> v;
  v.reserve(adapters.size());
  for (auto* a : adapters) v.push_back(orthogonal_views_of(*a));
  if (adapters.empty()) return 0.0;
  B backend = adapters.front()->backend();
  return orthogonal_regularization(backend, std::span<const orthogonal_views<typename B::memory_space>>(v),
                                   orth_reg_weight, form);
}

}  // namespace adalora
