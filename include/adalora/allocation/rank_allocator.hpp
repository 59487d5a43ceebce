// The AdaLoRA rank allocator (SPEC §3–5): importance, global budget, threshold, in-place masks, rank pattern.
#pragma once

#include <algorithm>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <limits>
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
#include "adalora/allocation/step_plan.hpp"
#include "adalora/backends/backend.hpp"
#include "adalora/core/config.hpp"
#include "adalora/core/error.hpp"
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
}  // namespace detail

/// Allocates a global rank budget over registered SVD adapters, exactly as PEFT's RankAllocator does.
///
/// The trainer owns every tensor: it registers views of each adapter's P, Λ, Q and their gradients, then calls
/// `step(t)` once per optimizer step, after the optimizer update and before the gradients are zeroed (SPEC §6).
/// Importance state (the metric's per-element EMAs) lives in one arena in the backend's memory, allocated at the
/// first step and released when the final pattern is frozen; it is double-buffered (2 × state_count floats per
/// element), which lets a step read the old state and write the new in one pass and still drop it when an input
/// turns out not to be finite.
///
/// A step runs a fixed number of backend calls whatever the number of adapters: one pass over all tiles of all
/// adapters (update, finiteness count, and on mask steps the score sums), one count, and on mask steps one pass for
/// the triplet scores, one selection and one pass each for the pattern and the masks (see step_plan.hpp).
///
/// Errors: every precondition of a step (steps increasing, gradients present, parameters and gradients finite,
/// importance available for the forced mask) is checked before anything changes; a failed step leaves the
/// allocator and the adapters exactly as they were.
template <Backend B, ImportanceMetric M = sensitivity_uncertainty, BudgetSchedule S = cubic_schedule, class T = float>
class rank_allocator {
public:
  using backend_type = B;
  using metric_type = M;
  using schedule_type = S;
  using value_type = T;
  using memory_space = typename B::memory_space;
  using views_type = svd_adapter_views<T, memory_space>;

  /// Validates the config (config_error) and builds the metric from it.
  explicit rank_allocator(const adalora_config& config, B backend = B{})
      : rank_allocator(config, detail::make_metric<M>(config), S{}, std::move(backend)) {}

  rank_allocator(const adalora_config& config, M metric, S schedule = S{}, B backend = B{})
      : config_(config), backend_(std::move(backend)), metric_(std::move(metric)), schedule_(std::move(schedule)) {
    config_.validate();
  }

  // ---- registration ------------------------------------------------------------------------------------------

  /// Registers an adapter under a unique name; returns its index. Only before the first step.
  std::size_t add_adapter(std::string name, const views_type& views) {
    if (last_step_)
      throw usage_error("add_adapter('" + name + "'): the allocator has already run step " +
                        std::to_string(*last_step_) + "; register every adapter before the first step");
    if (name.empty()) throw usage_error("add_adapter: the adapter name is empty");
    if (find(name)) throw usage_error("add_adapter: an adapter named '" + name + "' is already registered");
    views.check_shapes(name);
    adapter_entry e;
    e.name = std::move(name);
    e.views = views;
    e.offset = total_elements_;
    e.score_offset = static_cast<std::size_t>(initial_budget_);
    total_elements_ += views.rank() * (views.in_features() + 1 + views.out_features());
    initial_budget_ += static_cast<std::int64_t>(views.rank());
    adapters_.push_back(std::move(e));
    prepared_ = false;
    return adapters_.size() - 1;
  }

