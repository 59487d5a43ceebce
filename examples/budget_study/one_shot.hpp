// budget_study: allocation before training as a plug-in (GoRA-style): gather gradient sensitivity over a few warm-up
// steps, then fix the ranks once. Written as a user would, against the public ImportanceMetric concept and the config.
//
// Usage:
//   adalora::adalora_config cfg = ...;                          // init_r, target_r, total_step, ...
//   cfg = budget_study::one_shot::config(cfg, 100);            // gather over steps 0..99, fix the ranks at step 100
//   adalora::rank_allocator<adalora::eigen_backend, budget_study::one_shot::warmup_sensitivity> allocator(cfg);
//   // then call allocator.step(t) after every optimizer step as usual
//
// The "schedule" half of the plug-in is the config, not a BudgetSchedule: with tinit = W − 1 and tfinal = T − W the
// allocator's own phases (SPEC §4) do exactly this — steps 0 … W − 1 are warm-up (full budget, importance updated, no
// masking), step W = T − tfinal is the forced mask to the target budget from the importance gathered so far, which is
// frozen, re-applied to Λ on every later step, and the importance state released. No step falls between tinit and
// T − tfinal, so the allocator never consults its schedule and deltaT does not matter: the plug-in needs no new
// concept and no change to the library, and PEFT's own RankAllocator runs the same config the same way.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>

#include "adalora/core/config.hpp"
#include "adalora/core/error.hpp"
#include "adalora/importance/importance_metric.hpp"

namespace budget_study::one_shot {

/// The sensitivity |θ·∇θ| summed over every update: the decision is taken once, from the whole warm-up window, so every
/// step of the window counts the same (an EMA would decide from the last few steps only).
struct warmup_sensitivity {
  using importance_metric_concept = adalora::importance_metric_tag;
  static constexpr std::size_t state_count = 1;  // [0] Σ |θ·∇θ|
  static constexpr bool needs_gradient = true;
  static constexpr const char* name = "warmup_sensitivity";

  void update(float theta, float grad, float (&state)[state_count]) const noexcept {
    state[0] += std::abs(theta * grad);
  }
  float score(const float (&state)[state_count]) const noexcept { return state[0]; }
};

static_assert(adalora::ImportanceMetric<warmup_sensitivity>);

/// `c` with the phases of a one-time allocation after `warmup_steps` steps: tinit = warmup_steps − 1 and
/// tfinal = total_step − warmup_steps, so the final rank pattern is chosen and frozen at step warmup_steps.
/// Throws adalora::config_error (before returning anything) unless 1 ≤ warmup_steps < total_step and the rest of `c`
/// is valid.
inline adalora::adalora_config config(adalora::adalora_config c, std::int64_t warmup_steps) {
  if (warmup_steps < 1 || warmup_steps >= c.total_step)
    throw adalora::config_error("one_shot::config: warmup_steps = " + std::to_string(warmup_steps) +
                                " with total_step = " + std::to_string(c.total_step) +
                                "; need 1 <= warmup_steps < total_step (the ranks are fixed at step warmup_steps, "
                                "which must be a step of the run)");
  c.tinit = warmup_steps - 1;
  c.tfinal = c.total_step - warmup_steps;
  c.validate();
  return c;
}

}  // namespace budget_study::one_shot
