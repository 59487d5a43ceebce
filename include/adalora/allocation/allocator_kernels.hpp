// Host+device functors of the allocator step: the fused importance pass over all tiles, triplet scores, masks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "adalora/allocation/step_plan.hpp"
#include "adalora/core/float_ops.hpp"
#include "adalora/core/host_device.hpp"

namespace adalora::detail {

/// Reads element i (row-major order) of a strided view, with a fast path for contiguous views. Used where speed does
/// not matter (finding the culprit of a failed step); the step itself reads through the plan's tensor table.
template <class View>
struct flat_accessor {
  View view;
  bool contiguous;

  explicit flat_accessor(View v) noexcept : view(v), contiguous(v.is_contiguous()) {}
  ADALORA_HOST_DEVICE auto& operator()(std::size_t i) const noexcept {
    return contiguous ? view.data[i] : view.flat(i);
  }
};

/// True where v[i] is not zero.
struct nonzero_fn {
  const std::uint32_t* v;
  ADALORA_HOST_DEVICE bool operator()(std::size_t i) const noexcept { return v[i] != 0; }
};

/// True where element i of a view is NaN or infinite.
template <class View>
struct non_finite_fn {
  flat_accessor<View> values;

  ADALORA_HOST_DEVICE bool operator()(std::size_t i) const noexcept {
    return !is_finite_f(static_cast<float>(values(i)));
  }
};

/// Element i (row-major) of a tensor with `cols` columns: contiguous (data[i]) or through its strides.
template <bool Contiguous, class T>
ADALORA_HOST_DEVICE inline T& plan_element(T* data, std::size_t i, std::size_t cols, std::ptrdiff_t row_stride,
                                           std::ptrdiff_t col_stride) noexcept {
  if constexpr (Contiguous) {
    (void)cols, (void)row_stride, (void)col_stride;
    return data[i];
  } else {
    const std::size_t row = i / cols, col = i - row * cols;
    return data[static_cast<std::ptrdiff_t>(row) * row_stride + static_cast<std::ptrdiff_t>(col) * col_stride];
  }
}

/// Where the element scores of one tile go (see fused_importance_fn): a Q tile sums its part of a row, a P tile the
/// r columns of its rows, a λ tile stores each score. Sums are in double, in element order.
struct tile_score_sink {
  plan_tile tile;
  std::size_t cols;
  double* partial;
  float* lambda_scores;
  double line_sum = 0.0;

  ADALORA_HOST_DEVICE tile_score_sink(const plan_tile& t, std::size_t c, double* p, float* l) noexcept
      : tile(t), cols(c), partial(p), lambda_scores(l) {
    if (tile.kind == tile_kind::p_rows)
      for (std::size_t k = 0; k < cols; ++k) partial[tile.slot + k] = 0.0;
  }
  ADALORA_HOST_DEVICE void add(std::size_t i, float score) noexcept {
    switch (tile.kind) {
      case tile_kind::q_row:
        line_sum += static_cast<double>(score);
        break;
      case tile_kind::lambda:
        lambda_scores[tile.slot + i] = score;
        break;
      case tile_kind::p_rows:
        partial[tile.slot + i % cols] += static_cast<double>(score);
        break;
    }
  }
  ADALORA_HOST_DEVICE void finish() const noexcept {
    if (tile.kind == tile_kind::q_row) partial[tile.slot] = line_sum;
  }
};

/// The sink of a pass that does not score.
struct no_score_sink {
  ADALORA_HOST_DEVICE no_score_sink(const plan_tile&, std::size_t, double*, float*) noexcept {}
  ADALORA_HOST_DEVICE void add(std::size_t, float) noexcept {}
  ADALORA_HOST_DEVICE void finish() const noexcept {}
};

/// The whole importance update of a step in one pass: work item t is tile t of the plan. For every element of the
/// tile it reads θ and g, folds them into the metric's state read from `state_in` and writes the result to
/// `state_out` (double buffering: the caller keeps `state_in` when any input was not finite, so a failed step
/// changes nothing), and counts the non-finite inputs into bad[t]. With `Score` it also scores the new state into
/// the tile's tile_score_sink, which leaves what triplet_from_partials_fn needs.
template <class Metric, class T, bool Contiguous, bool Score>
struct fused_importance_fn {
  Metric metric;
  const plan_tensor<T>* tensors;
  const plan_tile* tiles;
  const float* state_in;
  float* state_out;
  std::size_t plane_size;
  std::uint32_t* bad;
  double* partial;       // Score only: the tiles' partial sums
  float* lambda_scores;  // Score only: the element score of λ_i, by the singular value's index among all b0

