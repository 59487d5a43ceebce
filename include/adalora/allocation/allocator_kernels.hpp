// Host+device functors of the allocator step: the fused importance pass over all tiles (per state policy), the
// in-place input check, triplet scores, masks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "adalora/allocation/step_plan.hpp"
#include "adalora/allocation/tile_lanes.hpp"
#include "adalora/core/bfloat16.hpp"
#include "adalora/core/float_ops.hpp"
#include "adalora/core/host_device.hpp"
#include "adalora/importance/importance_metric.hpp"

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

/// Walks elements first, first + step, first + 2 · step, … (row-major) of a tensor with `cols` ≥ 1 columns: `i` is
/// the element's index, at() the element, contiguous (data[i]) or through the tensor's strides. A strided walk keeps
/// the element's row and column as it goes, so that it divides once per walk, not once per element (a 64-bit division
/// is dozens of instructions on a GPU).
template <bool Contiguous>
struct element_walk {
  std::size_t i;

  ADALORA_HOST_DEVICE element_walk(std::size_t first, std::size_t step, std::size_t cols) noexcept
      : i(first), step_(step) {
    if constexpr (!Contiguous) {
      cols_ = cols;
      row_ = first / cols;
      col_ = first - row_ * cols;
      step_rows_ = step / cols;
      step_cols_ = step - step_rows_ * cols;
    } else {
      (void)cols;
    }
  }
  ADALORA_HOST_DEVICE void next() noexcept {
    i += step_;
    if constexpr (!Contiguous) {
      row_ += step_rows_;
      col_ += step_cols_;
      if (col_ >= cols_) col_ -= cols_, ++row_;
    }
  }
  template <class T>
  ADALORA_HOST_DEVICE T& at(T* data, std::ptrdiff_t row_stride, std::ptrdiff_t col_stride) const noexcept {
    if constexpr (Contiguous) {
      (void)row_stride, (void)col_stride;
      return data[i];
    } else {
      return data[static_cast<std::ptrdiff_t>(row_) * row_stride + static_cast<std::ptrdiff_t>(col_) * col_stride];
    }
  }

private:
  std::size_t step_;
  std::size_t cols_ = 0, row_ = 0, col_ = 0, step_rows_ = 0, step_cols_ = 0;
};

/// The lane layout (tile_lanes) of a tile of kind `kind` in a tensor of `cols` columns:
///  - a Q tile (part of one row of lora_A): 1 column, plan_lanes groups;
///  - a P tile (whole rows of lora_B, r ≤ plan_lanes columns): plan_lanes / r groups, so that a lane stays in one
///    column (lane g · r + c holds rows g, g + groups, g + 2 · groups, … of column c);
///  - none (groups = 0) for λ tiles, whose scores are stored one by one, and for P tiles of more than plan_lanes
///    columns, summed column by column in row order.
ADALORA_HOST_DEVICE constexpr tile_lanes lanes_of(tile_kind kind, std::size_t cols) noexcept {
  switch (kind) {
    case tile_kind::q_row:
      return {plan_lanes, 1};
    case tile_kind::p_rows:
      return cols <= plan_lanes ? tile_lanes{plan_lanes / cols, cols} : tile_lanes{};
    case tile_kind::lambda:
    case tile_kind::split:
      break;
  }
  return {};
}

/// Where the element scores of one tile go (see fused_importance_fn), handed over in blocks of consecutive elements
/// (`first` is the block's first element index in the tensor); finish() is called after the tile's last block.

/// A Q tile, or a P tile of at most plan_lanes columns: sums in double in the lane order of tile_lanes (element j of
/// the tile into lane j mod width, then lane_tree), column c's total to partial[slot + c].
struct lane_sum_sink {
  double* partial;
  std::size_t slot;
  tile_lanes lanes;
  std::size_t pos = 0;  // the lane of the next element
  double sums[plan_lanes];

