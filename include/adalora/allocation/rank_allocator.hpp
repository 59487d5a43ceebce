// The AdaLoRA rank allocator (SPEC §3–5): importance, global budget, threshold, in-place masks, rank pattern.
#pragma once

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "adalora/adapters/svd_adapter_views.hpp"
#include "adalora/allocation/allocation_phase.hpp"
#include "adalora/allocation/allocator_kernels.hpp"
#include "adalora/allocation/allocator_state.hpp"
#include "adalora/allocation/state_policy.hpp"
#include "adalora/allocation/step_plan.hpp"
#include "adalora/backends/backend.hpp"
#include "adalora/core/bfloat16.hpp"
#include "adalora/core/checked_size.hpp"
#include "adalora/core/config.hpp"
#include "adalora/core/error.hpp"
#include "adalora/core/usage_guard.hpp"
#include "adalora/distributed/communicator.hpp"
#include "adalora/distributed/ownership.hpp"
#include "adalora/distributed/score_exchange.hpp"
#include "adalora/distributed/self_communicator.hpp"
#include "adalora/distributed/shard_plan.hpp"
#include "adalora/distributed/step_agreement.hpp"
#include "adalora/importance/importance_metric.hpp"
#include "adalora/importance/sensitivity_uncertainty.hpp"
#include "adalora/schedules/budget_schedule.hpp"
#include "adalora/schedules/cubic.hpp"

namespace adalora {

namespace detail {
template <class M>
M make_metric(const adalora_config& c) {
  if constexpr (std::constructible_from<M, const adalora_config&>)
    return M(c);
  else
    return M{};
}

template <class T>
std::string value_type_name() {
  if constexpr (std::is_same_v<T, float>)
    return "float32";
  else if constexpr (std::is_same_v<T, bfloat16>)
    return "bfloat16";
  else
    return std::to_string(sizeof(T)) + "-byte values";
}

/// What a distributed allocator adds to a single-process one (nothing for a single-process communicator).
template <Backend B, Communicator C, bool Distributed = !single_process_communicator<C>>
struct collective_state {};

template <Backend B, Communicator C>
struct collective_state<B, C, true> {
  collective_state(C c, ownership m, distributed_options o) : comm(std::move(c)), mode(m), options(o) {}
  C comm;
  ownership mode = ownership::replicated;
  distributed_options options;
  bool agreed = false;                  // the ranks' descriptions were exchanged and checked (first step)
  std::int64_t union_b0 = 0;            // partitioned: over every rank's adapters, once agreed
  std::int64_t union_adapters = 0;
  std::optional<union_layout> layout;   // partitioned, once agreed
  std::optional<score_exchange<B, C>> exchange;  // partitioned, once prepared
};
}  // namespace detail

/// Allocates a global rank budget over registered SVD adapters, exactly as PEFT's RankAllocator does.
///
/// The trainer owns every tensor: it registers views of each adapter's P, Λ, Q and their gradients, then calls
/// `step(t)` once per optimizer step, after the optimizer update and before the gradients are zeroed (SPEC §6).
/// Importance state (the metric's per-element EMAs) lives in the backend's memory, allocated at the first step and
/// released when the final pattern is frozen. How it is stored is the state policy P (state_policy.hpp): by default
/// in place, one float32 arena (state_count floats per element: 8 B per adapter parameter for the default metric),
/// overwritten by the update pass once a read-only check of θ and g has cleared the step; double_buffered_state
/// keeps two arenas and drops the new one when an input was not finite (one pass, twice the memory);
/// in_place_bf16_state stores bfloat16 values (4 B per parameter, not PEFT-exact).
///
/// A step runs a fixed number of backend calls whatever the number of adapters: one pass over all tiles of all
/// adapters (update, finiteness count, and on mask steps the score sums), one count, and on mask steps one pass for
/// the triplet scores and one count of those that are not finite, one selection and one pass each for the pattern
/// and the masks (see step_plan.hpp).
///
/// Errors: every precondition of a step (steps increasing, gradients present, parameters and gradients finite,
/// importance available for the forced mask) is checked before anything changes; a failed step leaves the
/// allocator and the adapters exactly as they were. Sizes are checked for overflow at registration.
///
/// Threads: a rank_allocator is used by one thread at a time (as a std::vector is): its calls must not overlap, and
/// nothing may write the registered tensors during step(). The reading calls (save_state, ranks, rank_pattern,
/// triplet_scores and the small getters) may overlap each other. Overlapping calls are detected, not silently raced:
/// add_adapter, rebind, step and restore_state throw usage_error when any other call is running, and the bulk
/// reading calls when one of those is (detail::usage_guard; the losing call changes nothing). Separate allocators
/// share nothing and may run in parallel; the backend's own threads (Thrust's OpenMP system) are inside a call.
///
/// Many processes, one budget: with a Communicator other than self_communicator (the default) the allocator runs on
/// every rank of a group and all of them reach the budget, threshold and masks of one process holding the union of
/// their adapters (see distributed/ownership.hpp and README, "Many processes, one budget"). Every rank calls every
/// step with the same t; a rank's failure makes every rank throw the same error before anything changes.
template <Backend B, ImportanceMetric M = sensitivity_uncertainty, BudgetSchedule S = cubic_schedule, class T = float,
          Communicator C = self_communicator, StatePolicy P = in_place_state>
class rank_allocator {
public:
  using backend_type = B;
  using metric_type = M;
  using schedule_type = S;
  using value_type = T;
  using communicator_type = C;
  using state_policy = P;
  /// One value of the importance state (float or bfloat16).
  using state_value_type = typename P::value_type;
  using memory_space = typename B::memory_space;
  using views_type = svd_adapter_views<T, memory_space>;
  /// Whether this allocator runs collectives (its communicator is not a single process).
  static constexpr bool distributed = !single_process_communicator<C>;

  /// Validates the config (config_error) and builds the metric from it.
  explicit rank_allocator(const adalora_config& config, B backend = B{}) requires(!distributed)
      : rank_allocator(config, detail::make_metric<M>(config), S{}, std::move(backend)) {}

  rank_allocator(const adalora_config& config, M metric, S schedule = S{}, B backend = B{}) requires(!distributed)
      : config_(config), backend_(std::move(backend)), metric_(std::move(metric)), schedule_(std::move(schedule)) {
    config_.validate();
  }

  /// A distributed allocator: this rank of `comm`, with the adapters owned as `mode` says. Every rank constructs
  /// its allocator with the same config, ownership and options (checked at the first step).
  rank_allocator(const adalora_config& config, C comm, ownership mode, distributed_options options = {},
                 B backend = B{}) requires distributed
      : rank_allocator(config, detail::make_metric<M>(config), S{}, std::move(backend), std::move(comm), mode,
                       options) {}

  rank_allocator(const adalora_config& config, M metric, S schedule, B backend, C comm, ownership mode,
                 distributed_options options = {}) requires distributed
      : config_(config),
        backend_(std::move(backend)),
        metric_(std::move(metric)),
        schedule_(std::move(schedule)),
        dist_(std::move(comm), mode, options) {
    config_.validate();
    if (mode != ownership::replicated && mode != ownership::partitioned)
      throw usage_error("rank_allocator: unknown ownership " + std::to_string(static_cast<int>(mode)));
    if (options.sums != shard_sums::exact && options.sums != shard_sums::per_triplet)
      throw usage_error("rank_allocator: unknown distributed_options::sums " +
                        std::to_string(static_cast<int>(options.sums)));
  }

  // ---- registration ------------------------------------------------------------------------------------------

