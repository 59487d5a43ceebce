// The orthogonal regularizer (SPEC §2) as a differentiable torch term: γ·(1/N)·Σ(‖QQᵀ − I‖_F + ‖PᵀP − I‖_F).
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/eye.h>
#include <ATen/ops/zeros.h>

#include <cmath>
#include <span>
#include <string>

#include "adalora/adapters/orthogonal_regularizer.hpp"
#include "adalora/core/error.hpp"
#include "adalora/integrations/libtorch/attach.hpp"

namespace adalora::libtorch {

/// ‖Q Qᵀ − I‖_F + ‖Pᵀ P − I‖_F of one adapter (squared norms for orth_reg_form::paper_squared), Q = lora_A (r, in),
/// P = lora_B (out, r), as a differentiable float32 scalar on their device. ‖X‖_F has gradient X/‖X‖_F, and 0 at
/// X = 0 (torch's norm). A rank-0 adapter gives 0.
inline at::Tensor orthogonal_penalty(const at::Tensor& lora_A, const at::Tensor& lora_B,
                                     orth_reg_form form = orth_reg_form::peft) {
  const auto r = lora_A.size(0);
  if (lora_A.dim() != 2 || lora_B.dim() != 2 || lora_B.size(1) != r)
    throw shape_error("orthogonal_penalty(): lora_A is " + describe(lora_A) + " and lora_B " + describe(lora_B) +
                      "; expected (r, in) and (out, r)");
  const auto opts = lora_A.options().dtype(at::kFloat).requires_grad(false);
  if (r == 0) return at::zeros({}, opts);
  const at::Tensor q = lora_A.to(at::kFloat), p = lora_B.to(at::kFloat);
  const at::Tensor eye = at::eye(r, opts);
  const at::Tensor x = q.matmul(q.t()).sub(eye);
  const at::Tensor y = p.t().matmul(p).sub(eye);
  if (form == orth_reg_form::paper_squared) return x.square().sum().add(y.square().sum());
  return x.norm().add(y.norm());
}

/// orth_reg_weight · R over `adapters` as a differentiable scalar to add to the task loss before backward():
/// R = (1/N) Σ orthogonal_penalty, N = 2 × adapters (PEFT's form; the paper's squared form is summed, N = 1).
/// config_error for a negative or non-finite weight. No adapters give 0 (on the CPU).
inline at::Tensor orthogonal_regularization(std::span<const adapter_tensors> adapters, double orth_reg_weight,
                                            orth_reg_form form = orth_reg_form::peft) {
  if (!std::isfinite(orth_reg_weight) || orth_reg_weight < 0.0)
    throw config_error("orth_reg_weight = " + std::to_string(orth_reg_weight) + "; need a finite value >= 0");
  if (adapters.empty()) return at::zeros({}, at::TensorOptions().dtype(at::kFloat));
  at::Tensor total = orthogonal_penalty(adapters.front().lora_A, adapters.front().lora_B, form);
  for (std::size_t k = 1; k < adapters.size(); ++k)
    total = total.add(orthogonal_penalty(adapters[k].lora_A, adapters[k].lora_B, form));
  const double n = form == orth_reg_form::paper_squared ? 1.0 : 2.0 * static_cast<double>(adapters.size());
  return total.mul(orth_reg_weight / n);
}

/// The same over the adapters an allocator is attached to, with the allocator config's orth_reg_weight.
template <class Allocator>
at::Tensor orthogonal_regularization(const attached_allocator<Allocator>& attached,
                                     orth_reg_form form = orth_reg_form::peft) {
  return orthogonal_regularization(attached.adapters(), attached.allocator().config().orth_reg_weight, form);
}

}  // namespace adalora::libtorch