  ADALORA_HOST_DEVICE lane_sum_sink(double* p, std::size_t s, tile_lanes l) noexcept : partial(p), slot(s), lanes(l) {
    for (std::size_t k = 0; k < lanes.width(); ++k) sums[k] = 0.0;
  }
  ADALORA_HOST_DEVICE void add(std::size_t, const float* scores, std::size_t n) noexcept {
    const std::size_t width = lanes.width();
    for (std::size_t j = 0; j < n;) {
      // a run of lanes pos, pos + 1, … without wrapping: a plain vector add
      const std::size_t k = n - j < width - pos ? n - j : width - pos;
      double* lane = sums + pos;
      const float* x = scores + j;
      for (std::size_t i = 0; i < k; ++i) lane[i] = add_rn(lane[i], static_cast<double>(x[i]));
      j += k;
      pos = pos + k == width ? 0 : pos + k;
    }
  }
  ADALORA_HOST_DEVICE void finish() noexcept {
    lane_tree(sums, lanes);
    for (std::size_t c = 0; c < lanes.cols; ++c) partial[slot + c] = sums[c];
  }
};
/// A tile whose element scores are stored one by one: element i's score at lambda_scores[slot + i − origin]. A λ
/// tile has origin 0 (i is the singular value's index), a split tile its first element.
struct element_score_sink {
  float* lambda_scores;
  std::size_t slot;
  std::size_t origin;
  ADALORA_HOST_DEVICE void add(std::size_t first, const float* scores, std::size_t n) const noexcept {
    for (std::size_t j = 0; j < n; ++j) lambda_scores[slot + (first - origin) + j] = scores[j];
  }
  ADALORA_HOST_DEVICE void finish() const noexcept {}
};

/// Where element i of a tile whose scores are stored one by one goes (element_score_sink's origin).
ADALORA_HOST_DEVICE inline std::size_t element_score_origin(const plan_tile& tile) noexcept {
  return tile.kind == tile_kind::split ? tile.begin : 0;
}
/// A P tile of more than plan_lanes columns (whole rows of lora_B, `cols` = r columns, starting at a row): column c
/// summed into partial[slot + c] in row order, from 0.
struct column_sum_sink {
  double* partial;
  std::size_t slot;
  std::size_t cols;
  std::size_t col = 0;
  ADALORA_HOST_DEVICE column_sum_sink(double* p, std::size_t s, std::size_t c) noexcept
      : partial(p), slot(s), cols(c) {
    for (std::size_t k = 0; k < cols; ++k) partial[slot + k] = 0.0;
  }
  ADALORA_HOST_DEVICE void add(std::size_t, const float* scores, std::size_t n) noexcept {
    for (std::size_t j = 0; j < n; ++j) {
      partial[slot + col] = add_rn(partial[slot + col], static_cast<double>(scores[j]));
      col = col + 1 == cols ? 0 : col + 1;
    }
  }
  ADALORA_HOST_DEVICE void finish() const noexcept {}
};
/// The sink of a pass that does not score.
struct no_score_sink {
  ADALORA_HOST_DEVICE void add(std::size_t, const float*, std::size_t) const noexcept {}
  ADALORA_HOST_DEVICE void finish() const noexcept {}
};

/// Scores handed to a sink at once in the tile form: on the host a block that stays in L1 and lets the update loop
/// vectorize; on a GPU one (a per-thread array would live in slow local memory; the GPU runs the block form).
#if defined(__CUDA_ARCH__)
inline constexpr std::size_t score_block = 1;
#else
inline constexpr std::size_t score_block = plan_lanes;
#endif

/// Calls f(sink) with the sink of the tile's kind (the kind is decided once per tile, not per element), then
/// finishes the sink.
template <class F>
ADALORA_HOST_DEVICE void with_tile_sink(const plan_tile& tile, std::size_t cols, double* partial, float* lambda_scores,
                                        F&& f) noexcept {
  const tile_lanes lanes = lanes_of(tile.kind, cols);
  if (tile.kind == tile_kind::lambda || tile.kind == tile_kind::split) {
    element_score_sink sink{lambda_scores, tile.slot, element_score_origin(tile)};
    f(sink);
  } else if (lanes.groups > 0) {
    lane_sum_sink sink(partial, tile.slot, lanes);
    f(sink);
    sink.finish();
  } else {
    column_sum_sink sink(partial, tile.slot, cols);
    f(sink);
  }
}