  /// Registers an adapter under a unique name; returns its index. Only before the first step. Names are looked up
  /// in an index, so registering n adapters takes O(n log n).
  std::size_t add_adapter(std::string name, const views_type& views) {
    const detail::usage_guard::writing busy(guard_, "add_adapter", "rank_allocator");
    check_registration(name);
    views.check_shapes(name);
    const detail::part_descriptor part{name, views.rank(), views.in_features(), views.out_features(), 0,
                                       views.in_features(), 0, views.out_features(), true};
    return register_adapter(std::move(name), views, part);
  }

  /// Registers this rank's part of an adapter that several ranks hold slices of (ownership::partitioned only):
  /// `views` hold lora_A's columns [in_offset, in_offset + in_count), λ, and lora_B's rows [out_offset,
  /// out_offset + out_count) of the global adapter `shard` describes (see adapter_shard). Only before the first step.
  std::size_t add_adapter(std::string name, const views_type& views, const adapter_shard& shard) requires distributed {
    const detail::usage_guard::writing busy(guard_, "add_adapter", "rank_allocator");
    if (dist_.mode != ownership::partitioned)
      throw usage_error("add_adapter('" + name + "', …, adapter_shard): slices of an adapter need "
                        "ownership::partitioned; with ownership::replicated every rank registers every adapter whole");
    check_registration(name);
    const detail::part_descriptor part = detail::part_of(name, views, shard);
    views.check_extents(name);
    return register_adapter(std::move(name), views, part);
  }

  /// Points a registered adapter at new tensors of the same shapes (e.g. gradients that exist only after the
  /// first backward pass, or tensors the trainer reallocated). Allowed at any time.
  void rebind(std::string_view name, const views_type& views) {
    const detail::usage_guard::writing busy(guard_, "rebind", "rank_allocator");
    adapter_entry& e = entry(name);
    if (e.part.whole_q() && e.part.whole_p()) {
      views.check_shapes(e.name);
    } else {
      (void)detail::part_of(e.name, views, {e.part.in, e.part.out, e.part.in_offset, e.part.out_offset, e.part.counts_lambda});
      views.check_extents(e.name);
    }
    if (views.lora_A.extents != e.views.lora_A.extents || views.lora_B.extents != e.views.lora_B.extents)
      throw shape_error("rebind('" + e.name + "'): shapes changed from lora_A " + extents_string(e.views.lora_A) +
                        ", lora_B " + extents_string(e.views.lora_B) + " to " + extents_string(views.lora_A) + ", " +
                        extents_string(views.lora_B) + "; an adapter keeps its shape for the whole run");
    e.views = views;
    if (prepared_) {
      const auto k = static_cast<std::size_t>(&e - adapters_.data());
      const auto x = detail::plan_tensors_of(views, e.offset);
      std::copy(x.begin(), x.end(), plan_.tensors.begin() + static_cast<std::ptrdiff_t>(3 * k));
      tensors_dirty_ = true;
    }
  }

  // ---- the step ----------------------------------------------------------------------------------------------

  /// Which phase step t is in, given whether the final pattern has already been frozen.
  allocation_phase phase_of(std::int64_t t) const noexcept {
    if (t >= config_.final_step()) return frozen_ ? allocation_phase::final_pattern : allocation_phase::final_force;
    return t <= config_.tinit ? allocation_phase::warmup : allocation_phase::budgeting;
  }

  /// Runs the allocator for optimizer step t (SPEC §4–6). Steps must strictly increase; they may skip. A run
  /// that skips T − tfinal gets its forced mask at the first step past it (from the importance gathered so far).
  ///
  /// Distributed: every rank calls step(t) with the same t. The first step exchanges and checks the ranks'
  /// configs and adapters; every step before the final pattern then agrees on its outcome (one all-gather of 32
  /// bytes per rank) before anything changes, and partitioned mask steps all-gather the ranks' score sums.
  step_report step(std::int64_t t) {
    const detail::usage_guard::writing busy(guard_, "step", "rank_allocator");
    if constexpr (distributed) {
      if (!dist_.agreed) agree_on_setup(t);
      // the frozen pattern is applied locally: the ranks reached it together, and nothing there can differ
      if (phase_of(t) != allocation_phase::final_pattern) {
        pending_step p;
        detail::step_outcome outcome{t, nullptr, 0};
        try {
          p = begin_step(t);
          outcome.scores_hash = p.scores_hash;
        } catch (...) {
          outcome.failure = std::current_exception();
        }
        detail::agree_on_step(dist_.comm, outcome, check_replicas());
        return finish_step(p);
      }
    }
    pending_step p = begin_step(t);
    return finish_step(p);
  }

  // ---- queries -----------------------------------------------------------------------------------------------

  const adalora_config& config() const noexcept { return config_; }
  const B& backend() const noexcept { return backend_; }
  const M& metric() const noexcept { return metric_; }
  std::size_t adapter_count() const noexcept { return adapters_.size(); }
  const std::string& adapter_name(std::size_t i) const { return adapters_.at(i).name; }
  std::size_t adapter_index(std::string_view name) const {
    return static_cast<std::size_t>(&entry(name) - adapters_.data());
  }
  /// b0: the sum of the registered adapters' ranks (partitioned: over every rank, once the first step agreed).
  std::int64_t initial_budget() const noexcept {
    if constexpr (distributed)
      if (partitioned() && dist_.agreed) return dist_.union_b0;
    return initial_budget_;
  }
  /// bT: target_r × number of adapters (partitioned: of every rank, once the first step agreed); the largest int64
  /// when that product overflows, which step() refuses.
  std::int64_t target_budget() const noexcept {
    return checked_target_budget().value_or(std::numeric_limits<std::int64_t>::max());
  }
  /// The budget at the last step (b0 before the first step).
  std::int64_t budget() const noexcept { return last_step_ ? budget_ : initial_budget(); }
  /// The threshold of the latest selection that pruned something.
  std::optional<float> threshold() const noexcept { return threshold_; }
  std::optional<std::int64_t> last_step() const noexcept { return last_step_; }
  bool pattern_frozen() const noexcept { return frozen_; }
  /// True while the metric's per-element state is held (from the first step until the final pattern is frozen).
  bool importance_live() const noexcept { return state_live_; }
  /// Bytes of importance state per adapter parameter under this allocator's state policy (16, 8 or 4 for the default
  /// metric), whether or not it is held now.
  static constexpr std::size_t state_bytes_per_parameter = adalora::state_bytes_per_parameter<P>(M::state_count);
  /// Bytes of importance state held now (0 before the first step and after the final pattern is frozen).
  std::size_t state_bytes() const noexcept { return (state_.size() + next_state_.size()) * sizeof(stored_type); }