  ADALORA_HOST_DEVICE void operator()(std::size_t t) const noexcept {
    const plan_tile tile = tiles[t];
    const plan_tensor<T> x = tensors[tile.tensor];
    std::conditional_t<Score, tile_score_sink, no_score_sink> sink(tile, x.cols, partial, lambda_scores);
    std::uint32_t non_finite = 0;
    for (std::size_t i = tile.begin; i < tile.begin + tile.count; ++i) {
      const auto theta =
          static_cast<float>(plan_element<Contiguous>(x.param, i, x.cols, x.param_row_stride, x.param_col_stride));
      float g = 0.0f;
      if constexpr (Metric::needs_gradient)
        g = static_cast<float>(plan_element<Contiguous>(x.grad, i, x.cols, x.grad_row_stride, x.grad_col_stride));
      non_finite += (is_finite_f(theta) && is_finite_f(g)) ? 0u : 1u;
      float s[Metric::state_count];
      const std::size_t e = x.base + i;
      for (std::size_t k = 0; k < Metric::state_count; ++k) s[k] = state_in[k * plane_size + e];
      metric.update(theta, g, s);
      for (std::size_t k = 0; k < Metric::state_count; ++k) state_out[k * plane_size + e] = s[k];
      if constexpr (Score) sink.add(i, metric.score(s));
    }
    bad[t] = non_finite;
    sink.finish();
  }
};

/// Only the scores, from the state held (the forced mask at T − tfinal, which does not update): leaves the same
/// partial sums and λ scores as fused_importance_fn<…, Score = true>.
template <class Metric, class T>
struct plan_scores_fn {
  Metric metric;
  const plan_tensor<T>* tensors;
  const plan_tile* tiles;
  const float* state;
  std::size_t plane_size;
  double* partial;
  float* lambda_scores;

  ADALORA_HOST_DEVICE void operator()(std::size_t t) const noexcept {
    const plan_tile tile = tiles[t];
    const plan_tensor<T> x = tensors[tile.tensor];
    tile_score_sink sink(tile, x.cols, partial, lambda_scores);
    for (std::size_t i = tile.begin; i < tile.begin + tile.count; ++i) {
      float s[Metric::state_count];
      for (std::size_t k = 0; k < Metric::state_count; ++k) s[k] = state[k * plane_size + x.base + i];
      sink.add(i, metric.score(s));
    }
    sink.finish();
  }
};

/// Triplet score of singular value i from the tiles' partial sums: s(λ_i) + (mean_j s(Q_ij) + mean_j s(P_ji)), each
/// mean a double sum over the line's tiles in order, rounded to float, divided by the count in float.
struct triplet_from_partials_fn {
  const plan_score* score_table;
  const double* partial;
  const float* lambda_scores;
  float* scores;

  ADALORA_HOST_DEVICE void operator()(std::size_t i) const noexcept {
    const plan_score d = score_table[i];
    double q = 0.0, p = 0.0;
    for (std::size_t c = 0; c < d.q_chunks; ++c) q += partial[d.q_slot + c];
    for (std::size_t c = 0; c < d.p_chunks; ++c) p += partial[d.p_slot + c * d.p_stride];
    const float mean_q = static_cast<float>(q) / static_cast<float>(d.in);
    const float mean_p = static_cast<float>(p) / static_cast<float>(d.out);
    scores[i] = lambda_scores[i] + (mean_q + mean_p);
  }
};

/// keep[i] = score_i > threshold (ties at the threshold are pruned).
struct keep_above_fn {
  const float* scores;
  float threshold;
  std::uint8_t* keep;

  ADALORA_HOST_DEVICE void operator()(std::size_t i) const noexcept { keep[i] = scores[i] > threshold ? 1 : 0; }
};

/// λ_i = 0 for every singular value i (over all adapters) where keep[i] is 0; others are not touched.
template <class T>
struct mask_lambda_fn {
  const plan_tensor<T>* tensors;
  const plan_score* score_table;
  const std::uint8_t* keep;

  ADALORA_HOST_DEVICE void operator()(std::size_t i) const noexcept {
    if (keep[i]) return;
    const plan_score d = score_table[i];
    const plan_tensor<T>& e = tensors[d.lambda_tensor];
    e.param[static_cast<std::ptrdiff_t>(d.lambda_index) * e.param_row_stride] = static_cast<T>(0.0f);
  }
};

}  // namespace adalora::detail
