// Element-wise functors (host+device) of the allocator: importance update, scores, masks, finiteness checks.
#pragma once

#include <cstddef>
#include <cstdint>

#include "adalora/core/float_ops.hpp"
#include "adalora/core/host_device.hpp"

namespace adalora::detail {

/// Reads element i (row-major order) of a strided view, with a fast path for contiguous views.
template <class View>
struct flat_accessor {
  View view;
  bool contiguous;

  explicit flat_accessor(View v) noexcept : view(v), contiguous(v.is_contiguous()) {}
  ADALORA_HOST_DEVICE auto& operator()(std::size_t i) const noexcept {
    return contiguous ? view.data[i] : view.flat(i);
  }
};

/// The fused importance update of one tensor: loads the metric's state of element i from its planes
/// (plane k of the arena starts at k × plane_size), folds in (θ_i, g_i), stores it back.
template <class Metric, class ParamView, class GradView>
struct importance_update_fn {
  Metric metric;
  flat_accessor<ParamView> param;
  flat_accessor<GradView> grad;
  float* state;
  std::size_t plane_size;
  std::size_t base;

  ADALORA_HOST_DEVICE void operator()(std::size_t i) const noexcept {
    float s[Metric::state_count];
    for (std::size_t k = 0; k < Metric::state_count; ++k) s[k] = state[k * plane_size + base + i];
    float g = 0.0f;
    if constexpr (Metric::needs_gradient) g = static_cast<float>(grad(i));
    metric.update(static_cast<float>(param(i)), g, s);
    for (std::size_t k = 0; k < Metric::state_count; ++k) state[k * plane_size + base + i] = s[k];
  }
};

/// element_scores[i] = metric.score(state of element i).
template <class Metric>
struct element_score_fn {
  Metric metric;
  const float* state;
  std::size_t plane_size;
  float* element_scores;

  ADALORA_HOST_DEVICE void operator()(std::size_t i) const noexcept {
    float s[Metric::state_count];
    for (std::size_t k = 0; k < Metric::state_count; ++k) s[k] = state[k * plane_size + i];
    element_scores[i] = metric.score(s);
  }
};

/// Triplet score of singular value i: s(λ_i) + (mean_j s(Q_ij) + mean_j s(P_ji)), summed in PEFT's order.
struct triplet_score_fn {
  const float* element_scores;
  const std::size_t* lambda_index;  // arena index of λ_i
  const float* mean_q;
  const float* mean_p;
  float* scores;

  ADALORA_HOST_DEVICE void operator()(std::size_t i) const noexcept {
    scores[i] = element_scores[lambda_index[i]] + (mean_q[i] + mean_p[i]);
  }
};

/// λ_i = 0 where keep[i] is 0; other entries are not touched (not even rewritten).
template <class LambdaView>
struct mask_lambda_fn {
  flat_accessor<LambdaView> lambda;
  const std::uint8_t* keep;

  ADALORA_HOST_DEVICE void operator()(std::size_t i) const noexcept {
    if (!keep[i]) lambda(i) = static_cast<typename LambdaView::value_type>(0.0f);
  }
};

/// keep[i] = score_i > threshold (ties at the threshold are pruned).
struct keep_above_fn {
  const float* scores;
  float threshold;
  std::uint8_t* keep;

  ADALORA_HOST_DEVICE void operator()(std::size_t i) const noexcept { keep[i] = scores[i] > threshold ? 1 : 0; }
};

/// True where element i of a view is NaN or infinite.
template <class View>
struct non_finite_fn {
  flat_accessor<View> values;

  ADALORA_HOST_DEVICE bool operator()(std::size_t i) const noexcept {
    return !is_finite_f(static_cast<float>(values(i)));
  }
};

}  // namespace adalora::detail
