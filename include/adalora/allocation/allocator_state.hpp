// A host snapshot of a rank_allocator's whole state: what a checkpoint stores to resume a run bit for bit.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

#include "adalora/core/checked_size.hpp"
#include "adalora/core/config.hpp"
#include "adalora/core/error.hpp"

namespace adalora {

/// Everything that decides the allocator's future: progress, importance state, selection and frozen pattern.
struct allocator_state {
  struct adapter_shape {
    std::string name;
    std::size_t r = 0, in = 0, out = 0;
    bool operator==(const adapter_shape&) const = default;
  };

  /// What a distributed allocator's rank adds: who saved it and how the adapters were owned.
  struct distributed_info {
    /// This rank's part of one adapter, in the adapter's global coordinates (see adapter_shard).
    struct part {
      std::size_t in = 0, out = 0, in_offset = 0, out_offset = 0;
      bool counts_lambda = true;
      bool operator==(const part&) const = default;
    };
    int rank = 0;
    int ranks = 1;
    std::string ownership;  ///< "replicated" or "partitioned"
    std::string sums;       ///< partitioned: "exact" or "per_triplet"
    std::vector<part> parts;                     ///< one per adapter of `adapters`
    std::vector<adapter_shape> global_adapters;  ///< the adapters `keep` and `scores` run over, in their order
  };

