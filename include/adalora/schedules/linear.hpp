// The linear budget schedule: b = trunc(bT + (b0 − bT)·m), the budget falls by the same amount each step.
#pragma once

#include <cstdint>

#include "adalora/schedules/budget_schedule.hpp"

namespace adalora {

struct linear_schedule {
  using budget_schedule_concept = budget_schedule_tag;
  static constexpr const char* name = "linear";

  std::int64_t budget(const schedule_point& p) const noexcept {
    return static_cast<std::int64_t>(static_cast<double>(p.initial_budget - p.target_budget) * p.remaining() +
                                     static_cast<double>(p.target_budget));
  }
};

static_assert(BudgetSchedule<linear_schedule>);

}  // namespace adalora