  /// Per adapter, the rank pattern of the latest selection: keep[i] = (S_i > threshold). All true before one.
  /// Partitioned: any adapter of any rank, once the first step agreed.
  std::vector<bool> rank_pattern(std::string_view name) const {
    const detail::usage_guard::reading busy(guard_, "rank_pattern", "rank_allocator");
    const auto [offset, r] = score_slot(name);
    std::vector<bool> p(r, true);
    if (!keep_host_.empty())
      for (std::size_t i = 0; i < p.size(); ++i) p[i] = keep_host_[offset + i] != 0;
    return p;
  }
  /// Every adapter's name, in the order of the scores: this rank's registration order, or partitioned (once the
  /// first step agreed) the union of every rank's adapters, the same on every rank.
  std::vector<std::string> global_adapter_names() const {
    std::vector<std::string> names;
    if constexpr (distributed)
      if (partitioned() && dist_.layout) {
        for (const auto& a : dist_.layout->adapters) names.push_back(a.name);
        return names;
      }
    for (const auto& e : adapters_) names.push_back(e.name);
    return names;
  }
  /// The rank of every adapter of global_adapter_names(), in that order.
  std::vector<std::int64_t> global_ranks() const {
    const detail::usage_guard::reading busy(guard_, "global_ranks", "rank_allocator");
    std::vector<std::int64_t> r;
    for (const auto& name : global_adapter_names()) r.push_back(kept_count(score_slot(name)));
    return r;
  }
  /// The communicator (distributed allocators).
  const C& communicator() const noexcept requires distributed { return dist_.comm; }
  /// Bytes each rank contributes to a mask step's all-gather of score sums (partitioned, once the first step
  /// agreed; 0 otherwise).
  std::size_t exchange_bytes_per_rank() const noexcept {
    if constexpr (distributed)
      if (partitioned() && dist_.layout) return dist_.layout->bytes_per_rank();
    return 0;
  }
  /// The rank of each adapter under the latest selection, in registration order.
  std::vector<std::int64_t> ranks() const {
    const detail::usage_guard::reading busy(guard_, "ranks", "rank_allocator");
    std::vector<std::int64_t> r;
    r.reserve(adapters_.size());
    for (const auto& e : adapters_) r.push_back(kept_count(score_slot(e.name)));
    return r;
  }
  /// The triplet scores of the latest selection (empty before one).
  std::vector<float> triplet_scores(std::string_view name) const {
    const detail::usage_guard::reading busy(guard_, "triplet_scores", "rank_allocator");
    const auto [offset, r] = score_slot(name);
    if (scores_host_.empty()) return {};
    const auto first = scores_host_.begin() + static_cast<std::ptrdiff_t>(offset);
    return std::vector<float>(first, first + static_cast<std::ptrdiff_t>(r));
  }

  // ---- checkpoint and resume -------------------------------------------------------------------------------

  /// A host copy of the whole state (see io/allocator_checkpoint.hpp to store it).
  allocator_state save_state() const {
    const detail::usage_guard::reading busy(guard_, "save_state", "rank_allocator");
    allocator_state s;
    s.config = config_;
    s.metric = M::name;
    s.schedule = S::name;
    s.state_policy = P::name;
    s.state_type = state_value_name<P>();
    for (const auto& e : adapters_)
      s.adapters.push_back({e.name, e.views.rank(), e.views.in_features(), e.views.out_features()});
    s.last_step = last_step_;
    s.budget = budget_;
    s.threshold = threshold_;
    s.frozen = frozen_;
    s.importance_live = state_live_;
    if (state_live_) {
      const std::size_t n = M::state_count * total_elements_;
      if constexpr (std::same_as<stored_type, float>) {
        s.importance.resize(n);
        backend_.copy_to_host(state_.data(), n, s.importance.data());
      } else {
        std::vector<stored_type> stored(n);
        backend_.copy_to_host(state_.data(), n, stored.data());
        s.importance.resize(n);
        for (std::size_t i = 0; i < n; ++i) s.importance[i] = detail::from_stored(stored[i]);  // widened exactly
      }
    }
    s.keep = keep_host_;
    s.scores = scores_host_;
    if constexpr (distributed) {
      allocator_state::distributed_info d;
      d.rank = dist_.comm.rank();
      d.ranks = dist_.comm.size();
      d.ownership = detail::ownership_name(dist_.mode);
      d.sums = detail::shard_sums_name(dist_.options.sums);
      for (const auto& e : adapters_)
        d.parts.push_back({e.part.in, e.part.out, e.part.in_offset, e.part.out_offset, e.part.counts_lambda});
      if (partitioned() && dist_.layout)
        for (const auto& a : dist_.layout->adapters) d.global_adapters.push_back({a.name, a.r, a.in, a.out});
      else if (partitioned())
        d.global_adapters = restored_union_;
      else
        d.global_adapters = s.adapters;
      s.distributed = std::move(d);
    }
    return s;
  }

  /// Restores a state saved from an allocator with the same config, metric, schedule and adapters (names and
  /// shapes, in registration order). Throws, before changing anything: usage_error naming the first difference
  /// (every config field is compared) or what makes the state one no allocator could have saved
  /// (find_allocator_state_problem), non_finite_error for a NaN or infinite importance, score or threshold.
  void restore_state(const allocator_state& s) {
    const detail::usage_guard::writing busy(guard_, "restore_state", "rank_allocator");
    const std::string where = "restore_state: the checkpoint does not match this allocator: ";
    if (const std::string d = config_difference(s.config, config_); !d.empty())
      throw usage_error(where + "the configs differ (" + d + ")");
    if (s.metric != M::name) throw usage_error(where + "metric '" + s.metric + "' vs '" + M::name + "'");
    if (s.schedule != S::name) throw usage_error(where + "schedule '" + s.schedule + "' vs '" + S::name + "'");
    if (s.state_type != state_value_name<P>())
      throw usage_error(where + "its importance state is stored as " + s.state_type + " (state policy '" +
                        (s.state_policy.empty() ? std::string("not recorded") : s.state_policy) +
                        "') and this allocator stores " + state_value_name<P>() + " (state policy '" + P::name +
                        "'); restore it into an allocator whose state policy has the same value type");
    check_distributed_checkpoint(s, where);
    if (s.adapters.size() != adapters_.size())
      throw usage_error(where + std::to_string(s.adapters.size()) + " adapters vs " + std::to_string(adapters_.size()) +
                        " registered");
    for (std::size_t i = 0; i < adapters_.size(); ++i) {
      const auto& e = adapters_[i];
      const allocator_state::adapter_shape mine{e.name, e.views.rank(), e.views.in_features(), e.views.out_features()};
      if (!(s.adapters[i] == mine))
        throw usage_error(where + "adapter " + std::to_string(i) + " is '" + s.adapters[i].name + "' (r " +
                          std::to_string(s.adapters[i].r) + ", in " + std::to_string(s.adapters[i].in) + ", out " +
                          std::to_string(s.adapters[i].out) + ") in the checkpoint but '" + e.name + "' (r " +
                          std::to_string(mine.r) + ", in " + std::to_string(mine.in) + ", out " +
                          std::to_string(mine.out) + ") here");
    }
    if (const auto p = find_allocator_state_problem(s)) {
      if (p->non_finite) throw non_finite_error("restore_state: " + p->what + "; the checkpoint is corrupt");
      throw usage_error("restore_state: no allocator saves such a state: " + p->what);
    }
    // partitioned: the pattern and scores run over the union of every rank's adapters
    std::size_t b0 = static_cast<std::size_t>(initial_budget_);
    if (partitioned()) {
      b0 = 0;
      for (const auto& a : s.distributed->global_adapters) b0 += a.r;
    }
    if ((s.importance_live && s.importance.size() != M::state_count * total_elements_) ||
        (!s.keep.empty() && s.keep.size() != b0) || (!s.scores.empty() && s.scores.size() != b0) ||
        (s.frozen && s.keep.empty()))
      throw usage_error(where + "its importance, pattern or score arrays have the wrong sizes");
    std::vector<stored_type> stored;
    if (s.importance_live) stored = stored_values(s.importance, where);
    // all checks passed: replace the state
    prepare();
    if (s.importance_live) {
      state_ = backend_.template allocate<stored_type>(stored.size());
      backend_.copy_from_host(stored.data(), stored.size(), state_.data());
    } else {
      state_ = state_buffer{};
    }
    next_state_ = state_buffer{};
    state_live_ = s.importance_live;
    trial_pending_ = true;  // an in-place step has no bound on the restored state yet
    keep_host_ = s.keep;
    scores_host_ = s.scores;
    last_step_ = s.last_step;
    budget_ = s.budget;
    threshold_ = s.threshold;
    frozen_ = s.frozen;
    if constexpr (distributed) {
      // the ranks agree again at the next step (that all of them resumed from the same step), and the union's
      // pattern is mapped onto this rank's singular values there
      restored_union_ = partitioned() ? s.distributed->global_adapters : std::vector<allocator_state::adapter_shape>{};
      dist_.agreed = false;
      dist_.layout.reset();
      dist_.exchange.reset();
      prepared_ = false;
    } else {
      upload_keep();
    }
  }

private:
  // How the arena holds a state value (bfloat16 as its bits: detail::state_storage).
  using stored_type = detail::state_storage_t<state_value_type>;
  using state_buffer = buffer_t<B, stored_type>;