  adalora_config config;
  std::string metric;    ///< the importance metric's name
  std::string schedule;  ///< the budget schedule's name
  std::string state_policy;           ///< the state policy that saved it (empty where not recorded)
  std::string state_type = "float32";  ///< how its importance was stored: "float32" or "bfloat16"
  std::vector<adapter_shape> adapters;
  std::optional<std::int64_t> last_step;
  std::int64_t budget = 0;
  std::optional<float> threshold;
  bool frozen = false;
  bool importance_live = false;
  std::vector<float> importance;  ///< state_count planes of Σ r·(in + 1 + out) values, when live (bfloat16 widened)
  std::vector<std::uint8_t> keep;  ///< the latest selection's rank pattern over all b0 values (empty before one)
  std::vector<float> scores;       ///< the latest selection's triplet scores (empty before one)
  /// Saved by a rank of a distributed allocator (absent for one process). Partitioned: `adapters`, `importance`
  /// are this rank's parts (shapes as registered), `keep` and `scores` the union's, over `global_adapters`.
  std::optional<distributed_info> distributed;
};

/// The first field in which two configs differ ("lora_alpha: 8 vs 16"), or empty when they agree in every field.
inline std::string config_difference(const adalora_config& a, const adalora_config& b) {
  auto text = [](auto v) {
    if constexpr (std::is_floating_point_v<decltype(v)>) {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.17g", v);
      return std::string(buf);
    } else {
      return std::to_string(v);
    }
  };
  std::string d;
  auto field = [&](const char* name, auto x, auto y) {
    if (d.empty() && !(x == y)) d = std::string(name) + ": " + text(x) + " vs " + text(y);
  };
  field("init_r", a.init_r, b.init_r);
  field("target_r", a.target_r, b.target_r);
  field("tinit", a.tinit, b.tinit);
  field("tfinal", a.tfinal, b.tfinal);
  field("deltaT", a.deltaT, b.deltaT);
  field("beta1", a.beta1, b.beta1);
  field("beta2", a.beta2, b.beta2);
  field("orth_reg_weight", a.orth_reg_weight, b.orth_reg_weight);
  field("total_step", a.total_step, b.total_step);
  field("lora_alpha", a.lora_alpha, b.lora_alpha);
  field("lora_dropout", a.lora_dropout, b.lora_dropout);
  return d;
}

/// What is wrong with a state that no allocator could have saved (see allocator_state_problem).
struct allocator_state_problem {
  bool non_finite = false;  ///< a value that must be finite (importance, scores, threshold) is NaN or infinite
  std::string what;
};

/// Checks an allocator_state against itself, as rank_allocator::save_state leaves it, whatever the allocator: a valid
/// config; adapters with names (non-empty, unique), in and out > 0, and ranks whose sums (b0 = Σ r, the parameter
/// count Σ r·(in + 1 + out)) fit; keep and scores empty or of b0 entries, keep of 0 and 1 only; the importance, when
/// live, a whole number (≥ 1) of planes of the parameter count; every importance value, score and the threshold
/// finite; and the phase consistent: last_step ≥ 0, importance live exactly from the first step until the pattern
/// is frozen, frozen exactly when last_step ≥ total_step − tfinal (with a pattern), and the budget of a run that
/// started within [target_r × adapters, b0]. A rank of a partitioned run holds its parts in `adapters` and
/// `importance`, and the union's pattern and scores over `distributed->global_adapters`. Returns the first problem
/// found, or nullopt. O(n log n) in the state's size.
inline std::optional<allocator_state_problem> find_allocator_state_problem(const allocator_state& s) {
  auto problem = [](std::string what, bool non_finite = false) {
    return std::optional<allocator_state_problem>(allocator_state_problem{non_finite, std::move(what)});
  };
  try {
    s.config.validate();
  } catch (const config_error& e) {
    return problem(e.what());
  }
  // Σ r and Σ r·(in + 1 + out) over a list of adapters, each named, positive in and out, no name twice
  struct sums {
    std::int64_t b0 = 0;
    std::size_t elements = 0;
  };
  auto add_up = [&](const std::vector<allocator_state::adapter_shape>& list, const char* what,
                    bool whole) -> std::variant<sums, allocator_state_problem> {
    std::set<std::string_view> names;
    sums z;
    for (std::size_t i = 0; i < list.size(); ++i) {
      const auto& a = list[i];
      const std::string which = std::string(what) + " " + std::to_string(i) + " ('" + a.name.substr(0, 64) + "')";
      if (a.name.empty()) return allocator_state_problem{false, std::string(what) + " " + std::to_string(i) + " has an empty name"};
      if (!names.insert(a.name).second) return allocator_state_problem{false, which + " appears twice"};
      if (whole && (a.in == 0 || a.out == 0))
        return allocator_state_problem{false, which + " has in " + std::to_string(a.in) + " and out " +
                                                  std::to_string(a.out) + "; both must be positive"};
      const auto in_1 = checked_add(a.in, 1);
      const auto width = in_1 ? checked_add(*in_1, a.out) : std::nullopt;
      const auto n = width ? checked_mul(a.r, *width) : std::nullopt;
      const auto total = n ? checked_add(z.elements, *n) : std::nullopt;
      const auto budget = a.r <= max_elements_of<float> ? checked_add_i64(z.b0, static_cast<std::int64_t>(a.r))
                                                         : std::nullopt;
      if (!total || *total > max_elements_of<float> || !budget)
        return allocator_state_problem{false, which + " (r " + std::to_string(a.r) + ", in " + std::to_string(a.in) +
                                                  ", out " + std::to_string(a.out) +
                                                  ") makes the adapters' sizes overflow"};
      z.elements = *total;
      z.b0 = *budget;
    }
    return z;
  };
  // keep, scores and the budget run over this allocator's adapters, or (a rank of a partitioned run, whose adapters
  // are parts that may hold no column or row) the union's
  const bool partitioned = s.distributed && s.distributed->ownership == "partitioned";
  const auto local = add_up(s.adapters, "adapter", !partitioned);
  if (const auto* p = std::get_if<allocator_state_problem>(&local)) return *p;
  const std::size_t elements = std::get<sums>(local).elements;
  std::int64_t b0 = std::get<sums>(local).b0;
  std::size_t adapter_count = s.adapters.size();
  if (partitioned) {
    const auto global = add_up(s.distributed->global_adapters, "global adapter", true);
    if (const auto* p = std::get_if<allocator_state_problem>(&global)) return *p;
    b0 = std::get<sums>(global).b0;
    adapter_count = s.distributed->global_adapters.size();
  }
  const auto ub0 = static_cast<std::size_t>(b0);
  auto sized = [&](std::size_t size, const char* what) {
    return size == 0 || size == ub0 ? std::optional<allocator_state_problem>()
                                    : problem(std::string(what) + " has " + std::to_string(size) +
                                              " entries; the adapters' ranks sum to " + std::to_string(ub0));
  };
  if (auto p = sized(s.keep.size(), "the rank pattern (keep)")) return p;
  if (auto p = sized(s.scores.size(), "the triplet scores")) return p;
  if (std::any_of(s.keep.begin(), s.keep.end(), [](std::uint8_t k) { return k > 1; }))
    return problem("the rank pattern (keep) holds a value other than 0 and 1");
  auto count_non_finite = [](const std::vector<float>& v) {
    return std::count_if(v.begin(), v.end(), [](float x) { return !std::isfinite(x); });
  };
  if (const auto bad = count_non_finite(s.importance))
    return problem("the importance holds " + std::to_string(bad) + " NaN or infinite values", true);
  if (const auto bad = count_non_finite(s.scores))
    return problem("the triplet scores hold " + std::to_string(bad) + " NaN or infinite values", true);
  if (s.threshold && !std::isfinite(*s.threshold))
    return problem("the threshold is " + std::to_string(*s.threshold), true);
  if (s.importance_live) {
    if (elements == 0 ? !s.importance.empty() : s.importance.empty() || s.importance.size() % elements != 0)
      return problem("the importance holds " + std::to_string(s.importance.size()) +
                     " values, not a whole number of planes of the adapters' " + std::to_string(elements) +
                     " parameters");
  } else if (!s.importance.empty()) {
    return problem("the importance holds values but is marked as not live");
  }
  if (s.last_step && *s.last_step < 0) return problem("last_step is " + std::to_string(*s.last_step));
  const bool started = s.last_step.has_value();
  const bool past_final = started && *s.last_step >= s.config.final_step();
  if (s.frozen != past_final)
    return problem(std::string("the pattern is ") + (s.frozen ? "" : "not ") + "frozen at last step " +
                   (started ? std::to_string(*s.last_step) : std::string("none")) +
                   ", but it is frozen exactly from total_step - tfinal = " + std::to_string(s.config.final_step()));
  if (s.frozen && s.keep.empty() && b0 > 0) return problem("the pattern is frozen but the checkpoint holds none");
  if (s.importance_live != (started && !s.frozen))
    return problem(std::string("the importance is ") + (s.importance_live ? "" : "not ") +
                   "live, but it is live exactly from the first step until the pattern is frozen");
  if (started) {
    const auto target = checked_mul_i64(s.config.target_r, static_cast<std::int64_t>(adapter_count));
    if (!target || s.budget < *target || s.budget > b0)
      return problem("the budget " + std::to_string(s.budget) + " is outside [target_r × adapters, the sum of the "
                     "ranks = " + std::to_string(b0) + "]");
  }
  return std::nullopt;
}

}  // namespace adalora