/// What the fused pass does with the importance state (see rank_allocator and StatePolicy).
enum class state_pass {
  update_into,      ///< double-buffered: reads state_in, writes the new state to state_out; bad[t] counts the
                    ///< elements of tile t whose θ, g, new state or its score is not finite (finite inputs whose
                    ///< importance overflows are refused like non-finite ones); the caller then keeps state_in
  update_in_place,  ///< in place, after the step was cleared: reads and overwrites state_out; bad[t] counts the
                    ///< elements whose new state leaves the metric's safe bound (the next step's check sees them)
  trial,            ///< the exact check of an in-place step: the new state is computed but not stored; bad[t] counts
                    ///< what update_into would count
  score_held,       ///< no update: scores the state held in state_in (the forced mask at T − tfinal); θ, g, state_out
                    ///< and bad are not touched
};

/// The metric's safe bound where it has one (BoundedImportanceMetric), else +inf (only non-finite values exceed it).
template <class Metric>
ADALORA_HOST_DEVICE constexpr float safe_bound_of() noexcept {
  if constexpr (BoundedImportanceMetric<Metric>)
    return Metric::safe_bound;
  else
    return bits_to_float(0x7f800000u);
}

/// How the state arena holds values of a state policy's value type: float as float, bfloat16 as its bits (a plain
/// std::uint16_t, which the host's update loop stores vectorized; a store of a class it does not).
template <class Value>
struct state_storage {
  using type = Value;
};
template <>
struct state_storage<bfloat16> {
  using type = std::uint16_t;
};
template <class Value>
using state_storage_t = typename state_storage<Value>::type;

/// A state value as the arena holds it: float as it is, bfloat16 as the bits of bfloat16(f) (rounded to nearest
/// even, every NaN as 0x7FC0), computed without a branch so that the host's update loop stays vectorized.
template <class Value>
ADALORA_HOST_DEVICE inline state_storage_t<Value> to_stored(float f) noexcept {
  if constexpr (std::is_same_v<Value, bfloat16>) {
    const std::uint32_t u = float_to_bits(f);
    const std::uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    const std::uint32_t nan = 0u - static_cast<std::uint32_t>((u & 0x7fffffffu) > 0x7f800000u);  // all ones for NaN
    return static_cast<std::uint16_t>((rounded & ~nan) | (0x7fc0u & nan));
  } else {
    return f;
  }
}
/// A held state value as a float (exact).
ADALORA_HOST_DEVICE inline float from_stored(float v) noexcept { return v; }
ADALORA_HOST_DEVICE inline float from_stored(std::uint16_t bits) noexcept {
  return bits_to_float(static_cast<std::uint32_t>(bits) << 16);
}

/// The importance pass of a step over all tiles of the plan, in one launch. For every element it reads θ and g and
/// folds them into the metric's state as `Pass` says (state_pass), storing values of type `Value` (float or
/// bfloat16, held as state_storage_t: the metric computes in float, a bfloat16 is rounded to nearest even when
/// stored and read back exactly), and
/// counts per tile into bad[t] what `Pass` says. With `Score` it also scores the new state (as stored) and leaves
/// what triplet_from_partials_fn needs: the tiles' score sums in `partial` (lane order, tile_lanes) and the λ scores.
///
/// Two forms leave the same results bit for bit: the tile form, operator()(t) (one work item per tile, elements in
/// blocks of score_block: the host backends' for_each), and the block form of TileLanePass (plan_lanes lanes per
/// tile, lane l on elements l, l + width, …, so that neighbouring GPU threads read neighbouring addresses).
template <class Metric, class T, bool Contiguous, bool Score, state_pass Pass = state_pass::update_into,
          class Value = float>
struct fused_importance_fn {
  using Stored = state_storage_t<Value>;
  static constexpr bool Update = Pass != state_pass::score_held;
  static_assert(Score || Update, "a pass that neither updates nor scores does nothing");

  Metric metric;
  const plan_tensor<T>* tensors;
  const plan_tile* tiles;
  const Stored* state_in;  // update_into, trial, score_held
  Stored* state_out;       // update_into, update_in_place
  std::size_t plane_size;
  std::uint32_t* bad;    // Update only: the counts of `Pass`, per tile
  double* partial;       // Score only: the tiles' partial sums
  float* lambda_scores;  // Score only: the element score of λ_i, by the singular value's index among all b0

  // ---- tile form ----

