// A partitioned allocator's mask step: every rank's score sums all-gathered and assembled into the union's scores.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "adalora/allocation/allocator_kernels.hpp"
#include "adalora/allocation/step_plan.hpp"
#include "adalora/backends/backend.hpp"
#include "adalora/core/error.hpp"
#include "adalora/core/float_ops.hpp"
#include "adalora/core/host_device.hpp"
#include "adalora/distributed/communicator.hpp"
#include "adalora/distributed/shard_plan.hpp"

namespace adalora::detail {

/// Where one number of the union's partial sums or λ scores comes from in the gathered segments.
struct assemble_source {
  enum class kind : std::uint32_t {
    sum,     ///< partial[dst] = gathered[src]
    lambda,  ///< lambda_scores[dst] = gathered[src] (a float score, widened for the exchange)
    split,   ///< the sums of a tile cut between ranks, recomputed from its pieces in the single process's lane order:
             ///< partial[dst + c] for its `cols` columns (a Q tile: 1; a P block: r)
  };
  kind what = kind::sum;
  tile_kind tile = tile_kind::q_row;  ///< split: the tile's kind (its lane layout)
  std::size_t dst = 0;
  std::size_t src = 0;               ///< sum, lambda: index in the gathered segments; split: first piece
  std::size_t pieces = 0;            ///< split: how many pieces, in the tile's element order
  std::size_t cols = 1;              ///< split: the tile's columns
};

/// A run of element scores of a split tile in the gathered segments.
struct assemble_piece {
  std::size_t src = 0, count = 0;
};

/// One global adapter of the union, where its numbers live in the union's partial sums, and the parts that make it.
struct union_adapter {
  std::string name;
  std::size_t r = 0, in = 0, out = 0;
  std::size_t score_offset = 0;  ///< of its singular values among the union's b0
  bool q_tiles = false;          ///< the union holds Q's global tile sums (exact, split) rather than line sums
  bool p_tiles = false;
  std::size_t q_base = 0, q_chunks = 0;  ///< row j's numbers at q_base + j · q_chunks + c
  std::size_t p_base = 0, p_chunks = 0;  ///< column j's numbers at p_base + c · r + j
  struct part_ref {
    int rank;
    std::size_t index;  ///< in that rank's parts
  };
  std::vector<part_ref> parts;
  std::vector<int> q_order, p_order;  ///< ranks holding pieces of Q (of P), by offset: the order of line sums
};

/// The union of every rank's parts, its score table (in the single process's summation order) and where each of
/// its numbers comes from in the gathered exchange: the same on every rank.
struct union_layout {
  std::vector<union_adapter> adapters;
  std::map<std::string, std::size_t, std::less<>> index;  ///< name → adapters
  std::vector<plan_score> scores;                         ///< per singular value of the union (b0)
  std::size_t partials = 0;
  std::vector<assemble_source> sources;
  std::vector<assemble_piece> pieces;
  std::size_t segment = 0;               ///< doubles per rank in the all-gather (the largest rank's segment)
  std::vector<std::size_t> local_index;  ///< this rank's singular values → the union's
  std::size_t bytes_per_rank() const noexcept { return segment * sizeof(double); }
  std::size_t b0() const noexcept { return scores.size(); }
};

/// Builds the union from every rank's parts (`all[k]`: rank k's parts in registration order), assuming they were
/// checked to tile every adapter (check_parts). `rank`: this rank.
inline union_layout make_union_layout(const std::vector<std::vector<part_descriptor>>& all, int rank, shard_sums sums) {
  union_layout u;
  // the adapters, in order of first appearance over the ranks
  for (std::size_t k = 0; k < all.size(); ++k)
    for (std::size_t i = 0; i < all[k].size(); ++i) {
      const part_descriptor& p = all[k][i];
      auto [it, fresh] = u.index.emplace(p.name, u.adapters.size());
      if (fresh) {
        union_adapter a;
        a.name = p.name;
        a.r = p.r;
        a.in = p.in;
        a.out = p.out;
        u.adapters.push_back(std::move(a));
      }
      u.adapters[it->second].parts.push_back({static_cast<int>(k), i});
    }
  // layout of each adapter's numbers, and its score table
  for (auto& a : u.adapters) {
    std::vector<std::pair<std::size_t, int>> q, p;  // (offset, rank) of the pieces
    for (const auto& ref : a.parts) {
      const part_descriptor& d = all[static_cast<std::size_t>(ref.rank)][ref.index];
      if (d.in_count > 0) q.emplace_back(d.in_offset, ref.rank);
      if (d.out_count > 0) p.emplace_back(d.out_offset, ref.rank);
    }
    std::sort(q.begin(), q.end());
    std::sort(p.begin(), p.end());
    for (const auto& x : q) a.q_order.push_back(x.second);
    for (const auto& x : p) a.p_order.push_back(x.second);
    a.q_tiles = sums == shard_sums::exact && q.size() > 1;
    a.p_tiles = sums == shard_sums::exact && p.size() > 1;
    a.score_offset = u.scores.size();
    a.q_base = u.partials;
    a.q_chunks = a.q_tiles ? (a.in + plan_tile_elements - 1) / plan_tile_elements : q.size();
    u.partials += a.r * a.q_chunks;
    a.p_base = u.partials;
    a.p_chunks = a.p_tiles ? (a.out + plan_p_rows_per_tile(a.r) - 1) / plan_p_rows_per_tile(a.r) : p.size();
    u.partials += a.r * a.p_chunks;
    for (std::size_t j = 0; j < a.r; ++j)
      u.scores.push_back({a.q_base + j * a.q_chunks, a.q_chunks, a.p_base + j, a.p_chunks, a.r, a.in, a.out, 0, j});
  }
  // every rank's segment, and where its numbers go
  std::vector<part_plan> plans;
  for (const auto& parts : all) {
    plans.push_back(plan_parts(parts, sums));
    u.segment = std::max(u.segment, plans.back().segment_size());
  }
  struct split_key {
    std::size_t adapter;
    bool q;
    std::size_t line, chunk;
    auto operator<=>(const split_key&) const = default;
  };
  std::map<split_key, std::vector<std::pair<std::size_t, assemble_piece>>> splits;  // pieces by their first element
  using kind = contribution::kind;
  for (std::size_t k = 0; k < all.size(); ++k) {
    const std::size_t base = k * u.segment;
    for (const contribution& c : plans[k].contributions) {
      const std::size_t ai = u.index.at(all[k][c.part].name);
      const union_adapter& a = u.adapters[ai];
      auto piece = [&](const std::vector<int>& order) {
        return static_cast<std::size_t>(std::find(order.begin(), order.end(), static_cast<int>(k)) - order.begin());
      };
      switch (c.what) {
        case kind::line_sum:
          u.sources.push_back({assemble_source::kind::sum, tile_kind::q_row,
                               c.q ? a.q_base + c.line * a.q_chunks + piece(a.q_order)
                                   : a.p_base + piece(a.p_order) * a.r + c.line,
                               base + c.pos, 0, 1});
          break;
        case kind::tile_sum:
          u.sources.push_back({assemble_source::kind::sum, tile_kind::q_row,
                               c.q ? a.q_base + c.line * a.q_chunks + c.chunk : a.p_base + c.chunk * a.r + c.line,
                               base + c.pos, 0, 1});
          break;
        case kind::lambda:
          u.sources.push_back({assemble_source::kind::lambda, tile_kind::lambda, a.score_offset + c.line,
                               base + c.pos, 0, 1});
          break;
        case kind::split:
          splits[{ai, c.q, c.q ? c.line : 0, c.chunk}].push_back({c.lo, {base + c.pos, c.count}});
          break;
      }
    }
  }
  for (auto& [key, list] : splits) {
    std::sort(list.begin(), list.end(), [](const auto& x, const auto& y) { return x.first < y.first; });
    const union_adapter& a = u.adapters[key.adapter];
    assemble_source s;
    s.what = assemble_source::kind::split;
    s.tile = key.q ? tile_kind::q_row : tile_kind::p_rows;
    s.dst = key.q ? a.q_base + key.line * a.q_chunks + key.chunk : a.p_base + key.chunk * a.r;
    s.src = u.pieces.size();
    s.pieces = list.size();
    s.cols = key.q ? 1 : a.r;
    for (const auto& x : list) u.pieces.push_back(x.second);
    u.sources.push_back(s);
  }
  // this rank's singular values in the union
  for (const part_descriptor& p : all[static_cast<std::size_t>(rank)])
    for (std::size_t j = 0; j < p.r; ++j) u.local_index.push_back(u.adapters[u.index.at(p.name)].score_offset + j);
  // every number of the union comes from exactly one place (a broken layout would give wrong masks silently)
  std::vector<std::uint32_t> partial_writes(u.partials, 0), lambda_writes(u.b0(), 0);
  for (const auto& s : u.sources) {
    if (s.what == assemble_source::kind::lambda) {
      ++lambda_writes[s.dst];
    } else {
      for (std::size_t c = 0; c < s.cols; ++c) ++partial_writes[s.dst + c];
    }
  }
  auto once = [](std::uint32_t n) { return n == 1; };
  if (!std::all_of(partial_writes.begin(), partial_writes.end(), once) ||
      !std::all_of(lambda_writes.begin(), lambda_writes.end(), once))
    throw error("distributed allocator: internal error, the union's score sums are not covered exactly once by the "
                "ranks' exchange; please report this with the ranks' adapter parts");
  return u;
}

/// Pack pass: segment[i] = the i-th pack record's sum of partial sums (i < records; added as triplet_from_partials_fn
/// adds them, each sum rounded on its own), then the pass's element scores widened to double.
struct pack_segment_fn {
  const pack_record* records;
  std::size_t record_count;
  const double* partial;
  const float* element_scores;
  double* segment;