  // A checkpoint's importance as this policy stores it: bfloat16 values must be exactly that (they were widened).
  static std::vector<stored_type> stored_values(const std::vector<float>& v, const std::string& where) {
    if constexpr (std::same_as<stored_type, float>) {
      return v;
    } else {
      std::vector<stored_type> out(v.size());
      for (std::size_t i = 0; i < v.size(); ++i) out[i] = detail::to_stored<state_value_type>(v[i]);
      for (std::size_t i = 0; i < v.size(); ++i)
        if (detail::float_to_bits(detail::from_stored(out[i])) != detail::float_to_bits(v[i]))
          throw usage_error(where + "importance value " + std::to_string(i) + " (" + std::to_string(v[i]) +
                            ") is not a bfloat16 number, so it was not saved by a bfloat16 state policy");
      return out;
    }
  }

  // A checkpoint of a distributed run restores on a rank of the same ownership: replicated from any rank of any
  // count (each holds the whole state), partitioned from this rank's own file of a run on as many ranks with the
  // same parts. A single process restores a replicated rank's checkpoint, not a partitioned one.
  void check_distributed_checkpoint(const allocator_state& s, const std::string& where) const {
    const auto& d = s.distributed;
    const std::string reshard = "; restore each rank from the checkpoint its own rank saved in a run on as many ranks, "
                                "or cut every rank's checkpoint into this allocator's parts with "
                                "reshard_allocator_states (distributed/reshard.hpp)";
    if constexpr (distributed) {
      const bool part = partitioned();
      if (!d) {
        if (part)
          throw usage_error(where + "it was saved by one process, and this is rank " +
                            std::to_string(dist_.comm.rank()) + " of a partitioned run" + reshard);
        return;
      }
      if (d->ownership != detail::ownership_name(dist_.mode))
        throw usage_error(where + "it was saved with ownership::" + d->ownership + ", this allocator runs " +
                          detail::ownership_name(dist_.mode));
      if (!part) return;
      if (d->ranks != dist_.comm.size() || d->rank != dist_.comm.rank())
        throw usage_error(where + "it was saved by rank " + std::to_string(d->rank) + " of " +
                          std::to_string(d->ranks) + " and this is rank " + std::to_string(dist_.comm.rank()) + " of " +
                          std::to_string(dist_.comm.size()) + reshard);
      if (d->sums != detail::shard_sums_name(dist_.options.sums))
        throw usage_error(where + "it was saved with shard_sums::" + d->sums + ", this allocator sums " +
                          detail::shard_sums_name(dist_.options.sums));
      for (std::size_t i = 0; i < adapters_.size(); ++i) {
        const auto& p = adapters_[i].part;
        const allocator_state::distributed_info::part mine{p.in, p.out, p.in_offset, p.out_offset, p.counts_lambda};
        if (i >= d->parts.size() || !(d->parts[i] == mine))
          throw usage_error(where + "adapter '" + adapters_[i].name + "' is another part of its adapter here" + reshard);
      }
    } else {
      if (d && d->ownership == "partitioned" && d->ranks > 1)
        throw usage_error(where + "it is rank " + std::to_string(d->rank) + "'s part of a partitioned run on " +
                          std::to_string(d->ranks) + " ranks" + reshard);
    }
  }

  // keep_ (this rank's singular values) from the host copy of the latest pattern.
  void upload_keep() {
    const auto b0 = static_cast<std::size_t>(initial_budget_);
    if (keep_host_.empty() || !prepared_) return;
    if (!partitioned()) {
      if (keep_host_.size() == b0) backend_.copy_from_host(keep_host_.data(), b0, keep_.data());
      return;
    }
    if constexpr (distributed) {
      if (!dist_.layout || keep_host_.size() != dist_.layout->b0()) return;
      std::vector<std::uint8_t> local(b0);
      for (std::size_t i = 0; i < b0; ++i) local[i] = keep_host_[dist_.layout->local_index[i]];
      backend_.copy_from_host(local.data(), b0, keep_.data());
    }
  }

  struct adapter_entry {
    std::string name;
    views_type views;
    detail::part_descriptor part;  // what this rank holds of the adapter, in global coordinates (whole unless sharded)
    std::size_t offset = 0;        // of lora_A's block in the element arena; lora_E, lora_B follow
    std::size_t score_offset = 0;  // of this adapter's singular values among all b0
    std::size_t offset_E() const noexcept { return offset + views.rank() * views.in_features(); }
    std::size_t offset_B() const noexcept { return offset_E() + views.rank(); }
  };

  const adapter_entry* find(std::string_view name) const noexcept {
    const auto it = index_.find(name);
    return it == index_.end() ? nullptr : &adapters_[it->second];
  }

  // The checks of add_adapter on the name and the allocator's progress.
  void check_registration(const std::string& name) const {
    if (last_step_)
      throw usage_error("add_adapter('" + name + "'): the allocator has already run step " +
                        std::to_string(*last_step_) + "; register every adapter before the first step");
    if (name.empty()) throw usage_error("add_adapter: the adapter name is empty");
    if (index_.find(name) != index_.end())
      throw usage_error("add_adapter: an adapter named '" + name + "' is already registered");
  }

  // Registers checked views as this rank's part `part`: the sizes after it are checked for overflow (what the
  // step's buffers and indices need: the element arena, double-buffered, in floats; b0 in int64; three uint32 tensor
  // indices per adapter; shape_error naming the quantity), then the entry goes in, indexed by name.
  std::size_t register_adapter(std::string name, const views_type& views, const detail::part_descriptor& part) {
    const std::string at = "add_adapter('" + name + "'): ";
    const std::size_t r = views.rank();
    const auto in_1 = checked_add(part.in_count, 1);
    const auto width = in_1 ? checked_add(*in_1, part.out_count) : std::nullopt;
    const auto elements = width ? checked_mul(r, *width) : std::nullopt;
    const std::size_t total = size_or_throw<shape_error>(
        elements ? checked_add(total_elements_, *elements) : std::nullopt,
        at + "the parameter count of all adapters, sum of r × (in + 1 + out)");
    const auto arena = checked_product({2, M::state_count, total});
    if (!arena || *arena > max_elements_of<float>)
      throw shape_error(at + "the importance state of all adapters, 2 × " + std::to_string(M::state_count) + " × " +
                        std::to_string(total) + " floats, is larger than one object can be");
    const std::int64_t b0 = size_or_throw<shape_error>(checked_add_i64(initial_budget_, static_cast<std::int64_t>(r)),
                                                       at + "the sum of the adapters' ranks (b0)");
    if (adapters_.size() >= std::numeric_limits<std::uint32_t>::max() / 3)
      throw shape_error(at + "more than " + std::to_string(std::numeric_limits<std::uint32_t>::max() / 3) +
                        " adapters; the step's plan indexes their tensors with 32-bit numbers");
    adapter_entry e;
    e.part = part;
    e.name = std::move(name);
    e.views = views;
    e.offset = total_elements_;
    e.score_offset = static_cast<std::size_t>(initial_budget_);
    const auto where = index_.emplace(e.name, adapters_.size()).first;
    try {
      adapters_.push_back(std::move(e));
    } catch (...) {
      index_.erase(where);
      throw;
    }
    total_elements_ = total;
    initial_budget_ = b0;
    prepared_ = false;
    return adapters_.size() - 1;
  }