  ADALORA_HOST_DEVICE void operator()(std::size_t t) const noexcept {
    const plan_tile tile = tiles[t];
    const plan_tensor<T> x = tensors[tile.tensor];
    std::uint32_t counted = 0;
    if constexpr (Score)
      with_tile_sink(tile, x.cols, partial, lambda_scores, [&](auto& sink) { counted = run(tile, x, sink); });
    else
      counted = run(tile, x, no_score_sink{});
    if constexpr (Update) bad[t] = counted;
  }

  // The tile's elements in blocks whose scores go to the sink; returns how many elements element() counted.
  // Everything it reads is copied to locals first, so that the stores cannot alias it.
  template <class Sink>
  ADALORA_HOST_DEVICE std::uint32_t run(const plan_tile& tile, const plan_tensor<T>& x, Sink&& sink) const noexcept {
    const Metric m = metric;
    const Stored* in = state_in;
    Stored* out = state_out;
    const std::size_t plane = plane_size;
    std::uint32_t counted = 0;
    [[maybe_unused]] float scores[Score ? score_block : 1];
    const std::size_t end = tile.begin + tile.count;
    [[maybe_unused]] element_walk<Contiguous> walk(tile.begin, 1, x.cols);  // strided: row and column as it goes
    for (std::size_t first = tile.begin; first < end; first += score_block) {
      const std::size_t n = end - first < score_block ? end - first : score_block;
      for (std::size_t j = 0; j < n; ++j) {
        if constexpr (Contiguous) {  // the index alone, so that the block's loop vectorizes as a plain one
          counted += element(m, in, out, plane, x, element_walk<true>(first + j, 1, x.cols), scores[Score ? j : 0])
                         ? 0u
                         : 1u;
        } else {
          counted += element(m, in, out, plane, x, walk, scores[Score ? j : 0]) ? 0u : 1u;
          walk.next();
        }
      }
      if constexpr (Score) sink.add(first, scores, n);
    }
    return counted;
  }

  // ---- block form (TileLanePass) ----

  ADALORA_HOST_DEVICE tile_lanes lanes(std::size_t t) const noexcept {
    if constexpr (!Score) {
      (void)t;
      return {};
    } else {
      const plan_tile& tile = tiles[t];
      return lanes_of(tile.kind, tensors[tile.tensor].cols);
    }
  }

  ADALORA_HOST_DEVICE lane_result lane_pass(std::size_t t, std::size_t lane) const noexcept {
    const plan_tile tile = tiles[t];
    const plan_tensor<T> x = tensors[tile.tensor];
    const Metric m = metric;
    lane_result r;
    float score = 0.0f;
    auto visit = [&](const element_walk<Contiguous>& at) {
      r.non_finite += element(m, state_in, state_out, plane_size, x, at, score) ? 0u : 1u;
    };
    const tile_lanes l = lanes(t);
    if (!Score || tile.kind == tile_kind::lambda || tile.kind == tile_kind::split) {
      element_walk<Contiguous> at(tile.begin + lane, plan_lanes, x.cols);
      for (std::size_t j = lane; j < tile.count; j += plan_lanes, at.next()) {
        visit(at);
        if constexpr (Score) lambda_scores[tile.slot + (tile.begin - element_score_origin(tile)) + j] = score;
      }
    } else if (l.groups > 0) {
      element_walk<Contiguous> at(tile.begin + lane, l.width(), x.cols);
      for (std::size_t j = lane; j < tile.count && lane < l.width(); j += l.width(), at.next()) {
        visit(at);
        r.sum = add_rn(r.sum, static_cast<double>(score));
      }
    } else {  // a P tile wider than plan_lanes: whole columns, in row order (column_sum_sink)
      const std::size_t rows = tile.count / x.cols;
      for (std::size_t c = lane; c < x.cols; c += plan_lanes) {
        double sum = 0.0;
        element_walk<Contiguous> at(tile.begin + c, x.cols, x.cols);
        for (std::size_t row = 0; row < rows; ++row, at.next()) {
          visit(at);
          sum = add_rn(sum, static_cast<double>(score));
        }
        partial[tile.slot + c] = sum;
      }
    }
    return r;
  }