  ADALORA_HOST_DEVICE void operator()(std::size_t i) const noexcept {
    if (i < record_count) {
      const pack_record r = records[i];
      double s = 0.0;
      for (std::size_t c = 0; c < r.chunks; ++c) s = add_rn(s, partial[r.first + c * r.stride]);
      segment[i] = s;
    } else {
      segment[i] = static_cast<double>(element_scores[i - record_count]);
    }
  }
};

/// Assemble pass: the union's partial sums and λ scores from the gathered segments (one source per work item).
struct assemble_union_fn {
  const assemble_source* sources;
  const assemble_piece* pieces;
  const double* gathered;
  double* partial;
  float* lambda_scores;

  ADALORA_HOST_DEVICE void operator()(std::size_t i) const noexcept {
    const assemble_source s = sources[i];
    switch (s.what) {
      case assemble_source::kind::sum:
        partial[s.dst] = gathered[s.src];
        break;
      case assemble_source::kind::lambda:
        lambda_scores[s.dst] = static_cast<float>(gathered[s.src]);
        break;
      case assemble_source::kind::split: {
        // the tile's element scores in order, through the sink the fused pass would have used for the whole tile
        const tile_lanes lanes = lanes_of(s.tile, s.cols);
        if (lanes.groups > 0) {
          lane_sum_sink sink(partial, s.dst, lanes);
          feed(s, sink);
          sink.finish();
        } else {
          column_sum_sink sink(partial, s.dst, s.cols);
          feed(s, sink);
        }
        break;
      }
    }
  }

