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

/// Where the element scores of one tile go (see fused_importance_fn), handed over in blocks of consecutive elements
/// (`first` is the block's first element index in the tensor). Sums are in double, in a fixed order.
/// A Q tile (part of one row of lora_A) sums into partial[slot], element j of the tile into accumulator j mod 4,
/// then (a0 + a1) + (a2 + a3).
struct q_row_sink {
  double* partial;
  std::size_t slot;
  double acc[4] = {0.0, 0.0, 0.0, 0.0};
  std::size_t seen = 0;
  ADALORA_HOST_DEVICE void add(std::size_t, const float* scores, std::size_t n) noexcept {
    std::size_t j = 0;
    if ((seen & 3u) == 0) {  // the usual case: whole groups of four in registers
      double a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
      for (; j + 4 <= n; j += 4) {
        a0 += static_cast<double>(scores[j]);
        a1 += static_cast<double>(scores[j + 1]);
        a2 += static_cast<double>(scores[j + 2]);
        a3 += static_cast<double>(scores[j + 3]);
      }
      acc[0] = a0, acc[1] = a1, acc[2] = a2, acc[3] = a3;
    }
    for (; j < n; ++j) acc[(seen + j) & 3u] += static_cast<double>(scores[j]);
    seen += n;
  }
  ADALORA_HOST_DEVICE void finish() const noexcept { partial[slot] = (acc[0] + acc[1]) + (acc[2] + acc[3]); }
};
/// A λ tile stores element i's score at lambda_scores[slot + i].
struct lambda_sink {
  float* lambda_scores;
  std::size_t slot;
  ADALORA_HOST_DEVICE void add(std::size_t first, const float* scores, std::size_t n) const noexcept {
    for (std::size_t j = 0; j < n; ++j) lambda_scores[slot + first + j] = scores[j];
  }
  ADALORA_HOST_DEVICE void finish() const noexcept {}
};
/// A P tile (whole rows of lora_B, `cols` = r columns, starting at a row) sums column c into partial[slot + c], in
/// row order.
struct p_rows_sink {
  double* partial;
  std::size_t slot;
  std::size_t cols;
  std::size_t col = 0;
  ADALORA_HOST_DEVICE p_rows_sink(double* p, std::size_t s, std::size_t c) noexcept : partial(p), slot(s), cols(c) {
    for (std::size_t k = 0; k < cols; ++k) partial[slot + k] = 0.0;
  }
  ADALORA_HOST_DEVICE void add(std::size_t, const float* scores, std::size_t n) noexcept {
    std::size_t j = 0;
    for (; j < n && col != 0; ++j) one(scores[j]);  // finish a row begun in the previous block
    // whole rows, a column at a time in a register (the same additions, in the same order per column)
    const std::size_t rows = (n - j) / cols;
    if (rows > 1) {
      for (std::size_t c = 0; c < cols; ++c) {
        double sum = partial[slot + c];
        for (std::size_t r = 0; r < rows; ++r) sum += static_cast<double>(scores[j + r * cols + c]);
        partial[slot + c] = sum;
      }
      j += rows * cols;
    }
    for (; j < n; ++j) one(scores[j]);
  }
  ADALORA_HOST_DEVICE void one(float score) noexcept {
    partial[slot + col] += static_cast<double>(score);
    col = col + 1 == cols ? 0 : col + 1;
  }
  ADALORA_HOST_DEVICE void finish() const noexcept {}
};
/// The sink of a pass that does not score.
struct no_score_sink {
  ADALORA_HOST_DEVICE void add(std::size_t, const float*, std::size_t) const noexcept {}
  ADALORA_HOST_DEVICE void finish() const noexcept {}
};

/// Scores handed to a sink at once: on the host a block that stays in L1 and lets the update loop vectorize; on a
/// GPU one (a per-thread array would live in slow local memory).
#if defined(__CUDA_ARCH__)
inline constexpr std::size_t score_block = 1;
#else
inline constexpr std::size_t score_block = 256;
#endif

