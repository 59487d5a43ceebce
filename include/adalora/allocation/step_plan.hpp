// The allocator step's work plan: every adapter tensor cut into fixed tiles, with the tables its passes read.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "adalora/adapters/svd_adapter_views.hpp"

namespace adalora::detail {

/// Elements in one tile of the fused importance pass. Fixed (not a property of the backend or the thread count), so
/// that every backend sums the same numbers in the same order and their triplet scores agree bit for bit.
inline constexpr std::size_t plan_tile_elements = 2048;

/// One parameter tensor (lora_A, lora_E or lora_B of one adapter) as the passes see it: row-major with `cols`
/// columns (λ is a column, cols = 1), strides in elements, and the offset of its first element in the state arena.
template <class T>
struct plan_tensor {
  T* param = nullptr;
  const T* grad = nullptr;
  std::size_t cols = 1;
  std::ptrdiff_t param_row_stride = 0, param_col_stride = 0;
  std::ptrdiff_t grad_row_stride = 0, grad_col_stride = 0;
  std::size_t base = 0;
};

/// Which part of an adapter a tile covers, and so where the scores of its elements go.
enum class tile_kind : std::uint32_t {
  q_row,   ///< part of one row of lora_A (Q): its score sum goes to partial[slot]
  lambda,  ///< part of lora_E (λ): element i's score goes to lambda_scores[slot + i]
  p_rows,  ///< whole rows of lora_B (P, out × r): its r column sums go to partial[slot + c]
  split,   ///< a rank's piece of a tile that a slice boundary cuts (distributed allocator, shard_sums::exact): the
           ///< score of element begin + j goes to lambda_scores[slot + j], and the tile's sum is formed after the
           ///< ranks have exchanged their pieces
};

/// Elements [begin, begin + count) (row-major) of tensor `tensor`.
struct plan_tile {
  std::uint32_t tensor = 0;
  tile_kind kind = tile_kind::q_row;
  std::size_t begin = 0;
  std::size_t count = 0;
  std::size_t slot = 0;
};

/// What the triplet score of one singular value (index i among all b0) reads: its Q row's tile sums
/// partial[q_slot + c] (c < q_chunks), its P column's partial[p_slot + c · p_stride] (c < p_chunks), the feature
/// counts of the means, and where its λ lives (element lambda_index of tensor lambda_tensor).
struct plan_score {
  std::size_t q_slot = 0, q_chunks = 0;
  std::size_t p_slot = 0, p_chunks = 0, p_stride = 0;
  std::size_t in = 0, out = 0;
  std::uint32_t lambda_tensor = 0;
  std::size_t lambda_index = 0;
};

/// The three plan tensors of one adapter (A, E, B), whose state starts at arena offset `base`.
template <class T, class Space>
std::array<plan_tensor<T>, 3> plan_tensors_of(const svd_adapter_views<T, Space>& v, std::size_t base) {
  const std::size_t r = v.rank(), in = v.in_features();
  std::array<plan_tensor<T>, 3> x{};
  x[0] = {v.lora_A.data,       v.grad_A.data,       in,  v.lora_A.strides[0], v.lora_A.strides[1],
          v.grad_A.strides[0], v.grad_A.strides[1], base};
  x[1] = {v.lora_E.data, v.grad_E.data, 1, v.lora_E.strides[0], 0, v.grad_E.strides[0], 0, base + r * in};
  x[2] = {v.lora_B.data,       v.grad_B.data,      r, v.lora_B.strides[0], v.lora_B.strides[1], v.grad_B.strides[0],
          v.grad_B.strides[1], base + r * (in + 1)};
  return x;
}

/// Whether every parameter and gradient view of an adapter is contiguous row-major (missing gradients count as
/// contiguous: a metric that reads them requires them).
template <class T, class Space>
bool plan_contiguous(const svd_adapter_views<T, Space>& v) noexcept {
  auto ok = [](const auto& view) { return view.data == nullptr || view.is_contiguous(); };
  return ok(v.lora_A) && ok(v.lora_E) && ok(v.lora_B) && ok(v.grad_A) && ok(v.grad_E) && ok(v.grad_B);
}

/// Rows per tile of a lora_B with r columns: whole rows, at most plan_tile_elements elements (at least one row).
constexpr std::size_t plan_p_rows_per_tile(std::size_t r) noexcept {
  return r == 0 || plan_tile_elements / r == 0 ? 1 : plan_tile_elements / r;
}

/// Q's tiles: each of the r rows of a lora_A with `cols` columns (tensor `tensor`) in chunks of at most
/// plan_tile_elements, one partial per chunk, row j's chunk c at partial slot + j · chunks + c. Returns the chunks
/// per row.
inline std::size_t append_q_tiles(std::vector<plan_tile>& tiles, std::uint32_t tensor, std::size_t r, std::size_t cols,
                                  std::size_t slot) {
  const std::size_t tile = plan_tile_elements, chunks = (cols + tile - 1) / tile;
  for (std::size_t j = 0; j < r; ++j)
    for (std::size_t c = 0; c < chunks; ++c)
      tiles.push_back({tensor, tile_kind::q_row, j * cols + c * tile, std::min(tile, cols - c * tile), slot + j * chunks + c});
  return chunks;
}

/// P's tiles: a lora_B of `rows` × r (tensor `tensor`) in blocks of plan_p_rows_per_tile(r) whole rows, r partials
/// per block, block b's column c at partial slot + b · r + c. Returns the blocks.
inline std::size_t append_p_tiles(std::vector<plan_tile>& tiles, std::uint32_t tensor, std::size_t r, std::size_t rows,
                                  std::size_t slot) {
  const std::size_t per = plan_p_rows_per_tile(r), blocks = (rows + per - 1) / per;
  for (std::size_t b = 0; b < blocks; ++b)
    tiles.push_back({tensor, tile_kind::p_rows, b * per * r, std::min(per, rows - b * per) * r, slot + b * r});
  return blocks;
}

/// λ's tiles: the r singular values of tensor `tensor` in chunks of at most plan_tile_elements, element i's score to
/// lambda_scores[score_offset + i].
inline void append_lambda_tiles(std::vector<plan_tile>& tiles, std::uint32_t tensor, std::size_t r,
                                std::size_t score_offset) {
  for (std::size_t b = 0; b < r; b += plan_tile_elements)
    tiles.push_back({tensor, tile_kind::lambda, b, std::min(plan_tile_elements, r - b), score_offset});
}

/// The host side of a plan: built once from the registered shapes (tensors are re-pointed on rebind).
template <class T>
struct step_plan {
  std::vector<plan_tensor<T>> tensors;  ///< 3 per adapter, in registration order: A, E, B
  std::vector<plan_tile> tiles;
  std::vector<plan_score> scores;  ///< one per singular value, in score order (b0)
  std::size_t partials = 0;        ///< doubles of partial sums the tiles write

  /// Appends adapter k (tensors 3k … 3k + 2) whose state starts at `base` and whose singular values start at
  /// `score_offset` among all b0.
  template <class Space>
  void add_adapter(const svd_adapter_views<T, Space>& v, std::size_t base, std::size_t score_offset) {
    const auto first = static_cast<std::uint32_t>(tensors.size());
    const auto x = plan_tensors_of(v, base);
    tensors.insert(tensors.end(), x.begin(), x.end());
    const std::size_t r = v.rank(), in = v.in_features(), out = v.out_features();
    if (r == 0) return;
    const std::size_t q_base = partials;
    const std::size_t q_chunks = append_q_tiles(tiles, first, r, in, q_base);
    partials += r * q_chunks;
    append_lambda_tiles(tiles, first + 1, r, score_offset);
    const std::size_t p_base = partials;
    const std::size_t p_chunks = append_p_tiles(tiles, first + 2, r, out, p_base);
    partials += p_chunks * r;
    for (std::size_t j = 0; j < r; ++j)
      scores.push_back({q_base + j * q_chunks, q_chunks, p_base + j, p_chunks, r, in, out, first + 1, j});
  }
};

}  // namespace adalora::detail
