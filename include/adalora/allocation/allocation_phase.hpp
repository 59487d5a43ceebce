// The phases of an AdaLoRA run (SPEC §4) and the report of one allocator step.
#pragma once

#include <cstdint>
#include <optional>

#include "adalora/core/config.hpp"

namespace adalora {

/// Where step t falls in the run.
enum class allocation_phase {
  warmup,         ///< t ≤ tinit: full budget, importance accumulates, no masking
  budgeting,      ///< tinit < t < T − tfinal: the schedule's budget, masking every deltaT steps
  final_force,    ///< the first step at or past T − tfinal: forced mask to bT, pattern frozen, importance released
  final_pattern,  ///< afterwards: the frozen pattern is re-applied to Λ every step
};

/// PEFT's word for a phase, as in the reference traces: "update", "final_force" or "final_pattern".
constexpr const char* trace_phase_name(allocation_phase p) noexcept {
  switch (p) {
    case allocation_phase::warmup:
    case allocation_phase::budgeting: return "update";
    case allocation_phase::final_force: return "final_force";
    case allocation_phase::final_pattern: return "final_pattern";
  }
  return "?";
}

constexpr const char* phase_name(allocation_phase p) noexcept {
  switch (p) {
    case allocation_phase::warmup: return "warmup";
    case allocation_phase::budgeting: return "budgeting";
    case allocation_phase::final_force: return "final_force";
    case allocation_phase::final_pattern: return "final_pattern";
  }
  return "?";
}

/// What one call of rank_allocator::step(t) did.
struct step_report {
  std::int64_t step = 0;
  allocation_phase phase = allocation_phase::warmup;
  std::int64_t budget = 0;             ///< the budget at this step
  bool importance_updated = false;     ///< the metric folded in this step's parameters and gradients
  bool masked = false;                 ///< Λ was masked (by a new selection or by the frozen pattern)
  std::optional<float> threshold;      ///< the k-th smallest triplet score, where a selection pruned anything
};

}  // namespace adalora