  template <class Sink>
  ADALORA_HOST_DEVICE void feed(const assemble_source& s, Sink& sink) const noexcept {
    for (std::size_t p = 0; p < s.pieces; ++p) {
      const assemble_piece piece = pieces[s.src + p];
      for (std::size_t e = 0; e < piece.count; ++e) {
        const auto v = static_cast<float>(gathered[piece.src + e]);
        sink.add(0, &v, 1);
      }
    }
  }
};

/// keep[i] = union_keep[index[i]]: this rank's pattern from the union's.
struct local_keep_fn {
  const std::size_t* index;
  const std::uint8_t* union_keep;
  std::uint8_t* keep;
  ADALORA_HOST_DEVICE void operator()(std::size_t i) const noexcept { keep[i] = union_keep[index[i]]; }
};

/// The device (or host) side of a partitioned allocator's exchange: its tables and buffers in the backend's memory,
/// uploaded once. `exchange` runs a mask step's pack, all-gather and assembly; then the caller scores and selects
/// over the union (scores(), keep()).
template <Backend B, Communicator C>
class score_exchange {
public:
  score_exchange() = default;

  /// Uploads the tables of `layout` and this rank's pack records; allocates the buffers.
  score_exchange(B& backend, const union_layout& layout, const part_plan& mine, int size)
      : records_(upload(backend, mine.pack)),
        sources_(upload(backend, layout.sources)),
        pieces_(upload(backend, layout.pieces)),
        table_(upload(backend, layout.scores)),
        local_index_(upload(backend, layout.local_index)),
        segment_(backend.template allocate<double>(layout.segment)),
        gathered_(backend.template allocate<double>(layout.segment * static_cast<std::size_t>(size))),
        partial_(backend.template allocate<double>(layout.partials)),
        lambda_scores_(backend.template allocate<float>(layout.b0())),
        scores_(backend.template allocate<float>(layout.b0())),
        keep_(backend.template allocate<std::uint8_t>(layout.b0())),
        record_count_(mine.pack.size()),
        element_scores_(mine.element_scores()),
        source_count_(layout.sources.size()),
        b0_(layout.b0()) {}

