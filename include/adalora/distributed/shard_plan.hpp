// The step plan of one rank of a partitioned allocator: its adapter parts' tiles and what its mask-step exchange holds.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "adalora/adapters/svd_adapter_views.hpp"
#include "adalora/allocation/step_plan.hpp"
#include "adalora/core/error.hpp"
#include "adalora/distributed/ownership.hpp"

namespace adalora::detail {

/// One adapter's part on one rank, in the adapter's global coordinates (what the ranks tell each other at the
/// first step). A whole adapter is the part with offsets 0 and counts in and out.
struct part_descriptor {
  std::string name;
  std::size_t r = 0, in = 0, out = 0;
  std::size_t in_offset = 0, in_count = 0;    ///< columns of lora_A (Q) held
  std::size_t out_offset = 0, out_count = 0;  ///< rows of lora_B (P) held
  bool counts_lambda = true;

  /// Whether this part holds every column of Q (every row of P): a line that no other rank holds a piece of.
  bool whole_q() const noexcept { return in_offset == 0 && in_count == in; }
  bool whole_p() const noexcept { return out_offset == 0 && out_count == out; }
  bool operator==(const part_descriptor&) const = default;
};

/// The part that `views` registered with `shard` make, after checking them: lora_A (r, in_count), lora_E (r),
/// lora_B (out_count, r) inside the global (in, out), parameters with data, gradients of their parameters' shapes.
/// Throws shape_error naming the first problem.
template <class T, class Space>
part_descriptor part_of(const std::string& name, const svd_adapter_views<T, Space>& v, const adapter_shard& shard) {
  const auto where = "adapter '" + name + "' (a part of it, adapter_shard): ";
  const std::size_t r = v.rank();
  if (v.lora_A.extent(0) != r || v.lora_B.extent(1) != r)
    throw shape_error(where + "ranks disagree: lora_A is " + extents_string(v.lora_A) + ", lora_E is " +
                      extents_string(v.lora_E) + ", lora_B is " + extents_string(v.lora_B) +
                      "; expected lora_A (r, in_count), lora_E (r), lora_B (out_count, r)");
  if (shard.in == 0 || shard.out == 0)
    throw shape_error(where + "the global in = " + std::to_string(shard.in) + " and out = " + std::to_string(shard.out) +
                      " must be positive");
  const std::size_t in_count = v.lora_A.extent(1), out_count = v.lora_B.extent(0);
  if (shard.in_offset > shard.in || in_count > shard.in - shard.in_offset)
    throw shape_error(where + "lora_A's " + std::to_string(in_count) + " columns from column " +
                      std::to_string(shard.in_offset) + " reach past the adapter's in = " + std::to_string(shard.in));
  if (shard.out_offset > shard.out || out_count > shard.out - shard.out_offset)
    throw shape_error(where + "lora_B's " + std::to_string(out_count) + " rows from row " +
                      std::to_string(shard.out_offset) + " reach past the adapter's out = " + std::to_string(shard.out));
  auto need_data = [&](const auto& x, const char* what) {
    if (!x.empty() && x.data == nullptr)
      throw shape_error(where + what + " has extents " + extents_string(x) + " but no data (null pointer)");
  };
  need_data(v.lora_A, "lora_A");
  need_data(v.lora_E, "lora_E");
  need_data(v.lora_B, "lora_B");
  auto grad_matches = [&](const auto& g, const auto& p, const char* what) {
    if (g.data != nullptr && g.extents != p.extents)
      throw shape_error(where + what + " is " + extents_string(g) + " but its parameter is " + extents_string(p));
  };
  grad_matches(v.grad_A, v.lora_A, "grad_A");
  grad_matches(v.grad_E, v.lora_E, "grad_E");
  grad_matches(v.grad_B, v.lora_B, "grad_B");
  return {name, r, shard.in, shard.out, shard.in_offset, in_count, shard.out_offset, out_count, shard.counts_lambda};
}

/// A number that the pack pass writes into a rank's exchange segment: Σ_{c < chunks} partial[first + c · stride],
/// added in order from 0 (a tile's own sum is chunks = 1, which copies it exactly).
struct pack_record {
  std::size_t first = 0, chunks = 0, stride = 1;
};

/// What one number (or run of numbers) of a rank's exchange segment is, in the union of all ranks' adapters.
struct contribution {
  enum class kind : std::uint8_t {
    line_sum,  ///< the sum of this part of Q row `line` (q) or P column `line` (!q), over the part's own tiles
    tile_sum,  ///< the sum of global tile `chunk` of Q row `line` (q), or column `line` of P's block `chunk` (!q)
    split,     ///< `count` element scores of global tile `chunk` (Q row `line`, or P's block `chunk`, all columns),
               ///< starting at element `lo` of the tile (Q: column; P: row × r + column)
    lambda,    ///< the element score of λ_line
  };
  kind what = kind::line_sum;
  bool q = true;
  std::uint32_t part = 0;  ///< index of the part in its rank's registration order
  std::size_t line = 0, chunk = 0, lo = 0, count = 1;
  std::size_t pos = 0;  ///< where it starts in the rank's segment (doubles)
};

/// One rank's plan: the tiles its fused pass runs (tensor 3p, 3p + 1, 3p + 2 are part p's lora_A, lora_E, lora_B),
/// the score table of its singular values (for the masks), and its exchange segment: `pack.size()` sums, then the
/// float scores of the pass (λ by local singular value, then the split pieces) widened to double.
struct part_plan {
  std::vector<plan_tile> tiles;
  std::vector<plan_score> scores;
  std::size_t partials = 0;       ///< doubles the tiles' sums occupy
  std::size_t lambda_floats = 0;  ///< the rank's b0: its λ scores come first among the pass's element scores
  std::size_t split_floats = 0;   ///< element scores of split tiles, after the λ scores
  std::vector<pack_record> pack;
  std::vector<contribution> contributions;