/// Calls f(sink) with the sink of the tile's kind (the kind is decided once per tile, not per element), then
/// finishes the sink.
template <class F>
ADALORA_HOST_DEVICE void with_tile_sink(const plan_tile& tile, std::size_t cols, double* partial, float* lambda_scores,
                                        F&& f) noexcept {
  switch (tile.kind) {
    case tile_kind::q_row: {
      q_row_sink sink{partial, tile.slot, {0.0, 0.0, 0.0, 0.0}, 0};
      f(sink);
      sink.finish();
      break;
    }
    case tile_kind::lambda: {
      lambda_sink sink{lambda_scores, tile.slot};
      f(sink);
      break;
    }
    case tile_kind::p_rows: {
      p_rows_sink sink(partial, tile.slot, cols);
      f(sink);
      break;
    }
  }
}

/// The whole importance update of a step in one pass: work item t is tile t of the plan. For every element of the
/// tile it reads θ and g, folds them into the metric's state read from `state_in` and writes the result to
/// `state_out` (double buffering: the caller keeps `state_in` when any input was not finite, so a failed step
/// changes nothing), and counts the non-finite inputs into bad[t]. With `Score` it also scores the new state into
/// the tile's sink (with_tile_sink), which leaves what triplet_from_partials_fn needs.
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
    if constexpr (Score)
      with_tile_sink(tile, x.cols, partial, lambda_scores, [&](auto& sink) { bad[t] = run(tile, x, sink); });
    else
      bad[t] = run(tile, x, no_score_sink{});
  }

  // The update of the tile's elements, in blocks whose scores go to the sink; returns how many elements had a
  // non-finite θ or g. Everything it reads is copied to locals first, so that the stores cannot alias it.
  template <class Sink>
  ADALORA_HOST_DEVICE std::uint32_t run(const plan_tile& tile, const plan_tensor<T>& x, Sink&& sink) const noexcept {
    const Metric m = metric;
    const float* in = state_in;
    float* out = state_out;
    const std::size_t plane = plane_size;
    const T* param = x.param;
    const T* grad = x.grad;
    std::uint32_t non_finite = 0;
    [[maybe_unused]] float scores[Score ? score_block : 1];
    const std::size_t end = tile.begin + tile.count;
    for (std::size_t first = tile.begin; first < end; first += score_block) {
      const std::size_t n = end - first < score_block ? end - first : score_block;
      for (std::size_t j = 0; j < n; ++j) {
        const std::size_t i = first + j;
        const auto theta =
            static_cast<float>(plan_element<Contiguous>(param, i, x.cols, x.param_row_stride, x.param_col_stride));
        float g = 0.0f;
        if constexpr (Metric::needs_gradient)
          g = static_cast<float>(plan_element<Contiguous>(grad, i, x.cols, x.grad_row_stride, x.grad_col_stride));
        non_finite += (is_finite_f(theta) && is_finite_f(g)) ? 0u : 1u;
        float s[Metric::state_count];
        const std::size_t e = x.base + i;
        for (std::size_t k = 0; k < Metric::state_count; ++k) s[k] = in[k * plane + e];
        m.update(theta, g, s);
        for (std::size_t k = 0; k < Metric::state_count; ++k) out[k * plane + e] = s[k];
        if constexpr (Score) scores[j] = m.score(s);
      }
      if constexpr (Score) sink.add(first, scores, n);
    }
    return non_finite;
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
    with_tile_sink(tile, x.cols, partial, lambda_scores, [&](auto& sink) {
      float scores[score_block];
      const std::size_t end = tile.begin + tile.count;
      for (std::size_t first = tile.begin; first < end; first += score_block) {
        const std::size_t n = end - first < score_block ? end - first : score_block;
        for (std::size_t j = 0; j < n; ++j) {
          float s[Metric::state_count];
          for (std::size_t k = 0; k < Metric::state_count; ++k) s[k] = state[k * plane_size + x.base + first + j];
          scores[j] = metric.score(s);
        }
        sink.add(first, scores, n);
      }
    });
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