  /// The mask step's exchange: packs this rank's sums (`partial`, the fused pass's) and element scores into its
  /// segment, all-gathers the segments, and leaves the union's triplet scores in scores().
  void exchange(B& backend, C& comm, const double* partial, const float* element_scores) {
    backend.for_each(record_count_ + element_scores_,
                     pack_segment_fn{records_.data(), record_count_, partial, element_scores, segment_.data()});
    all_gather(backend, comm);
    backend.for_each(source_count_, assemble_union_fn{sources_.data(), pieces_.data(), gathered_.data(),
                                                      partial_.data(), lambda_scores_.data()});
    backend.for_each(b0_, triplet_from_partials_fn{table_.data(), partial_.data(), lambda_scores_.data(),
                                                   scores_.data()});
  }

  /// This rank's pattern (local b0) from the union's keep().
  void local_keep(B& backend, std::uint8_t* keep, std::size_t local_b0) const {
    backend.for_each(local_b0, local_keep_fn{local_index_.data(), keep_.data(), keep});
  }

  float* scores() noexcept { return scores_.data(); }
  std::uint8_t* keep() noexcept { return keep_.data(); }
  std::size_t b0() const noexcept { return b0_; }

private:
  template <class V>
  static auto upload(B& backend, const std::vector<V>& host) {
    auto buf = backend.template allocate<V>(host.size());
    backend.copy_from_host(host.data(), host.size(), buf.data());
    return buf;
  }

  // Through host memory when the communicator cannot reach the backend's (an MPI communicator with a GPU backend).
  void all_gather(B& backend, C& comm) {
    const std::size_t n = segment_.size();
    if constexpr (std::is_same_v<typename B::memory_space, typename C::memory_space>) {
      backend.synchronize();
      comm.all_gather(segment_.data(), n, gathered_.data());
    } else {
      static_assert(std::is_same_v<typename C::memory_space, host_space>,
                    "a communicator in device memory needs a backend in the same memory");
      host_segment_.resize(n);
      host_gathered_.resize(gathered_.size());
      backend.copy_to_host(segment_.data(), n, host_segment_.data());
      comm.all_gather(host_segment_.data(), n, host_gathered_.data());
      backend.copy_from_host(host_gathered_.data(), host_gathered_.size(), gathered_.data());
    }
  }

  buffer_t<B, pack_record> records_{};
  buffer_t<B, assemble_source> sources_{};
  buffer_t<B, assemble_piece> pieces_{};
  buffer_t<B, plan_score> table_{};
  buffer_t<B, std::size_t> local_index_{};
  buffer_t<B, double> segment_{}, gathered_{}, partial_{};
  buffer_t<B, float> lambda_scores_{}, scores_{};
  buffer_t<B, std::uint8_t> keep_{};
  std::vector<double> host_segment_, host_gathered_;
  std::size_t record_count_ = 0, element_scores_ = 0, source_count_ = 0, b0_ = 0;
};

}  // namespace adalora::detail
