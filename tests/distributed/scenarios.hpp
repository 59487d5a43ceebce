// Distributed allocator runs to hold against one process: the scenarios, how ranks split them, and the comparison.
// Shared by the thread-communicator tests (test_distributed) and the MPI program (mpi_allocator_check).
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "adalora/allocation/rank_allocator.hpp"
#include "adalora/io/safetensors.hpp"
#include "adalora/validate/alloc_trace.hpp"

namespace adalora::testing::distributed {

/// One adapter of a scenario, whole.
struct global_adapter {
  std::string name;
  std::size_t r = 0, in = 0, out = 0;
};

/// One adapter's tensors at one step, whole, in PEFT's layout.
struct step_values {
  std::vector<float> A, E, B, gA, gE, gB;
};

/// A run to reproduce: its config, its adapters and each step's values (a deterministic function of step and
/// adapter, so that every rank and the single process see the same numbers).
struct scenario {
  std::string name;
  adalora_config config;
  std::vector<global_adapter> adapters;
  std::vector<std::int64_t> steps;
  std::function<step_values(std::int64_t step, std::size_t adapter)> values;
};

/// A PEFT reference trace as a scenario (alloc-basic: 12 adapters, 55 steps; alloc-edge: 6 adapters, 32 steps).
inline scenario trace_scenario(const std::string& path) {
  auto file = std::make_shared<io::safetensors_file>(io::safetensors_file::open(path));
  scenario s;
  s.name = path.substr(path.find_last_of('/') + 1);
  s.config = validate::detail::trace_config(*file);
  const auto names = validate::detail::parse_metadata_json(*file, "adapters");
  const auto steps = validate::detail::parse_metadata_json(*file, "steps");
  for (const auto& st : steps) s.steps.push_back(st.at("t").get<std::int64_t>());
  for (const auto& n : names) {
    global_adapter a;
    a.name = n.get<std::string>();
    const auto shape = file->info(std::to_string(s.steps.front()) + "/" + a.name + "/lora_A").shape;
    a.r = shape.at(0);
    a.in = shape.at(1);
    a.out = file->info(std::to_string(s.steps.front()) + "/" + a.name + "/lora_B").shape.at(0);
    s.adapters.push_back(a);
  }
  const auto adapters = s.adapters;
  s.values = [file, adapters](std::int64_t t, std::size_t k) {
    const std::string p = std::to_string(t) + "/" + adapters[k].name + "/";
    return step_values{file->read_f32(p + "lora_A"),      file->read_f32(p + "lora_E"),
                       file->read_f32(p + "lora_B"),      file->read_f32(p + "grad/lora_A"),
                       file->read_f32(p + "grad/lora_E"), file->read_f32(p + "grad/lora_B")};
  };
  return s;
}

/// Adapters whose lines span several tiles (docs/allocator_step.md): a lora_A of 3 tiles a row, a lora_B of 4 row
/// blocks, one with r = 300 (P summed column by column), small ones; values spread over 2^±12 so that a change of
/// summation order shows in the sums' last bits.
inline scenario tiled_scenario(unsigned seed = 7) {
  scenario s;
  s.name = "tiled";
  s.config.init_r = 8;
  s.config.target_r = 2;
  s.config.tinit = 3;
  s.config.tfinal = 5;
  s.config.total_step = 24;
  s.config.deltaT = 2;
  s.config.beta1 = 0.85;
  s.config.beta2 = 0.7;
  s.adapters = {{"wide_q", 4, 4500, 40}, {"tall_p", 6, 30, 1100}, {"fat_r", 300, 20, 12},
                {"small", 5, 9, 7},      {"mid", 8, 2100, 600}};
  for (std::int64_t t = 0; t < 28; ++t) s.steps.push_back(t);
  const auto adapters = s.adapters;
  s.values = [adapters, seed](std::int64_t t, std::size_t k) {
    std::mt19937 rng(seed * 1000003u + static_cast<unsigned>(t) * 131u + static_cast<unsigned>(k));
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::uniform_int_distribution<int> exponent(-12, 12);
    auto fill = [&](std::size_t n) {
      std::vector<float> v(n);
      for (auto& x : v) x = std::ldexp(normal(rng), exponent(rng));
      return v;
    };
    const auto& a = adapters[k];
    return step_values{fill(a.r * a.in), fill(a.r),          fill(a.out * a.r),
                       fill(a.r * a.in), fill(a.r),          fill(a.out * a.r)};
  };
  return s;
}

/// Values whose sums show a change of summation order, for the magnitude metric (score = |θ|): in every line about 4
/// "big" values 1 + k · 2^-23 and the rest tiny (2^-55 · [1, 2)), so that a line's double sum often lies on a
/// float rounding midpoint and the tiny values that survive the additions (which depend on their order) decide how
/// the mean rounds; λ = 0, and P = 0 on even steps, Q = 0 on odd ones, so that a score is one mean alone. With
/// deltaT = 1 every step masks. Summed in another order than one process's, about 1 % of the scores differ.
inline scenario rounding_scenario() {
  scenario s = tiled_scenario();
  s.name = "rounding";
  s.config.deltaT = 1;
  const auto adapters = s.adapters;
  s.values = [adapters](std::int64_t t, std::size_t k) {
    std::mt19937 rng(77u * static_cast<unsigned>(t) + 13u * static_cast<unsigned>(k) + 5u);
    std::uniform_int_distribution<int> mantissa(0, (1 << 23) - 1);
    std::uniform_real_distribution<float> unit(1.0f, 2.0f);
    const auto& a = adapters[k];
    auto fill = [&](std::size_t n, std::size_t line) {
      std::vector<float> v(n);
      std::bernoulli_distribution big(4.0 / static_cast<double>(line));
      for (auto& x : v)
        x = big(rng) ? 1.0f + static_cast<float>(mantissa(rng)) * 0x1p-23f : std::ldexp(unit(rng), -55);
      return v;
    };
    std::vector<float> A(a.r * a.in), B(a.out * a.r);
    if (t % 2 == 0) A = fill(A.size(), a.in);
    else B = fill(B.size(), a.out);
    return step_values{A, std::vector<float>(a.r), B, std::vector<float>(A.size()), std::vector<float>(a.r),
                       std::vector<float>(B.size())};
  };
  return s;
}

/// How the ranks hold a scenario's adapters.
enum class layout_kind {
  replicated,  ///< every rank every adapter (ownership::replicated)
  disjoint,    ///< adapter k whole on rank k mod size
  lopsided,    ///< all adapters whole on rank 0 but the last, on rank 1: ranks ≥ 2 hold none
  sharded,     ///< every adapter split across every rank, unevenly: lora_B's rows (even k; lora_A whole on rank
               ///< k mod size, the others registering no columns of it), lora_A's columns (odd k), or both (k mod 3
               ///< = 2); λ held by every rank, counted by rank k mod size
};

inline const char* layout_name(layout_kind k) {
  switch (k) {
    case layout_kind::replicated: return "replicated";
    case layout_kind::disjoint: return "disjoint";
    case layout_kind::lopsided: return "lopsided";
    case layout_kind::sharded: return "sharded";
  }
  return "?";
}

/// One rank's part of one adapter.
struct rank_part {
  std::size_t adapter = 0;
  std::size_t in_offset = 0, in_count = 0, out_offset = 0, out_count = 0;
  bool counts_lambda = true;
  bool whole = true;  ///< registered with add_adapter(name, views), without an adapter_shard
};

/// [offset, count) of piece `rank` of `size` uneven pieces of n: piece k gets about n · (k + 2) / Σ(j + 2).
inline std::pair<std::size_t, std::size_t> uneven_piece(std::size_t n, int rank, int size) {
  std::size_t total = 0;
  for (int k = 0; k < size; ++k) total += static_cast<std::size_t>(k + 2);
  auto edge = [&](int k) {
    std::size_t w = 0;
    for (int j = 0; j < k; ++j) w += static_cast<std::size_t>(j + 2);
    return n * w / total;
  };
  return {edge(rank), edge(rank + 1) - edge(rank)};
}

inline std::vector<rank_part> parts_of(const scenario& s, layout_kind kind, int rank, int size) {
  std::vector<rank_part> parts;
  for (std::size_t k = 0; k < s.adapters.size(); ++k) {
    const auto& a = s.adapters[k];
    const int owner = static_cast<int>(k % static_cast<std::size_t>(size));
    switch (kind) {
      case layout_kind::replicated:
        parts.push_back({k, 0, a.in, 0, a.out, true, true});
        break;
      case layout_kind::disjoint:
        if (owner == rank) parts.push_back({k, 0, a.in, 0, a.out, true, true});
        break;
      case layout_kind::lopsided: {
        const int holder = k + 1 == s.adapters.size() && size > 1 ? 1 : 0;
        if (holder == rank) parts.push_back({k, 0, a.in, 0, a.out, true, true});
        break;
      }
      case layout_kind::sharded: {
        rank_part p{k, 0, 0, 0, 0, owner == rank, false};
        const bool split_b = k % 2 == 0 || k % 3 == 2, split_a = k % 2 == 1 || k % 3 == 2;
        if (split_a) std::tie(p.in_offset, p.in_count) = uneven_piece(a.in, rank, size);
        else if (owner == rank) p.in_count = a.in;
        if (split_b) std::tie(p.out_offset, p.out_count) = uneven_piece(a.out, rank, size);
        else if (owner == rank) p.out_count = a.out;
        parts.push_back(p);
        break;
      }
    }
  }
  return parts;
}

/// What a run saw at one step.
struct step_record {
  std::int64_t step = 0;
  allocation_phase phase = allocation_phase::warmup;
  std::int64_t budget = 0;
  bool masked = false;
  std::optional<std::uint32_t> threshold;          ///< its bits
  std::map<std::string, std::vector<float>> lambda;  ///< λ after the step, of each adapter the run holds
  std::map<std::string, std::vector<float>> scores;  ///< the latest selection's triplet scores, every adapter
  std::map<std::string, std::vector<bool>> pattern;  ///< every adapter
};

/// A run's records, step by step.
using run_record = std::vector<step_record>;

/// Host copies of one rank's part of an adapter, mirrored into the backend's memory and registered with it.
template <Backend B>
struct part_tensors {
  using buf = buffer_t<B, float>;
  buf A, E, B_, gA, gE, gB;
};

/// Writes the part `p` of adapter values `v` (whole, PEFT layout) into `t`.
template <Backend Bk>
void load_part(Bk& backend, const global_adapter& a, const rank_part& p, const step_values& v,
               part_tensors<Bk>& t) {
  std::vector<float> A(a.r * p.in_count), gA(a.r * p.in_count);
  for (std::size_t j = 0; j < a.r; ++j)
    for (std::size_t c = 0; c < p.in_count; ++c) {
      A[j * p.in_count + c] = v.A[j * a.in + p.in_offset + c];
      gA[j * p.in_count + c] = v.gA[j * a.in + p.in_offset + c];
    }
  const auto first = static_cast<std::ptrdiff_t>(p.out_offset * a.r), last = first + static_cast<std::ptrdiff_t>(p.out_count * a.r);
  const std::vector<float> Bv(v.B.begin() + first, v.B.begin() + last), gB(v.gB.begin() + first, v.gB.begin() + last);
  backend.copy_from_host(A.data(), A.size(), t.A.data());
  backend.copy_from_host(gA.data(), gA.size(), t.gA.data());
  backend.copy_from_host(v.E.data(), a.r, t.E.data());
  backend.copy_from_host(v.gE.data(), a.r, t.gE.data());
  backend.copy_from_host(Bv.data(), Bv.size(), t.B_.data());
  backend.copy_from_host(gB.data(), gB.size(), t.gB.data());
}

/// One rank's tensors for its parts of a scenario (in the backend's memory), which it registers with an allocator
/// and loads with each step's values before calling step(t).
template <Backend Bk>
class rank_tensors {
public:
  rank_tensors(const scenario& s, std::vector<rank_part> parts, Bk backend = Bk{})
      : s_(&s), parts_(std::move(parts)), backend_(std::move(backend)) {
    for (const auto& p : parts_) {
      const auto& a = s.adapters[p.adapter];
      tensors_.push_back({backend_.template allocate<float>(a.r * p.in_count), backend_.template allocate<float>(a.r),
                          backend_.template allocate<float>(p.out_count * a.r),
                          backend_.template allocate<float>(a.r * p.in_count), backend_.template allocate<float>(a.r),
                          backend_.template allocate<float>(p.out_count * a.r)});
    }
  }