  ADALORA_HOST_DEVICE void finish_lane(std::size_t t, std::size_t lane, const double* sums,
                                       std::uint32_t counted) const noexcept {
    if constexpr (Update)
      if (lane == 0) bad[t] = counted;
    if constexpr (Score) {
      const tile_lanes l = lanes(t);
      if (l.groups > 0 && lane < l.cols) partial[tiles[t].slot + lane] = sums[lane];
    }
  }

  // ---- one element, both forms ----

  // Element at.i of tensor x: its new state as `Pass` says, and with Score the score of the state as stored; false
  // when the element is to be counted (a non-finite θ, g, new state or score of the new state as stored, or in place a
  // new state beyond the metric's safe bound).
  static ADALORA_HOST_DEVICE bool element(const Metric& m, [[maybe_unused]] const Stored* in,
                                          [[maybe_unused]] Stored* out, std::size_t plane, const plan_tensor<T>& x,
                                          [[maybe_unused]] const element_walk<Contiguous>& at,
                                          [[maybe_unused]] float& score) noexcept {
    float s[Metric::state_count];
    const std::size_t e = x.base + at.i;
    // in place, the state is read and written through one pointer (so the compiler sees no possible overlap)
    const Stored* from = Pass == state_pass::update_in_place ? out : in;
    const bool finite = next_state(m, from, plane, e, x, at, s);
    bool counted_out = true;
    if constexpr (Update) {
      if constexpr (Pass == state_pass::update_in_place) {
        constexpr float bound = safe_bound_of<Metric>();
        for (std::size_t k = 0; k < Metric::state_count; ++k) {
          const Stored v = to_stored<Value>(s[k]);
          out[k * plane + e] = v;
          s[k] = from_stored(v);
          counted_out = counted_out & (abs_f(s[k]) <= bound);
        }
      } else {
        if constexpr (Pass == state_pass::update_into)
          for (std::size_t k = 0; k < Metric::state_count; ++k) {
            const Stored v = to_stored<Value>(s[k]);
            out[k * plane + e] = v;
            s[k] = from_stored(v);
          }
        else  // trial: score what would be stored
          for (std::size_t k = 0; k < Metric::state_count; ++k) s[k] = from_stored(to_stored<Value>(s[k]));
        // finite inputs whose importance overflows (|θ·g| or Ī·Ū beyond float's range) are refused like non-finite
        // ones: such a state is never kept, even on a step that does not score
        counted_out = finite;
        for (std::size_t k = 0; k < Metric::state_count; ++k) counted_out = counted_out & is_finite_f(s[k]);
        counted_out = counted_out & is_finite_f(m.score(s));
      }
    }
    if constexpr (Score) score = m.score(s);
    return counted_out;
  }

  // The state of arena element e (planes `plane` apart in `from`) into s, folded with θ and g of element at.i of
  // tensor x when the pass updates; true when θ and g are finite (always without an update).
  static ADALORA_HOST_DEVICE bool next_state(const Metric& m, const Stored* from, std::size_t plane, std::size_t e,
                                             const plan_tensor<T>& x, [[maybe_unused]] const element_walk<Contiguous>& at,
                                             float (&s)[Metric::state_count]) noexcept {
    for (std::size_t k = 0; k < Metric::state_count; ++k) s[k] = from_stored(from[k * plane + e]);
    if constexpr (Update) {
      const auto theta = static_cast<float>(at.at(x.param, x.param_row_stride, x.param_col_stride));
      float g = 0.0f;
      if constexpr (Metric::needs_gradient) g = static_cast<float>(at.at(x.grad, x.grad_row_stride, x.grad_col_stride));
      m.update(theta, g, s);
      const bool theta_finite = is_finite_f(theta);  // (both tested, no short circuit: the loop stays branch-free)
      return theta_finite & is_finite_f(g);
    } else {
      (void)m, (void)x;
      return true;
    }
  }
};

/// Only the scores, from the state held (the forced mask at T − tfinal, which does not update): leaves the same
/// partial sums and λ scores as fused_importance_fn<…, Score = true>. (It reads no θ or g, so contiguity is moot.)
template <class Metric, class T, class Value = float>
using plan_scores_fn = fused_importance_fn<Metric, T, true, true, state_pass::score_held, Value>;

