// The default importance metric (SPEC §3): smoothed sensitivity |θ·∇θ| times its uncertainty, fused in one pass.
#pragma once

#include "adalora/core/config.hpp"
#include "adalora/core/float_ops.hpp"
#include "adalora/core/host_device.hpp"
#include "adalora/importance/importance_metric.hpp"

namespace adalora {

/// s(θ) = Ī · Ū with I = |θ·∇θ|, Ī ← β1 Ī + (1 − β1) I, Ū ← β2 Ū + (1 − β2) |I − Ī| (no bias correction).
/// Every product and sum is rounded to float32 separately, in PEFT's order, so results match it bit for bit: in device
/// code with explicitly rounded operations (detail::mul_rn, add_rn: no fused multiply-add whatever nvcc's -fmad says),
/// on the host with the plain operators (compile without contraction; the CMake target adds -ffp-contract=off).
struct sensitivity_uncertainty {
  using importance_metric_concept = importance_metric_tag;
  static constexpr std::size_t state_count = 2;  // [0] Ī, [1] Ū
  static constexpr bool needs_gradient = true;
  static constexpr const char* name = "sensitivity_uncertainty";

  float beta1 = 0.85f;
  float one_minus_beta1 = 0.15f;
  float beta2 = 0.85f;
  float one_minus_beta2 = 0.15f;

  constexpr sensitivity_uncertainty() = default;
  /// β1, β2 from the config; 1 − β is formed in double and then rounded, as PyTorch does with Python floats.
  explicit sensitivity_uncertainty(const adalora_config& c) noexcept
      : beta1(static_cast<float>(c.beta1)),
        one_minus_beta1(static_cast<float>(1.0 - c.beta1)),
        beta2(static_cast<float>(c.beta2)),
        one_minus_beta2(static_cast<float>(1.0 - c.beta2)) {}

  ADALORA_HOST_DEVICE void update(float theta, float grad, float (&state)[state_count]) const noexcept {
    using detail::add_rn, detail::mul_rn;
    const float ipt = detail::abs_f(mul_rn(theta, grad));
    const float smoothed_old = mul_rn(beta1, state[0]);
    const float smoothed = add_rn(smoothed_old, mul_rn(one_minus_beta1, ipt));
    const float uncertainty_old = mul_rn(beta2, state[1]);
    state[0] = smoothed;
    state[1] = add_rn(uncertainty_old, mul_rn(one_minus_beta2, detail::abs_f(detail::sub_rn(ipt, smoothed))));
  }

  ADALORA_HOST_DEVICE float score(const float (&state)[state_count]) const noexcept {
    return detail::mul_rn(state[0], state[1]);
  }

  /// The sensitivity |θ·∇θ| (NaN or infinite when θ or ∇θ is): what the in-place check bounds.
  ADALORA_HOST_DEVICE float input_size(float theta, float grad) const noexcept {
    return detail::abs_f(detail::mul_rn(theta, grad));
  }
  /// 2^48: with Ī, Ū ≤ 2^48 and I ≤ 2^48, Ī' ≤ fl(β1·2^48) + fl((1 − β1)·2^48) < 2^49 (β1 and 1 − β1 are each
  /// rounded to float, so their sum is at most 1 + 2^-23), |I − Ī'| < 2^49, Ū' < 2^50, and the score Ī'·Ū' < 2^99,
  /// within bounded_score_limit (2^100). A sensitivity |θ·∇θ| of 2^48 (about 2.8e14) is far beyond training's.
  static constexpr float safe_bound = 0x1p48f;
};

static_assert(BoundedImportanceMetric<sensitivity_uncertainty>);
// Ī' < 2 · safe_bound, Ū' < 4 · safe_bound: the score stays within the limit the allocator's sums rely on
static_assert(8.0f * sensitivity_uncertainty::safe_bound * sensitivity_uncertainty::safe_bound <= bounded_score_limit);

}  // namespace adalora