  /// add_adapter for every part (with an adapter_shard unless it is whole).
  template <class Allocator>
  void register_with(Allocator& alloc) {
    using S = typename Bk::memory_space;
    for (std::size_t k = 0; k < parts_.size(); ++k) {
      const auto& p = parts_[k];
      const auto& a = s_->adapters[p.adapter];
      auto& t = tensors_[k];
      const svd_adapter_views<float, S> views{
          make_matrix_view<S>(t.A.data(), a.r, p.in_count),
          make_vector_view<S>(t.E.data(), a.r),
          make_matrix_view<S>(t.B_.data(), p.out_count, a.r),
          make_matrix_view<S>(static_cast<const float*>(t.gA.data()), a.r, p.in_count),
          make_vector_view<S>(static_cast<const float*>(t.gE.data()), a.r),
          make_matrix_view<S>(static_cast<const float*>(t.gB.data()), p.out_count, a.r)};
      if (p.whole) {
        alloc.add_adapter(a.name, views);
      } else {
        if constexpr (Allocator::distributed)
          alloc.add_adapter(a.name, views, adapter_shard{a.in, a.out, p.in_offset, p.out_offset, p.counts_lambda});
      }
    }
  }

  /// Steps [first, first + count) of the scenario (to its end by default), each recorded after step(t).
  template <class Allocator>
  run_record run(Allocator& alloc, std::size_t first = 0, std::size_t count = static_cast<std::size_t>(-1)) {
    run_record out;
    const std::size_t end = count > s_->steps.size() - first ? s_->steps.size() : first + count;
    for (std::size_t i = first; i < end; ++i) {
      const std::int64_t t = s_->steps[i];
      load(t);
      const step_report rep = alloc.step(t);
      step_record r;
      r.step = t;
      r.phase = rep.phase;
      r.budget = rep.budget;
      r.masked = rep.masked;
      if (rep.threshold) r.threshold = std::bit_cast<std::uint32_t>(*rep.threshold);
      for (std::size_t k = 0; k < parts_.size(); ++k) r.lambda[s_->adapters[parts_[k].adapter].name] = lambda(k);
      for (const auto& name : alloc.global_adapter_names()) {
        r.scores[name] = alloc.triplet_scores(name);
        r.pattern[name] = alloc.rank_pattern(name);
      }
      out.push_back(std::move(r));
    }
    return out;
  }