  std::size_t element_scores() const noexcept { return lambda_floats + split_floats; }
  std::size_t segment_size() const noexcept { return pack.size() + element_scores(); }
};

namespace shard_planning {

/// The columns [lo, hi) of global tile `chunk` of a line of `size` elements cut into `per`-element tiles, within a
/// part that holds [offset, offset + count) of it.
struct cut {
  std::size_t chunk, lo, hi;
  bool whole;
};
inline std::vector<cut> cuts(std::size_t size, std::size_t per, std::size_t offset, std::size_t count) {
  std::vector<cut> out;
  if (count == 0) return out;
  for (std::size_t c = offset / per; c * per < offset + count; ++c) {
    const std::size_t lo = std::max(c * per, offset), hi = std::min({(c + 1) * per, size, offset + count});
    out.push_back({c, lo, hi, lo == c * per && hi == std::min((c + 1) * per, size)});
  }
  return out;
}

}  // namespace shard_planning

/// The plan of a rank that holds `parts` (in registration order). With shard_sums::exact, a line split between
/// ranks follows the global tiles (docs/allocator_step.md): whole tiles send their sums, cut ones their element
/// scores; any other line (held whole, or summed per_triplet) is tiled on its own and sends its sum.
inline part_plan plan_parts(const std::vector<part_descriptor>& parts, shard_sums sums) {
  using kind = contribution::kind;
  part_plan pp;
  for (const auto& p : parts) pp.lambda_floats += p.r;
  std::size_t score_offset = 0;
  std::vector<contribution> floats;  // λ and split contributions, positioned once the sums are counted
  for (std::size_t k = 0; k < parts.size(); ++k) {
    const part_descriptor& p = parts[k];
    const auto part = static_cast<std::uint32_t>(k);
    const auto tA = static_cast<std::uint32_t>(3 * k), tE = tA + 1, tB = tA + 2;
    const std::size_t r = p.r;
    // ---- Q: rows of lora_A
    std::size_t q_slot = 0, q_chunks = 0;
    if (r > 0 && p.in_count > 0) {
      if (sums == shard_sums::per_triplet || p.whole_q()) {
        q_slot = pp.partials;
        q_chunks = append_q_tiles(pp.tiles, tA, r, p.in_count, q_slot);
        pp.partials += r * q_chunks;
        for (std::size_t j = 0; j < r; ++j) {
          pp.contributions.push_back({kind::line_sum, true, part, j, 0, 0, 1, pp.pack.size()});
          pp.pack.push_back({q_slot + j * q_chunks, q_chunks, 1});
        }
      } else {
        const auto cs = shard_planning::cuts(p.in, plan_tile_elements, p.in_offset, p.in_count);
        for (std::size_t j = 0; j < r; ++j)
          for (const auto& c : cs) {
            const std::size_t begin = j * p.in_count + (c.lo - p.in_offset), count = c.hi - c.lo;
            if (c.whole) {
              pp.tiles.push_back({tA, tile_kind::q_row, begin, count, pp.partials});
              pp.contributions.push_back({kind::tile_sum, true, part, j, c.chunk, 0, 1, pp.pack.size()});
              pp.pack.push_back({pp.partials++, 1, 1});
            } else {
              pp.tiles.push_back({tA, tile_kind::split, begin, count, pp.lambda_floats + pp.split_floats});
              floats.push_back({kind::split, true, part, j, c.chunk, c.lo - c.chunk * plan_tile_elements, count,
                                pp.lambda_floats + pp.split_floats});
              pp.split_floats += count;
            }
          }
      }
    }
    // ---- λ
    if (r > 0 && p.counts_lambda) {
      append_lambda_tiles(pp.tiles, tE, r, score_offset);
      for (std::size_t j = 0; j < r; ++j)
        floats.push_back({kind::lambda, true, part, j, 0, 0, 1, score_offset + j});
    }
    // ---- P: columns of lora_B
    std::size_t p_slot = 0, p_chunks = 0;
    if (r > 0 && p.out_count > 0) {
      if (sums == shard_sums::per_triplet || p.whole_p()) {
        p_slot = pp.partials;
        p_chunks = append_p_tiles(pp.tiles, tB, r, p.out_count, p_slot);
        pp.partials += p_chunks * r;
        for (std::size_t j = 0; j < r; ++j) {
          pp.contributions.push_back({kind::line_sum, false, part, j, 0, 0, 1, pp.pack.size()});
          pp.pack.push_back({p_slot + j, p_chunks, r});
        }
      } else {
        const std::size_t per = plan_p_rows_per_tile(r);
        for (const auto& c : shard_planning::cuts(p.out, per, p.out_offset, p.out_count)) {
          const std::size_t begin = (c.lo - p.out_offset) * r, count = (c.hi - c.lo) * r;
          if (c.whole) {
            pp.tiles.push_back({tB, tile_kind::p_rows, begin, count, pp.partials});
            for (std::size_t j = 0; j < r; ++j) {
              pp.contributions.push_back({kind::tile_sum, false, part, j, c.chunk, 0, 1, pp.pack.size()});
              pp.pack.push_back({pp.partials + j, 1, 1});
            }
            pp.partials += r;
          } else {
            pp.tiles.push_back({tB, tile_kind::split, begin, count, pp.lambda_floats + pp.split_floats});
            floats.push_back({kind::split, false, part, 0, c.chunk, (c.lo - c.chunk * per) * r, count,
                              pp.lambda_floats + pp.split_floats});
            pp.split_floats += count;
          }
        }
      }
    }
    // the score table: what the masks read (λ_j of this part); the sums are the union's business
    for (std::size_t j = 0; j < r; ++j)
      pp.scores.push_back({q_slot + j * q_chunks, q_chunks, p_slot + j, p_chunks, r, p.in_count, p.out_count, tE, j});
    score_offset += r;
  }
  // the float scores follow the sums in the segment
  for (auto c : floats) {
    c.pos += pp.pack.size();
    pp.contributions.push_back(c);
  }
  return pp;
}

}  // namespace adalora::detail
