// The lane order of a tile's score sums, shared by every backend, and the block form of a tiled pass that uses it.
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>

#include "adalora/core/float_ops.hpp"
#include "adalora/core/host_device.hpp"

namespace adalora::detail {

/// Lanes that work on one tile in the block form of a tiled pass (on a GPU: the threads of one block). Also fixes
/// the order in which every backend sums a tile's element scores, block form or not, so that all of them agree bit
/// for bit: see tile_lanes.
inline constexpr std::size_t plan_lanes = 256;

/// How the element scores of a tile are summed. Element j of the tile (counted from its first element, row-major)
/// belongs to lane j mod width(), width() = groups · cols ≤ plan_lanes; each lane sums its elements in double, in
/// element order (detail::add_rn); then, for each column c < cols, the lanes g · cols + c of the groups g are combined
/// by lane_tree. groups = 0: the tile's scores are not summed by lanes. The allocator's layouts are detail::lanes_of
/// (allocator_kernels.hpp).
struct tile_lanes {
  std::size_t groups = 0;
  std::size_t cols = 0;
  ADALORA_HOST_DEVICE constexpr std::size_t width() const noexcept { return groups * cols; }
};

/// The first level of lane_tree: the largest power of two below `groups` (0 when groups ≤ 1).
ADALORA_HOST_DEVICE constexpr std::size_t lane_tree_first_half(std::size_t groups) noexcept {
  std::size_t half = 1;
  while (half < groups) half *= 2;
  return half / 2;
}

/// The group of lane `lane` (lane g · cols + c is in group g), once per tile rather than once per level of the tree
/// (a 64-bit division is dozens of instructions on a GPU); 0 where the layout has no lanes to combine.
ADALORA_HOST_DEVICE constexpr std::size_t lane_group(tile_lanes lanes, std::size_t lane) noexcept {
  return lanes.groups > 1 ? lane / lanes.cols : 0;
}

/// One lane's part of level `half` of lane_tree: lane g · cols + c (g = lane_group(lanes, lane)) with g < half adds
/// lane (g + half) · cols + c into itself when that group exists. The levels run half = lane_tree_first_half(groups),
/// …, 2, 1, each after the previous one has finished in every lane; sums[c] then holds column c's total.
ADALORA_HOST_DEVICE inline void lane_tree_step(double* sums, tile_lanes lanes, std::size_t half, std::size_t lane,
                                               std::size_t group) noexcept {
  if (group < half && group + half < lanes.groups) sums[lane] = add_rn(sums[lane], sums[lane + half * lanes.cols]);
}

/// The whole lane_tree over sums[0, width) on one thread: the same additions, in the same order, as the block form.
ADALORA_HOST_DEVICE inline void lane_tree(double* sums, tile_lanes lanes) noexcept {
  for (std::size_t half = lane_tree_first_half(lanes.groups); half > 0; half /= 2)
    for (std::size_t g = 0; g < half; ++g)
      for (std::size_t c = 0; c < lanes.cols; ++c) lane_tree_step(sums, lanes, half, g * lanes.cols + c, g);
}

/// What one lane of a tile hands back in the block form: the sum of its element scores and how many of its
/// elements had non-finite inputs.
struct lane_result {
  double sum = 0.0;
  std::uint32_t non_finite = 0;
};

/// A pass that can also run in block form: plan_lanes lanes per tile, combined as tile_lanes says.
///   f.lane_pass(t, lane)          does lane `lane`'s share of tile t (all work on its elements; lanes ≥ the
///                                 tile's width may have nothing to do) and returns its lane_result;
///   f.lanes(t)                    the tile's lane layout (groups = 0: nothing to combine);
///   f.finish_lane(t, lane, sums, non_finite)
///                                 after lane_tree, called for every lane: stores what lane `lane` owns of the
///                                 tile's result (column totals sums[c], the tile's non-finite count).
/// A backend with a block launch (the CUDA backend's for_each_tile_lanes) runs it with one thread per lane; every
/// other backend runs the pass's tile form, which must leave the same results bit for bit.
template <class F>
concept TileLanePass = requires(const F& f, std::size_t t, std::size_t lane, const double* sums, std::uint32_t n) {
  { f.lane_pass(t, lane) } -> std::same_as<lane_result>;
  { f.lanes(t) } -> std::same_as<tile_lanes>;
  f.finish_lane(t, lane, sums, n);
};

/// The block form on the host, lane after lane: a plain-loop reference of a backend's block launch, which tests
/// hold against the tile form.
template <TileLanePass F>
void run_tile_lanes_on_host(const F& f, std::size_t tiles) {
  double sums[plan_lanes];
  for (std::size_t t = 0; t < tiles; ++t) {
    std::uint32_t non_finite = 0;
    for (std::size_t lane = 0; lane < plan_lanes; ++lane) {
      const lane_result r = f.lane_pass(t, lane);
      sums[lane] = r.sum;
      non_finite += r.non_finite;
    }
    lane_tree(sums, f.lanes(t));
    for (std::size_t lane = 0; lane < plan_lanes; ++lane) f.finish_lane(t, lane, sums, non_finite);
  }
}

}  // namespace adalora::detail