  /// Writes step t's values into every part.
  void load(std::int64_t t) {
    for (std::size_t k = 0; k < parts_.size(); ++k)
      load_part(backend_, s_->adapters[parts_[k].adapter], parts_[k], s_->values(t, parts_[k].adapter), tensors_[k]);
  }

  /// λ of part k as the backend holds it.
  std::vector<float> lambda(std::size_t k) {
    std::vector<float> v(s_->adapters[parts_[k].adapter].r);
    backend_.copy_to_host(tensors_[k].E.data(), v.size(), v.data());
    return v;
  }

  /// Writes value v at element i of part k's gradient of lora_B (or of lora_A when it has no rows of B).
  void poke_gradient(std::size_t k, std::size_t i, float v) {
    auto& g = parts_[k].out_count > 0 ? tensors_[k].gB : tensors_[k].gA;
    backend_.copy_from_host(&v, 1, g.data() + i);
  }

  const std::vector<rank_part>& parts() const noexcept { return parts_; }

private:
  const scenario* s_;
  std::vector<rank_part> parts_;
  Bk backend_;
  std::vector<part_tensors<Bk>> tensors_;
};

/// The single process holding every adapter of the scenario, whole.
template <Backend Bk, ImportanceMetric M = sensitivity_uncertainty>
run_record run_single(const scenario& s, Bk backend = Bk{}) {
  rank_allocator<Bk, M> alloc(s.config, backend);
  std::vector<rank_part> parts;
  for (std::size_t k = 0; k < s.adapters.size(); ++k) parts.push_back({k, 0, s.adapters[k].in, 0, s.adapters[k].out, true, true});
  rank_tensors<Bk> tensors(s, parts, backend);
  tensors.register_with(alloc);
  return tensors.run(alloc);
}

template <Backend Bk, Communicator C, ImportanceMetric M = sensitivity_uncertainty>
using distributed_allocator = rank_allocator<Bk, M, cubic_schedule, float, C>;

/// One rank's run of a scenario split as `kind` says.
template <Backend Bk, ImportanceMetric M = sensitivity_uncertainty, Communicator C>
run_record run_rank(const scenario& s, layout_kind kind, C comm, distributed_options options = {}, Bk backend = Bk{}) {
  rank_tensors<Bk> tensors(s, parts_of(s, kind, comm.rank(), comm.size()), backend);
  const ownership mode = kind == layout_kind::replicated ? ownership::replicated : ownership::partitioned;
  distributed_allocator<Bk, C, M> alloc(s.config, comm, mode, options, backend);
  tensors.register_with(alloc);
  return tensors.run(alloc);
}

inline std::string floats_text(const std::vector<float>& v) {
  std::ostringstream o;
  o.precision(9);
  for (std::size_t i = 0; i < v.size(); ++i) o << (i ? " " : "") << v[i];
  return o.str();
}

/// How closely a rank's scores must match the reference: bit for bit, or (per_triplet sums) within a relative
/// tolerance.
struct score_match {
  bool exact = true;
  double rtol = 0.0;
};

/// The first difference between a rank's record and the reference's ("" when they agree): phases, budgets, masked
/// flags and thresholds exactly (the threshold to `scores.rtol` when not exact), λ after every step bit for bit,
/// patterns exactly, scores as `scores` says.
inline std::string first_difference(const run_record& got, const run_record& want, score_match scores = {}) {
  if (got.size() != want.size())
    return std::to_string(got.size()) + " steps recorded, the reference " + std::to_string(want.size());
  auto close = [&](float a, float b) {
    return scores.exact ? std::bit_cast<std::uint32_t>(a) == std::bit_cast<std::uint32_t>(b)
                        : std::fabs(double(a) - double(b)) <= scores.rtol * std::max(std::fabs(double(a)), std::fabs(double(b)));
  };
  for (std::size_t i = 0; i < got.size(); ++i) {
    const auto& g = got[i];
    const auto& w = want[i];
    const std::string at = "step " + std::to_string(w.step) + ": ";
    if (g.step != w.step || g.phase != w.phase || g.budget != w.budget || g.masked != w.masked)
      return at + "step/phase/budget/masked " + std::to_string(g.step) + "/" + phase_name(g.phase) + "/" +
             std::to_string(g.budget) + "/" + (g.masked ? "1" : "0") + " vs " + std::to_string(w.step) + "/" +
             phase_name(w.phase) + "/" + std::to_string(w.budget) + "/" + (w.masked ? "1" : "0");
    if (g.threshold.has_value() != w.threshold.has_value() ||
        (g.threshold && !close(std::bit_cast<float>(*g.threshold), std::bit_cast<float>(*w.threshold))))
      return at + "threshold " + (g.threshold ? std::to_string(std::bit_cast<float>(*g.threshold)) : "none") + " vs " +
             (w.threshold ? std::to_string(std::bit_cast<float>(*w.threshold)) : "none");
    for (const auto& [name, lambda] : g.lambda) {
      const auto it = w.lambda.find(name);
      if (it == w.lambda.end()) return at + "adapter '" + name + "' is not in the reference";
      for (std::size_t j = 0; j < lambda.size(); ++j)
        if (std::bit_cast<std::uint32_t>(lambda[j]) != std::bit_cast<std::uint32_t>(it->second[j]))
          return at + "λ of '" + name + "' after the step: " + floats_text(lambda) + " vs " + floats_text(it->second);
    }
    if (g.pattern.size() != w.pattern.size())
      return at + std::to_string(g.pattern.size()) + " adapters in the pattern, the reference " +
             std::to_string(w.pattern.size());
    for (const auto& [name, pattern] : w.pattern) {
      const auto it = g.pattern.find(name);
      if (it == g.pattern.end()) return at + "adapter '" + name + "' has no pattern";
      if (it->second != pattern) return at + "the rank pattern of '" + name + "' differs";
      const auto& gs = g.scores.at(name);
      const auto& ws = w.scores.at(name);
      if (gs.size() != ws.size()) return at + "scores of '" + name + "': " + floats_text(gs) + " vs " + floats_text(ws);
      for (std::size_t j = 0; j < gs.size(); ++j)
        if (!close(gs[j], ws[j]))
          return at + "scores of '" + name + "': " + floats_text(gs) + " vs " + floats_text(ws);
    }
  }
  return "";
}

/// Whether a record has masked something (so that a comparison of it is not trivial).
inline bool prunes(const run_record& r) {
  for (const auto& s : r)
    for (const auto& [name, p] : s.pattern)
      if (std::find(p.begin(), p.end(), false) != p.end()) return true;
  return false;
}

}  // namespace adalora::testing::distributed