  // How many of the singular values at `slot` (offset, count) the latest selection keeps (all before one).
  std::int64_t kept_count(std::pair<std::size_t, std::size_t> slot) const {
    if (keep_host_.empty()) return static_cast<std::int64_t>(slot.second);
    const auto first = keep_host_.begin() + static_cast<std::ptrdiff_t>(slot.first);
    return static_cast<std::int64_t>(
        std::count_if(first, first + static_cast<std::ptrdiff_t>(slot.second), [](std::uint8_t k) { return k != 0; }));
  }

  std::optional<std::int64_t> checked_target_budget() const noexcept {
    return checked_mul_i64(config_.target_r, static_cast<std::int64_t>(adapter_total()));
  }
  const adapter_entry& entry(std::string_view name) const {
    if (const adapter_entry* e = find(name)) return *e;
    throw usage_error("no adapter named '" + std::string(name) + "' is registered");
  }
  adapter_entry& entry(std::string_view name) { return const_cast<adapter_entry&>(std::as_const(*this).entry(name)); }

  // ---- distributed: the ranks' agreement ---------------------------------------------------------------------

  bool partitioned() const noexcept {
    if constexpr (distributed)
      return dist_.mode == ownership::partitioned;
    else
      return false;
  }
  bool check_replicas() const noexcept {
    if constexpr (distributed)
      return dist_.mode == ownership::replicated && dist_.options.check_replicas;
    else
      return false;
  }
  // The number of adapters the budget counts: this rank's, or partitioned (once agreed) the union's.
  std::size_t adapter_total() const noexcept {
    if constexpr (distributed)
      if (partitioned() && dist_.agreed) return static_cast<std::size_t>(dist_.union_adapters);
    return adapters_.size();
  }
  // Where an adapter's singular values are in the host copies of the scores and the pattern, and how many.
  std::pair<std::size_t, std::size_t> score_slot(std::string_view name) const {
    if constexpr (distributed)
      if (partitioned() && dist_.layout) {
        const auto it = dist_.layout->index.find(name);
        if (it == dist_.layout->index.end())
          throw usage_error("no rank registers an adapter named '" + std::string(name) + "'");
        const auto& a = dist_.layout->adapters[it->second];
        return {a.score_offset, a.r};
      }
    const adapter_entry& e = entry(name);
    return {e.score_offset, e.views.rank()};
  }

  // The first step of every rank (and the first after restore_state): the ranks exchange their descriptions and
  // check them against each other (the same error on every rank); partitioned, every rank lays out the union.
  void agree_on_setup(std::int64_t t) requires distributed {
    detail::rank_description mine;
    mine.size = dist_.comm.size();
    mine.config = config_;
    mine.metric = M::name;
    mine.schedule = S::name;
    mine.value_type = detail::value_type_name<T>();
    mine.mode = dist_.mode;
    mine.options = dist_.options;
    mine.step = t;
    mine.last_step = last_step_;
    mine.frozen = frozen_;
    for (const auto& e : adapters_) mine.parts.push_back(e.part);
    for (const auto& a : restored_union_) mine.restored_union.push_back({a.name, a.r, a.in, a.out, 0, 0, 0, 0, false});
    const auto all = detail::exchange_descriptions(dist_.comm, mine);
    detail::check_descriptions(all);
    if (partitioned()) {
      std::vector<std::vector<detail::part_descriptor>> parts;
      for (const auto& d : all) parts.push_back(d.parts);
      auto layout = detail::make_union_layout(parts, dist_.comm.rank(), dist_.options.sums);
      // a restored pattern over the union of the run that saved it, in this run's union order (the same on every
      // rank: check_descriptions compared the ranks' restored unions)
      std::vector<std::uint8_t> keep;
      std::vector<float> scores;
      if (!keep_host_.empty() || !scores_host_.empty()) {
        keep.resize(keep_host_.empty() ? 0 : layout.b0());
        scores.resize(scores_host_.empty() ? 0 : layout.b0());
        std::size_t from = 0, matched = 0;
        for (const auto& a : restored_union_) {
          const auto it = layout.index.find(a.name);
          if (it == layout.index.end() || layout.adapters[it->second].r != a.r)
            throw usage_error("distributed allocator, first step after restore_state: the checkpoints' adapter '" +
                              a.name + "' is not an adapter of this run (or has another rank); restore the run "
                              "with the adapters that saved it");
          const std::size_t to = layout.adapters[it->second].score_offset;
          for (std::size_t i = 0; i < a.r; ++i) {
            if (!keep.empty()) keep[to + i] = keep_host_[from + i];
            if (!scores.empty()) scores[to + i] = scores_host_[from + i];
          }
          from += a.r;
          ++matched;
        }
        if (matched != layout.adapters.size())
          throw usage_error("distributed allocator, first step after restore_state: this run has " +
                            std::to_string(layout.adapters.size()) + " adapters but its checkpoints " +
                            std::to_string(matched) + "; restore the run with the adapters that saved it");
      }
      dist_.layout = std::move(layout);
      if (!keep_host_.empty()) keep_host_ = std::move(keep);
      if (!scores_host_.empty()) scores_host_ = std::move(scores);
      restored_union_.clear();
      dist_.union_b0 = static_cast<std::int64_t>(dist_.layout->b0());
      dist_.union_adapters = static_cast<std::int64_t>(dist_.layout->adapters.size());
      dist_.exchange.reset();
      prepared_ = false;
    }
    dist_.agreed = true;
  }

  // ---- the step: a local part that changes nothing, then the commit ------------------------------------------

  // What the local part of a step leaves for its commit.
  struct pending_step {
    step_report rep;
    bool update = false;  // the commit updates the importance (double-buffered: already computed into the spare)
    bool mask = false;    // a selection follows
    bool scored = false;  // the score sums exist before the commit (in place, else the commit's pass leaves them)
    state_buffer fresh_state{}, fresh_next{};
    std::uint64_t scores_hash = 0;  // the replica check's
  };

  // Every check, the plan, the importance pass into the spare buffer (double-buffered) or the check that clears the
  // in-place update, and (unless partitioned) the triplet scores where they exist: nothing a failure would undo.
  pending_step begin_step(std::int64_t t) {
    validate_step(t);
    prepare();
    pending_step p;
    p.rep.step = t;
    p.rep.phase = phase_of(t);
    p.rep.budget = budget_at(t);
    if (p.rep.phase == allocation_phase::warmup || p.rep.phase == allocation_phase::budgeting) {
      p.update = true;
      p.mask = p.rep.phase == allocation_phase::budgeting && t % config_.deltaT == 0;
      update_importance(t, p);  // throws (changing nothing) if an input, the new importance or its score is not finite
    } else if (p.rep.phase == allocation_phase::final_force) {
      score_held_importance();
      p.mask = true;
      p.scored = true;
    }
    if (p.mask && p.scored && !partitioned()) {
      score_triplets(t);
      if (check_replicas()) {
        const auto b0 = static_cast<std::size_t>(initial_budget_);
        std::vector<float> scores(b0);
        backend_.copy_to_host(scores_.data(), b0, scores.data());
        p.scores_hash = detail::hash_floats(scores.data(), b0);
      }
    }
    return p;
  }

