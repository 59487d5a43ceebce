// budget_study: two importance metrics written as a user would, against the library's public ImportanceMetric concept.
//
// Neither is part of the library: they show what a metric plug-in looks like, and the budget sweep compares them with
// the built-in ones (sensitivity × uncertainty, magnitude). Each is a per-element functor: the allocator calls
// update(θ, ∇θ, state) on every element of P, Λ and Q after each optimizer step, and scores singular value i by
// score(λ_i) + mean_j score(Q_ij) + mean_j score(P_ji) (SPEC §3).
#pragma once

#include <cmath>
#include <cstddef>

#include "adalora/core/config.hpp"
#include "adalora/importance/importance_metric.hpp"

namespace budget_study {

/// The EMA factor both metrics smooth with: the config's β1, and 1 − β1 formed in double then rounded (as the default
/// metric forms it).
struct beta1_smoothing {
  float beta1 = 0.85f;
  float one_minus_beta1 = 0.15f;

  beta1_smoothing() = default;
  explicit beta1_smoothing(const adalora::adalora_config& c) noexcept
      : beta1(static_cast<float>(c.beta1)), one_minus_beta1(static_cast<float>(1.0 - c.beta1)) {}
};

/// Sensitivity alone (the paper's ablation without the uncertainty factor): s = Ī with Ī ← β1 Ī + (1 − β1)|θ·∇θ|,
/// the very Ī that the default metric multiplies by its uncertainty Ū.
struct smoothed_sensitivity : beta1_smoothing {
  using importance_metric_concept = adalora::importance_metric_tag;
  static constexpr std::size_t state_count = 1;  // [0] Ī
  static constexpr bool needs_gradient = true;
  static constexpr const char* name = "smoothed_sensitivity";
  using beta1_smoothing::beta1_smoothing;

  void update(float theta, float grad, float (&state)[state_count]) const noexcept {
    state[0] = beta1 * state[0] + one_minus_beta1 * std::abs(theta * grad);
  }
  float score(const float (&state)[state_count]) const noexcept { return state[0]; }
};

/// Fisher saliency (Optimal Brain Damage with the empirical Fisher, as PEFT users ask for Fisher-based allocation):
/// s = θ² · F̂ with F̂ ← β1 F̂ + (1 − β1)(∇θ)², the loss increase that a second-order expansion predicts when θ is set
/// to zero (up to the factor ½, which does not change a ranking). Unlike |θ·∇θ| it does not vanish once a direction
/// has been fitted and its mean gradient is zero: the gradient's noise still measures the curvature.
struct fisher_saliency : beta1_smoothing {
  using importance_metric_concept = adalora::importance_metric_tag;
  static constexpr std::size_t state_count = 2;  // [0] F̂, [1] θ² at the latest update
  static constexpr bool needs_gradient = true;
  static constexpr const char* name = "fisher_saliency";
  using beta1_smoothing::beta1_smoothing;

  void update(float theta, float grad, float (&state)[state_count]) const noexcept {
    state[0] = beta1 * state[0] + one_minus_beta1 * (grad * grad);
    state[1] = theta * theta;
  }
  float score(const float (&state)[state_count]) const noexcept { return state[0] * state[1]; }
};

static_assert(adalora::ImportanceMetric<smoothed_sensitivity>);
static_assert(adalora::ImportanceMetric<fisher_saliency>);

}  // namespace budget_study
