// The constant budget schedule: the target budget right after warm-up (prune once, then keep re-selecting).
#pragma once

#include <cstdint>

#include "adalora/schedules/budget_schedule.hpp"

namespace adalora {

struct constant_schedule {
  using budget_schedule_concept = budget_schedule_tag;
  static constexpr const char* name = "constant";

  std::int64_t budget(const schedule_point& p) const noexcept { return p.target_budget; }
};

static_assert(BudgetSchedule<constant_schedule>);

}  // namespace adalora
