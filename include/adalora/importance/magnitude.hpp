// The magnitude importance metric |θ| (the paper's ablation): no gradient needed, no smoothing.
#pragma once

#include "adalora/core/float_ops.hpp"
#include "adalora/core/host_device.hpp"
#include "adalora/importance/importance_metric.hpp"

namespace adalora {

/// s(θ) = |θ| at the latest update.
struct magnitude {
  using importance_metric_concept = importance_metric_tag;
  static constexpr std::size_t state_count = 1;
  static constexpr bool needs_gradient = false;
  static constexpr const char* name = "magnitude";

  ADALORA_HOST_DEVICE void update(float theta, float /*grad*/, float (&state)[state_count]) const noexcept {
    state[0] = detail::abs_f(theta);
  }
  ADALORA_HOST_DEVICE float score(const float (&state)[state_count]) const noexcept { return state[0]; }

  /// |θ| (the gradient is not read): the state and the score are this value itself.
  ADALORA_HOST_DEVICE float input_size(float theta, float /*grad*/) const noexcept { return detail::abs_f(theta); }
  /// 2^62: the score is the state, |θ| ≤ 2^62, within bounded_score_limit.
  static constexpr float safe_bound = 0x1p62f;
};

static_assert(BoundedImportanceMetric<magnitude>);
static_assert(magnitude::safe_bound <= bounded_score_limit);

}  // namespace adalora