  // The rest of the step: partitioned mask steps exchange the score sums (a collective), then the new importance
  // is committed (in place: the update pass runs, and leaves the score sums where begin_step did not) and the
  // selection and masks are applied.
  step_report finish_step(pending_step& p) {
    if constexpr (distributed)
      if (p.mask && partitioned()) {
        dist_.exchange->exchange(backend_, dist_.comm, partial_.data(), lambda_scores_.data());
        // every rank holds the same union scores now: a non-finite one is refused on every rank alike
        check_triplets_finite("step(" + std::to_string(p.rep.step) + "): ", dist_.exchange->scores(),
                              dist_.layout->b0(), dist_.layout->adapters);
      }
    if (p.update) commit_importance(p);
    if (p.mask && !p.scored) score_triplets(p.rep.step);  // (every mask step is scored before the commit)
    step_report rep = p.rep;
    rep.importance_updated = p.update;
    if (p.mask) {
      rep.threshold = select_and_mask(rep.budget);
      rep.masked = true;
    }
    if (rep.phase == allocation_phase::final_force) {
      frozen_ = true;
      release_importance();
    } else if (rep.phase == allocation_phase::final_pattern) {
      apply_keep_mask();
      rep.masked = true;
    }
    last_step_ = rep.step;
    budget_ = rep.budget;
    return rep;
  }

  std::int64_t budget_at(std::int64_t t) const {
    switch (phase_of(t)) {
      case allocation_phase::warmup:
        return initial_budget();
      case allocation_phase::budgeting: {
        const schedule_point p{t, config_.tinit, config_.final_step(), initial_budget(), target_budget()};
        return static_cast<std::int64_t>(schedule_.budget(p));
      }
      default:
        return target_budget();
    }
  }

  // Every check of a step, before anything changes.
  void validate_step(std::int64_t t) const {
    const std::string at = "step(" + std::to_string(t) + "): ";
    // (partitioned: a rank may hold none; the first step checked that some rank holds one)
    if (adapters_.empty() && !partitioned())
      throw usage_error(at + "no adapters are registered; call add_adapter() first");
    if (t < 0) throw usage_error(at + "steps count optimizer steps from 0");
    if (last_step_ && t <= *last_step_)
      throw usage_error(at + "the allocator already ran step " + std::to_string(*last_step_) +
                        "; steps must increase: call step(t) once per optimizer step, after optimizer.step() and "
                        "before zeroing the gradients");
    if (!checked_target_budget())
      throw config_error(at + "target_r × adapters = " + std::to_string(config_.target_r) + " × " +
                         std::to_string(adapter_total()) + " overflows int64; it exceeds the sum of the adapters' "
                         "ranks = " + std::to_string(initial_budget()));
    if (target_budget() > initial_budget())
      throw config_error(at + "target_r × adapters = " + std::to_string(target_budget()) +
                         " exceeds the sum of the adapters' ranks = " + std::to_string(initial_budget()));
    const allocation_phase ph = phase_of(t);
    if (ph == allocation_phase::warmup || ph == allocation_phase::budgeting) {
      check_gradients(at);
      if (ph == allocation_phase::budgeting) {
        const std::int64_t b = budget_at(t);
        if (b < target_budget() || b > initial_budget())
          throw usage_error(at + "schedule '" + S::name + "' gave budget " + std::to_string(b) + ", outside [target " +
                            std::to_string(target_budget()) + ", initial " + std::to_string(initial_budget()) + "]");
      }
    } else if (ph == allocation_phase::final_force && !state_live_) {
      throw usage_error(at + "the forced mask at step total_step - tfinal = " + std::to_string(config_.final_step()) +
                        " needs importance from earlier steps, but no step before it ran; call step(t) on every "
                        "optimizer step from the start of training");
    }
  }

  // The gradients a metric needs are registered (finiteness is counted by the update pass itself).
  void check_gradients(const std::string& at) const {
    if constexpr (M::needs_gradient) {
      for (const auto& e : adapters_) {
        const auto& v = e.views;
        auto need = [&](const auto& g, const auto& param, const char* what) {
          if (!param.empty() && g.data == nullptr)
            throw missing_gradient_error(at + "adapter '" + e.name + "' has no " + what +
                                         " (null view); the importance metric '" + M::name +
                                         "' needs every gradient: run backward() before step(), and register the "
                                         "gradient tensors with rebind() once they exist");
        };
        need(v.grad_A, v.lora_A, "gradient for lora_A");
        need(v.grad_E, v.lora_E, "gradient for lora_E");
        need(v.grad_B, v.lora_B, "gradient for lora_B");
      }
    }
  }

  // After the update pass counted elements with a non-finite input, new state or score: names the first tensor with
  // a non-finite input, else the first whose importance overflowed.
  [[noreturn]] void throw_non_finite(const std::string& at, const buffer_t<B, std::uint32_t>& counts,
                                     std::size_t bad_tiles) const {
    for (const auto& e : adapters_) {
      const auto& v = e.views;
      check_finite(at, e.name, v.lora_A, "lora_A");
      check_finite(at, e.name, v.lora_E, "lora_E");
      check_finite(at, e.name, v.lora_B, "lora_B");
      if constexpr (M::needs_gradient) {
        check_finite(at, e.name, v.grad_A, "the gradient of lora_A");
        check_finite(at, e.name, v.grad_E, "the gradient of lora_E");
        check_finite(at, e.name, v.grad_B, "the gradient of lora_B");
      }
    }
    std::vector<std::uint32_t> bad(plan_.tiles.size());
    backend_.copy_to_host(counts.data(), bad.size(), bad.data());
    const auto first = static_cast<std::size_t>(std::find_if(bad.begin(), bad.end(), [](auto n) { return n != 0; }) -
                                                 bad.begin());
    // the plan holds three tensors per adapter, in registration order: lora_A, lora_E, lora_B
    constexpr const char* parts[] = {"lora_A", "lora_E", "lora_B"};
    const std::string culprit = first < bad.size() ? "adapter '" + adapters_[plan_.tiles[first].tensor / 3].name +
                                                         "' (" + parts[plan_.tiles[first].tensor % 3] + ")"
                                                   : "an adapter";
    throw non_finite_error(at + "the importance of " + culprit + " (" + std::to_string(bad_tiles) +
                           " tiles in all) or its score became NaN or infinite from finite parameters and gradients: "
                           "|θ·g|, its running averages or their product exceed float's range (about 3.4e38), so the "
                           "parameters or gradients are far too large; nothing changed (or, if they are not that "
                           "large, another thread or stream wrote them during step())");
  }

