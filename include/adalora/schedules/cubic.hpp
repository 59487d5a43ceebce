// The cubic budget schedule (SPEC §4, PEFT's default): b = trunc(bT + (b0 − bT)·m³).
#pragma once

#include <cmath>
#include <cstdint>

#include "adalora/schedules/budget_schedule.hpp"

namespace adalora {

/// Budget falls fast at first and flattens towards the target; computed in double exactly as PEFT does.
struct cubic_schedule {
  using budget_schedule_concept = budget_schedule_tag;
  static constexpr const char* name = "cubic";

  std::int64_t budget(const schedule_point& p) const noexcept {
    const double m = p.remaining();
    return static_cast<std::int64_t>(static_cast<double>(p.initial_budget - p.target_budget) * std::pow(m, 3.0) +
                                     static_cast<double>(p.target_budget));
  }
};

static_assert(BudgetSchedule<cubic_schedule>);

}  // namespace adalora