  /// Points a registered adapter at new tensors of the same shapes (e.g. gradients that exist only after the
  /// first backward pass, or tensors the trainer reallocated). Allowed at any time.
  void rebind(std::string_view name, const views_type& views) {
    adapter_entry& e = entry(name);
    views.check_shapes(e.name);
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
  step_report step(std::int64_t t) {
    validate_step(t);
    prepare();
    step_report rep;
    rep.step = t;
    rep.phase = phase_of(t);
    rep.budget = budget_at(t);

    if (rep.phase == allocation_phase::warmup || rep.phase == allocation_phase::budgeting) {
      const bool mask = rep.phase == allocation_phase::budgeting && t % config_.deltaT == 0;
      update_importance(t, mask);  // throws (changing nothing) if an input is not finite
      rep.importance_updated = true;
      if (mask) {
        rep.threshold = select_and_mask(rep.budget);
        rep.masked = true;
      }
    } else if (rep.phase == allocation_phase::final_force) {
      score_held_importance();
      rep.threshold = select_and_mask(rep.budget);
      rep.masked = true;
      frozen_ = true;
      release_importance();
    } else {
      apply_keep_mask();
      rep.masked = true;
    }
    last_step_ = t;
    budget_ = rep.budget;
    return rep;
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
  /// b0: the sum of the registered adapters' ranks.
  std::int64_t initial_budget() const noexcept { return initial_budget_; }
  /// bT: target_r × number of adapters.
  std::int64_t target_budget() const noexcept { return config_.target_r * static_cast<std::int64_t>(adapters_.size()); }
  /// The budget at the last step (b0 before the first step).
  std::int64_t budget() const noexcept { return last_step_ ? budget_ : initial_budget_; }
  /// The threshold of the latest selection that pruned something.
  std::optional<float> threshold() const noexcept { return threshold_; }
  std::optional<std::int64_t> last_step() const noexcept { return last_step_; }
  bool pattern_frozen() const noexcept { return frozen_; }
  /// True while the metric's per-element state is held (from the first step until the final pattern is frozen).
  bool importance_live() const noexcept { return state_live_; }

  /// Per adapter, the rank pattern of the latest selection: keep[i] = (S_i > threshold). All true before one.
  std::vector<bool> rank_pattern(std::string_view name) const {
    const adapter_entry& e = entry(name);
    std::vector<bool> p(e.views.rank(), true);
    if (!keep_host_.empty())
      for (std::size_t i = 0; i < p.size(); ++i) p[i] = keep_host_[e.score_offset + i] != 0;
    return p;
  }
  /// The rank of each adapter under the latest selection, in registration order.
  std::vector<std::int64_t> ranks() const {
    std::vector<std::int64_t> r;
    r.reserve(adapters_.size());
    for (const auto& e : adapters_) {
      const auto p = rank_pattern(e.name);
      r.push_back(static_cast<std::int64_t>(std::count(p.begin(), p.end(), true)));
    }
    return r;
  }
  /// The triplet scores of the latest selection (empty before one).
  std::vector<float> triplet_scores(std::string_view name) const {
    const adapter_entry& e = entry(name);
    if (scores_host_.empty()) return {};
    const auto first = scores_host_.begin() + static_cast<std::ptrdiff_t>(e.score_offset);
    return std::vector<float>(first, first + static_cast<std::ptrdiff_t>(e.views.rank()));
  }

  // ---- checkpoint and resume -------------------------------------------------------------------------------

  /// A host copy of the whole state (see io/allocator_checkpoint.hpp to store it).
  allocator_state save_state() const {
    allocator_state s;
    s.config = config_;
    s.metric = M::name;
    s.schedule = S::name;
    for (const auto& e : adapters_)
      s.adapters.push_back({e.name, e.views.rank(), e.views.in_features(), e.views.out_features()});
    s.last_step = last_step_;
    s.budget = budget_;
    s.threshold = threshold_;
    s.frozen = frozen_;
    s.importance_live = state_live_;
    if (state_live_) {
      s.importance.resize(M::state_count * total_elements_);
      backend_.copy_to_host(state_.data(), s.importance.size(), s.importance.data());
    }
    s.keep = keep_host_;
    s.scores = scores_host_;
    return s;
  }

  /// Restores a state saved from an allocator with the same config, metric, schedule and adapters (names and
  /// shapes, in registration order). Throws usage_error naming the first difference, before changing anything.
  void restore_state(const allocator_state& s) {
    const std::string where = "restore_state: the checkpoint does not match this allocator: ";
    const auto& a = s.config;
    const auto& c = config_;
    if (a.init_r != c.init_r || a.target_r != c.target_r || a.tinit != c.tinit || a.tfinal != c.tfinal ||
        a.deltaT != c.deltaT || a.beta1 != c.beta1 || a.beta2 != c.beta2 || a.total_step != c.total_step)
      throw usage_error(where +
                        "the configs differ (init_r, target_r, tinit, tfinal, deltaT, beta1, beta2 or "
                        "total_step)");
    if (s.metric != M::name) throw usage_error(where + "metric '" + s.metric + "' vs '" + M::name + "'");
    if (s.schedule != S::name) throw usage_error(where + "schedule '" + s.schedule + "' vs '" + S::name + "'");
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
    const auto b0 = static_cast<std::size_t>(initial_budget_);
    if ((s.importance_live && s.importance.size() != M::state_count * total_elements_) ||
        (!s.keep.empty() && s.keep.size() != b0) || (!s.scores.empty() && s.scores.size() != b0) ||
        (s.frozen && s.keep.empty()))
      throw usage_error(where + "its importance, pattern or score arrays have the wrong sizes");
    // all checks passed: replace the state
    prepare();
    if (s.importance_live) {
      state_ = backend_.template allocate<float>(s.importance.size());
      backend_.copy_from_host(s.importance.data(), s.importance.size(), state_.data());
    } else {
      state_ = buffer_t<B, float>{};
    }
    next_state_ = buffer_t<B, float>{};
    state_live_ = s.importance_live;
    keep_host_ = s.keep;
    scores_host_ = s.scores;
    if (!keep_host_.empty()) backend_.copy_from_host(keep_host_.data(), b0, keep_.data());
    if (!scores_host_.empty()) backend_.copy_from_host(scores_host_.data(), b0, scores_.data());
    last_step_ = s.last_step;
    budget_ = s.budget;
    threshold_ = s.threshold;
    frozen_ = s.frozen;
  }

private:
  struct adapter_entry {
    std::string name;
    views_type views;
    std::size_t offset = 0;        // of lora_A's block in the element arena; lora_E, lora_B follow
    std::size_t score_offset = 0;  // of this adapter's singular values among all b0
    std::size_t offset_E() const noexcept { return offset + views.rank() * views.in_features(); }
    std::size_t offset_B() const noexcept { return offset_E() + views.rank(); }
  };

  const adapter_entry* find(std::string_view name) const noexcept {
    for (const auto& e : adapters_)
      if (e.name == name) return &e;
    return nullptr;
  }
  const adapter_entry& entry(std::string_view name) const {
    if (const adapter_entry* e = find(name)) return *e;
    throw usage_error("no adapter named '" + std::string(name) + "' is registered");
  }
  adapter_entry& entry(std::string_view name) { return const_cast<adapter_entry&>(std::as_const(*this).entry(name)); }

  std::int64_t budget_at(std::int64_t t) const {
    switch (phase_of(t)) {
      case allocation_phase::warmup:
        return initial_budget_;
      case allocation_phase::budgeting: {
        const schedule_point p{t, config_.tinit, config_.final_step(), initial_budget_, target_budget()};
        return static_cast<std::int64_t>(schedule_.budget(p));
      }
      default:
        return target_budget();
    }
  }

  // Every check of a step, before anything changes.
  void validate_step(std::int64_t t) const {
    const std::string at = "step(" + std::to_string(t) + "): ";
    if (adapters_.empty()) throw usage_error(at + "no adapters are registered; call add_adapter() first");
    if (t < 0) throw usage_error(at + "steps count optimizer steps from 0");
    if (last_step_ && t <= *last_step_)
      throw usage_error(at + "the allocator already ran step " + std::to_string(*last_step_) +
                        "; steps must increase: call step(t) once per optimizer step, after optimizer.step() and "
                        "before zeroing the gradients");
    if (target_budget() > initial_budget_)
      throw config_error(at + "target_r × adapters = " + std::to_string(target_budget()) +
                         " exceeds the sum of the adapters' ranks = " + std::to_string(initial_budget_));
    const allocation_phase ph = phase_of(t);
    if (ph == allocation_phase::warmup || ph == allocation_phase::budgeting) {
      check_gradients(at);
      if (ph == allocation_phase::budgeting) {
        const std::int64_t b = budget_at(t);
        if (b < target_budget() || b > initial_budget_)
          throw usage_error(at + "schedule '" + S::name + "' gave budget " + std::to_string(b) + ", outside [target " +
                            std::to_string(target_budget()) + ", initial " + std::to_string(initial_budget_) + "]");
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

  // After the update pass counted non-finite inputs: names the first tensor that has them.
  [[noreturn]] void throw_non_finite(const std::string& at, std::size_t bad_tiles) const {
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
    throw non_finite_error(at + std::to_string(bad_tiles) +
                           " tiles of the adapters' parameters or gradients held NaN or infinite values while the "
                           "update ran, but none do now: another thread or stream is writing them during step()");
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
      for (const auto& e : adapters_) plan.add_adapter(e.views, e.offset, e.score_offset);
      const auto b0 = static_cast<std::size_t>(initial_budget_);
      auto tiles = upload(plan.tiles);
      auto score_table = upload(plan.scores);
      auto partial = backend_.template allocate<double>(plan.partials);
      auto lambda_scores = backend_.template allocate<float>(b0);
      auto scores = backend_.template allocate<float>(b0);
      auto keep = backend_.template allocate<std::uint8_t>(b0);
      auto bad = backend_.template allocate<std::uint32_t>(plan.tiles.size());
      // the selection's scratch (a backend that keeps some, e.g. CUDA's sort buffers), so that no step after the
      // first takes memory
      if constexpr (requires { backend_.reserve_kth_smallest(b0); }) backend_.reserve_kth_smallest(b0);
      // nothing above changed the allocator; commit
      plan_ = std::move(plan);
      tiles_ = std::move(tiles);
      score_table_ = std::move(score_table);
      partial_ = std::move(partial);
      lambda_scores_ = std::move(lambda_scores);
      scores_ = std::move(scores);
      keep_ = std::move(keep);
      bad_ = std::move(bad);
      prepared_ = true;
      tensors_dirty_ = true;
    }
    if (tensors_dirty_) {
      tensors_ = upload(plan_.tensors);
      contiguous_ = std::all_of(adapters_.begin(), adapters_.end(),
                                [](const adapter_entry& e) { return detail::plan_contiguous(e.views); });
      tensors_dirty_ = false;
    }
  }

  template <class V>
  auto upload(const std::vector<V>& host) {
    auto buf = backend_.template allocate<V>(host.size());
    backend_.copy_from_host(host.data(), host.size(), buf.data());
    return buf;
  }

  // One pass over every tile: the new state into the spare buffer, the non-finite inputs counted per tile, and on
  // mask steps the score sums. The new state replaces the old only when every input was finite.
  void update_importance(std::int64_t t, bool score) {
    const std::size_t n = M::state_count * total_elements_;
    buffer_t<B, float> fresh_state, fresh_next;
    if (!state_live_) fresh_state = backend_.template allocate<float>(n);
    if (next_state_.size() != n) fresh_next = backend_.template allocate<float>(n);
    const float* in = state_live_ ? state_.data() : fresh_state.data();
    float* out = next_state_.size() == n ? next_state_.data() : fresh_next.data();
    run_fused(in, out, score);
    const std::size_t bad_tiles = backend_.count_if(plan_.tiles.size(), detail::nonzero_fn{bad_.data()});
    if (bad_tiles) throw_non_finite("step(" + std::to_string(t) + "): ", bad_tiles);
    // commit: the new state becomes current, the old one the spare
    if (next_state_.size() != n) next_state_ = std::move(fresh_next);
    if (!state_live_) {
      state_ = std::move(fresh_state);
      state_live_ = true;
    }
    std::swap(state_, next_state_);
  }

  void run_fused(const float* in, float* out, bool score) {
    auto launch = [&](auto contiguous, auto with_score) {
      for_each_tile(detail::fused_importance_fn<M, T, decltype(contiguous)::value, decltype(with_score)::value>{
          metric_, tensors_.data(), tiles_.data(), in, out, total_elements_, bad_.data(), partial_.data(),
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
    for_each_tile(detail::plan_scores_fn<M, T>{metric_, tensors_.data(), tiles_.data(), state_.data(), nullptr,
                                               total_elements_, nullptr, partial_.data(), lambda_scores_.data()});
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

  // From the tiles' score sums: triplet scores, the budget's threshold, Λ masked in place, the pattern to the host.
  std::optional<float> select_and_mask(std::int64_t budget) {
    const auto b0 = static_cast<std::size_t>(initial_budget_);
    backend_.for_each(b0, detail::triplet_from_partials_fn{score_table_.data(), partial_.data(), lambda_scores_.data(),
                                                           scores_.data()});
    const auto k = static_cast<std::size_t>(initial_budget_ - budget);
    std::optional<float> thr;
    if (k > 0) thr = backend_.kth_smallest(scores_.data(), b0, k);
    // with nothing to prune every score is kept: compare against -inf
    backend_.for_each(
        b0, detail::keep_above_fn{scores_.data(), thr ? *thr : -std::numeric_limits<float>::infinity(), keep_.data()});
    apply_keep_mask();
    scores_host_.resize(b0);
    keep_host_.resize(b0);
    backend_.copy_to_host(scores_.data(), b0, scores_host_.data());
    backend_.copy_to_host(keep_.data(), b0, keep_host_.data());
    threshold_ = thr;
    return thr;
  }

  void apply_keep_mask() {
    backend_.for_each(static_cast<std::size_t>(initial_budget_),
                      detail::mask_lambda_fn<T>{tensors_.data(), score_table_.data(), keep_.data()});
  }

  void release_importance() {
    state_ = buffer_t<B, float>{};
    next_state_ = buffer_t<B, float>{};
    state_live_ = false;
  }

  adalora_config config_;
  B backend_;
  M metric_;
  S schedule_;

  std::vector<adapter_entry> adapters_;
  std::size_t total_elements_ = 0;
  std::int64_t initial_budget_ = 0;

  bool prepared_ = false;
  bool tensors_dirty_ = true;
  bool contiguous_ = true;
  detail::step_plan<T> plan_;
  buffer_t<B, detail::plan_tensor<T>> tensors_{};
  buffer_t<B, detail::plan_tile> tiles_{};
  buffer_t<B, detail::plan_score> score_table_{};
  buffer_t<B, double> partial_{};
  buffer_t<B, float> lambda_scores_{}, scores_{};
  buffer_t<B, std::uint8_t> keep_{};
  buffer_t<B, std::uint32_t> bad_{};
  buffer_t<B, float> state_{}, next_state_{};
  bool state_live_ = false;

  std::vector<float> scores_host_;
  std::vector<std::uint8_t> keep_host_;
  std::optional<std::int64_t> last_step_;
  std::int64_t budget_ = 0;
  std::optional<float> threshold_;
  bool frozen_ = false;
};

}  // namespace adalora