  // Refuses triplet scores that are not finite, before anything is committed: finite element scores can still sum
  // to infinity (sensitivity × uncertainty grows as |θ·g|²). `owners`: the adapters the n scores belong to, in score
  // order, each with its name and score_offset (this rank's entries, or partitioned the union's layout), to name the
  // singular value of the first bad score.
  template <class Owners>
  void check_triplets_finite(const std::string& at, const float* scores, std::size_t n, const Owners& owners) const {
    using score_view = vector_view<const float, memory_space>;
    const score_view v = make_vector_view<memory_space>(scores, n);
    const std::size_t bad = backend_.count_if(n, detail::non_finite_fn<score_view>{detail::flat_accessor<score_view>(v)});
    if (bad == 0) return;
    std::vector<float> host(n);
    backend_.copy_to_host(scores, n, host.data());
    const auto i = static_cast<std::size_t>(
        std::find_if(host.begin(), host.end(), [](float x) { return !std::isfinite(x); }) - host.begin());
    const auto owner = std::upper_bound(owners.begin(), owners.end(), i,
                                        [](std::size_t k, const auto& o) { return k < o.score_offset; }) -
                       1;
    throw non_finite_error(at + std::to_string(bad) + " triplet scores are NaN or infinite, the first of adapter '" +
                           owner->name + "' (singular value " + std::to_string(i - owner->score_offset) +
                           "): the importance is finite but its scores overflow float (the parameters or "
                           "gradients are far too large); nothing changed");
  }

  template <class View>
  void check_finite(const std::string& at, const std::string& name, const View& v, const char* what) const {
    if (v.empty()) return;
    const std::size_t bad = backend_.count_if(v.size(), detail::non_finite_fn<View>{detail::flat_accessor<View>(v)});
    if (bad)
      throw non_finite_error(at + "adapter '" + name + "': " + what + " has " + std::to_string(bad) + " of " +
                             std::to_string(v.size()) +
                             " elements NaN or infinite; skip this optimizer step (e.g. a loss-scaler overflow) "
                             "without calling step(), or fix the source of the non-finite values");
  }

  // The plan and the buffers that depend only on the registered shapes.
  void prepare() {
    if (!prepared_) {
      detail::step_plan<T> plan;
      std::size_t element_scores = static_cast<std::size_t>(initial_budget_);  // λ scores (and split pieces)
      std::optional<detail::part_plan> parts;
      if (partitioned()) {
        std::vector<detail::part_descriptor> mine;
        for (const auto& e : adapters_) mine.push_back(e.part);
        parts = detail::plan_parts(mine, distributed_options_sums());
        for (const auto& e : adapters_) {
          const auto x = detail::plan_tensors_of(e.views, e.offset);
          plan.tensors.insert(plan.tensors.end(), x.begin(), x.end());
        }
        plan.tiles = parts->tiles;
        plan.scores = parts->scores;
        plan.partials = parts->partials;
        element_scores = parts->element_scores();
      } else {
        for (const auto& e : adapters_) plan.add_adapter(e.views, e.offset, e.score_offset);
      }
      const auto b0 = static_cast<std::size_t>(initial_budget_);
      auto tiles = upload(plan.tiles);
      auto score_table = upload(plan.scores);
      auto partial = backend_.template allocate<double>(plan.partials);
      auto lambda_scores = backend_.template allocate<float>(element_scores);
      auto scores = backend_.template allocate<float>(b0);
      auto keep = backend_.template allocate<std::uint8_t>(b0);
      auto bad = backend_.template allocate<std::uint32_t>(plan.tiles.size());
      // in place: the check's and the trial's counts (bad holds what the update pass counted, read by the check)
      buffer_t<B, std::uint32_t> suspect;
      if constexpr (P::buffers == 1) suspect = backend_.template allocate<std::uint32_t>(plan.tiles.size());
      // the selection's scratch (a backend that keeps some, e.g. CUDA's sort buffers), so that no step after the
      // first takes memory; partitioned, the selection runs over the union's scores
      std::size_t selected = b0;
      if constexpr (distributed)
        if (parts && dist_.layout) {
          dist_.exchange.emplace(backend_, *dist_.layout, *parts, dist_.comm.size());
          selected = dist_.layout->b0();
        }
      if constexpr (requires { backend_.reserve_kth_smallest(selected); }) backend_.reserve_kth_smallest(selected);
      // nothing above changed the allocator; commit
      plan_ = std::move(plan);
      tiles_ = std::move(tiles);
      score_table_ = std::move(score_table);
      partial_ = std::move(partial);
      lambda_scores_ = std::move(lambda_scores);
      scores_ = std::move(scores);
      keep_ = std::move(keep);
      bad_ = std::move(bad);
      suspect_ = std::move(suspect);
      short_lines_ = std::all_of(plan_.scores.begin(), plan_.scores.end(), [](const detail::plan_score& d) {
        return d.in <= bounded_line_elements && d.out <= bounded_line_elements;
      });
      prepared_ = true;
      tensors_dirty_ = true;
      upload_keep();
    }
    if (tensors_dirty_) {
      tensors_ = upload(plan_.tensors);
      contiguous_ = std::all_of(adapters_.begin(), adapters_.end(),
                                [](const adapter_entry& e) { return detail::plan_contiguous(e.views); });
      tensors_dirty_ = false;
    }
  }

  shard_sums distributed_options_sums() const noexcept {
    if constexpr (distributed)
      return dist_.options.sums;
    else
      return shard_sums::exact;
  }

  template <class V>
  auto upload(const std::vector<V>& host) {
    auto buf = backend_.template allocate<V>(host.size());
    backend_.copy_from_host(host.data(), host.size(), buf.data());
    return buf;
  }

  // The part of the importance update that may fail, as the state policy says; throws non_finite_error (changing
  // nothing) when an input is not finite. Double-buffered: one pass over every tile, the new state into the spare
  // buffer, the non-finite inputs counted per tile, and on mask steps the score sums; the new state replaces the old
  // only at the commit, when every rank's inputs were finite. In place: the check that clears the update
  // (check_in_place); the update itself runs at the commit.
  void update_importance(std::int64_t t, pending_step& p) {
    const std::size_t n = M::state_count * total_elements_;
    if (!state_live_) p.fresh_state = backend_.template allocate<stored_type>(n);  // zeros: within any bound
    if constexpr (P::buffers == 2) {
      if (next_state_.size() != n) p.fresh_next = backend_.template allocate<stored_type>(n);
      const stored_type* in = state_live_ ? state_.data() : p.fresh_state.data();
      stored_type* out = next_state_.size() == n ? next_state_.data() : p.fresh_next.data();
      run_fused<detail::state_pass::update_into>(in, out, bad_.data(), p.mask);
      throw_if_counted(t, bad_);
      p.scored = p.mask;
    } else {
      check_in_place(t, p);
    }
  }

  // In place: a read-only check of θ and g (for a BoundedImportanceMetric, while the state is known to be within the
  // metric's safe bound: bad_ holds what the last in-place pass took beyond it), else an exact trial of the update
  // that stores nothing.
  void check_in_place(std::int64_t t, pending_step& p) {
    const stored_type* state = state_live_ ? state_.data() : p.fresh_state.data();
    // A mask step's triplet scores must be found finite before the state is overwritten: finite element scores can
    // still sum past float's range. A cleared check bounds every element score by bounded_score_limit, so lines of
    // ≤ 2^26 elements sum within range and the commit's pass may leave the sums. Where the sums are needed before
    // the commit (a partitioned exchange, the replica check) or the lines are longer, and wherever the check does
    // not clear the step, a mask step runs the trial with scores (it leaves the sums the update pass would).
    bool trial = (trial_pending_ && state_live_) || (p.mask && (!short_lines_ || partitioned() || check_replicas()));
    if constexpr (BoundedImportanceMetric<M>) {
      if (!trial) {
        if (contiguous_)
          for_each_tile(detail::input_check_fn<M, T, true>{metric_, tensors_.data(), tiles_.data(), bad_.data(),
                                                            suspect_.data()});
        else
          for_each_tile(detail::input_check_fn<M, T, false>{metric_, tensors_.data(), tiles_.data(), bad_.data(),
                                                             suspect_.data()});
        trial = backend_.count_if(plan_.tiles.size(), detail::nonzero_fn{suspect_.data()}) != 0;
      }
    } else {
      trial = true;
    }
    if (trial) {
      run_fused<detail::state_pass::trial>(state, nullptr, suspect_.data(), p.mask);
      throw_if_counted(t, suspect_);
    }
    p.scored = trial && p.mask;
  }