/// The read-only check that clears an in-place step (state policies with one arena): suspect[t] = the elements of
/// tile t whose metric.input_size(θ, g) is not within Metric::safe_bound (which includes every NaN or infinite θ or
/// g), plus over[t], the elements whose state the previous in-place pass left beyond the bound. When every tile's
/// count is 0, the in-place update cannot meet a non-finite input or produce a non-finite state or score
/// (BoundedImportanceMetric), so it may overwrite the state; otherwise the allocator runs the exact trial first.
/// Reads θ and g once, the state not at all. Tile form and block form (TileLanePass, no sums).
template <BoundedImportanceMetric Metric, class T, bool Contiguous>
struct input_check_fn {
  Metric metric;
  const plan_tensor<T>* tensors;
  const plan_tile* tiles;
  const std::uint32_t* over;
  std::uint32_t* suspect;

  ADALORA_HOST_DEVICE void operator()(std::size_t t) const noexcept {
    const plan_tile tile = tiles[t];
    const plan_tensor<T> x = tensors[tile.tensor];
    const Metric m = metric;
    std::uint32_t n = 0;
    if constexpr (Contiguous) {  // the index alone, so that the loop vectorizes as a plain one
      for (std::size_t i = tile.begin; i < tile.begin + tile.count; ++i)
        n += outside(m, x, element_walk<true>(i, 1, x.cols)) ? 1u : 0u;
    } else {
      element_walk<false> at(tile.begin, 1, x.cols);
      for (std::size_t j = 0; j < tile.count; ++j, at.next()) n += outside(m, x, at) ? 1u : 0u;
    }
    suspect[t] = n + over[t];
  }

  ADALORA_HOST_DEVICE tile_lanes lanes(std::size_t) const noexcept { return {}; }

  ADALORA_HOST_DEVICE lane_result lane_pass(std::size_t t, std::size_t lane) const noexcept {
    const plan_tile tile = tiles[t];
    const plan_tensor<T> x = tensors[tile.tensor];
    const Metric m = metric;
    lane_result r;
    element_walk<Contiguous> at(tile.begin + lane, plan_lanes, x.cols);
    for (std::size_t j = lane; j < tile.count; j += plan_lanes, at.next()) r.non_finite += outside(m, x, at) ? 1u : 0u;
    return r;
  }

  ADALORA_HOST_DEVICE void finish_lane(std::size_t t, std::size_t lane, const double*, std::uint32_t n) const noexcept {
    if (lane == 0) suspect[t] = n + over[t];
  }

  // Whether element at.i's input size is not within the bound (NaN included).
  static ADALORA_HOST_DEVICE bool outside(const Metric& m, const plan_tensor<T>& x,
                                          const element_walk<Contiguous>& at) noexcept {
    const auto theta = static_cast<float>(at.at(x.param, x.param_row_stride, x.param_col_stride));
    float g = 0.0f;
    if constexpr (Metric::needs_gradient) g = static_cast<float>(at.at(x.grad, x.grad_row_stride, x.grad_col_stride));
    return !(m.input_size(theta, g) <= Metric::safe_bound);
  }
};

/// Triplet score of singular value i from the tiles' partial sums: s(λ_i) + (mean_j s(Q_ij) + mean_j s(P_ji)), each
/// mean a double sum over the line's tiles in order, rounded to float, divided by the count in float (every operation
/// rounded on its own: detail::add_rn, div_rn).
struct triplet_from_partials_fn {
  const plan_score* score_table;
  const double* partial;
  const float* lambda_scores;
  float* scores;

  ADALORA_HOST_DEVICE void operator()(std::size_t i) const noexcept {
    const plan_score d = score_table[i];
    double q = 0.0, p = 0.0;
    for (std::size_t c = 0; c < d.q_chunks; ++c) q = add_rn(q, partial[d.q_slot + c]);
    for (std::size_t c = 0; c < d.p_chunks; ++c) p = add_rn(p, partial[d.p_slot + c * d.p_stride]);
    const float mean_q = div_rn(static_cast<float>(q), static_cast<float>(d.in));
    const float mean_p = div_rn(static_cast<float>(p), static_cast<float>(d.out));
    scores[i] = add_rn(lambda_scores[i], add_rn(mean_q, mean_p));
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