  // The new state becomes current: double-buffered, the spare becomes current and the old one the spare; in place,
  // the cleared update pass overwrites the state (nothing can fail there), with the score sums where begin_step did
  // not leave them, and counts per tile into bad_ the new values beyond the metric's safe bound.
  void commit_importance(pending_step& p) {
    const std::size_t n = M::state_count * total_elements_;
    if constexpr (P::buffers == 2) {
      if (next_state_.size() != n) next_state_ = std::move(p.fresh_next);
      if (!state_live_) {
        state_ = std::move(p.fresh_state);
        state_live_ = true;
      }
      std::swap(state_, next_state_);
    } else {
      stored_type* state = state_live_ ? state_.data() : p.fresh_state.data();
      run_fused<detail::state_pass::update_in_place>(nullptr, state, bad_.data(), p.mask && !p.scored);
      if (!state_live_) {
        state_ = std::move(p.fresh_state);
        state_live_ = true;
      }
      trial_pending_ = false;
    }
  }

  // After a pass that counted per tile into `counts`: throws non_finite_error naming the culprit if any tile counted.
  void throw_if_counted(std::int64_t t, const buffer_t<B, std::uint32_t>& counts) {
    const std::size_t bad_tiles = backend_.count_if(plan_.tiles.size(), detail::nonzero_fn{counts.data()});
    if (bad_tiles) throw_non_finite("step(" + std::to_string(t) + "): ", counts, bad_tiles);
  }

  template <detail::state_pass Pass>
  void run_fused(const stored_type* in, stored_type* out, std::uint32_t* counts, bool score) {
    auto launch = [&](auto contiguous, auto with_score) {
      for_each_tile(detail::fused_importance_fn<M, T, decltype(contiguous)::value, decltype(with_score)::value, Pass,
                                                state_value_type>{metric_, tensors_.data(), tiles_.data(), in, out,
                                                                  total_elements_, counts, partial_.data(),
                                                                  lambda_scores_.data()});
    };
    using yes = std::true_type;
    using no = std::false_type;
    if (contiguous_)
      score ? launch(yes{}, yes{}) : launch(yes{}, no{});
    else
      score ? launch(no{}, yes{}) : launch(no{}, no{});
  }

  // The score sums from the state held, without updating it (the forced mask).
  void score_held_importance() {
    for_each_tile(detail::plan_scores_fn<M, T, state_value_type>{metric_, tensors_.data(), tiles_.data(), state_.data(),
                                                                 nullptr, total_elements_, nullptr, partial_.data(),
                                                                 lambda_scores_.data()});
  }

  // One pass over every tile: in block form where the backend launches blocks of lanes (the CUDA backend), else in
  // tile form (one work item per tile); both leave the same results (detail::TileLanePass).
  template <class F>
  void for_each_tile(const F& f) {
    if constexpr (requires { backend_.for_each_tile_lanes(std::size_t{}, f); })
      backend_.for_each_tile_lanes(plan_.tiles.size(), f);
    else
      backend_.for_each(plan_.tiles.size(), f);
  }

  // The triplet scores of this rank's singular values from the tiles' score sums, refused when one is not finite.
  void score_triplets(std::int64_t t) {
    const auto b0 = static_cast<std::size_t>(initial_budget_);
    backend_.for_each(b0, detail::triplet_from_partials_fn{score_table_.data(), partial_.data(), lambda_scores_.data(),
                                                           scores_.data()});
    check_triplets_finite("step(" + std::to_string(t) + "): ", scores_.data(), b0, adapters_);
  }

  // From the triplet scores (this rank's, or partitioned the union's): the budget's threshold, Λ masked in place,
  // the pattern to the host.
  std::optional<float> select_and_mask(std::int64_t budget) {
    float* scores = scores_.data();
    std::uint8_t* keep = keep_.data();
    if constexpr (distributed)
      if (partitioned()) {
        scores = dist_.exchange->scores();
        keep = dist_.exchange->keep();
      }
    const auto b0 = static_cast<std::size_t>(initial_budget());
    const auto k = static_cast<std::size_t>(initial_budget() - budget);
    std::optional<float> thr;
    if (k > 0) thr = backend_.kth_smallest(scores, b0, k);
    // with nothing to prune every score is kept: compare against -inf
    backend_.for_each(b0, detail::keep_above_fn{scores, thr ? *thr : -std::numeric_limits<float>::infinity(), keep});
    if constexpr (distributed)
      if (partitioned()) dist_.exchange->local_keep(backend_, keep_.data(), static_cast<std::size_t>(initial_budget_));
    apply_keep_mask();
    scores_host_.resize(b0);
    keep_host_.resize(b0);
    backend_.copy_to_host(scores, b0, scores_host_.data());
    backend_.copy_to_host(keep, b0, keep_host_.data());
    threshold_ = thr;
    return thr;
  }

  void apply_keep_mask() {
    backend_.for_each(static_cast<std::size_t>(initial_budget_),
                      detail::mask_lambda_fn<T>{tensors_.data(), score_table_.data(), keep_.data()});
  }

  void release_importance() {
    state_ = state_buffer{};
    next_state_ = state_buffer{};
    state_live_ = false;
  }

  detail::usage_guard guard_;  // one thread at a time: overlapping calls are a usage_error (see the class comment)
  adalora_config config_;
  B backend_;
  M metric_;
  S schedule_;
  [[no_unique_address]] detail::collective_state<B, C> dist_;

  std::vector<adapter_entry> adapters_;
  std::map<std::string, std::size_t, std::less<>> index_;  // adapter name -> its index in adapters_
  std::size_t total_elements_ = 0;
  std::int64_t initial_budget_ = 0;

  bool prepared_ = false;
  bool tensors_dirty_ = true;
  bool contiguous_ = true;
  bool short_lines_ = true;  // no line of Q or P longer than bounded_line_elements (check_in_place)
  detail::step_plan<T> plan_;
  buffer_t<B, detail::plan_tensor<T>> tensors_{};
  buffer_t<B, detail::plan_tile> tiles_{};
  buffer_t<B, detail::plan_score> score_table_{};
  buffer_t<B, double> partial_{};
  buffer_t<B, float> lambda_scores_{}, scores_{};
  buffer_t<B, std::uint8_t> keep_{};
  buffer_t<B, std::uint32_t> bad_{}, suspect_{};
  state_buffer state_{}, next_state_{};
  bool state_live_ = false;
  bool trial_pending_ = false;  // in place: the next update tries the step whole first (set by restore_state)

  std::vector<float> scores_host_;
  std::vector<std::uint8_t> keep_host_;
  std::vector<allocator_state::adapter_shape> restored_union_;  // partitioned: the order of a restored keep_host_
  std::optional<std::int64_t> last_step_;
  std::int64_t budget_ = 0;
  std::optional<float> threshold_;
  bool frozen_ = false;
};

}  // namespace adalora
