// The BudgetSchedule concept: how the global rank budget falls between warm-up and the final phase.
#pragma once

#include <concepts>
#include <cstdint>

namespace adalora {

/// Tag that a budget schedule names as its `budget_schedule_concept` to join the concept on purpose.
struct budget_schedule_tag {};

/// Where the allocator stands when it asks a schedule for a budget (only for tinit < step < final_step).
struct schedule_point {
  std::int64_t step;            ///< t
  std::int64_t tinit;           ///< warm-up ends here
  std::int64_t final_step;      ///< T − tfinal: the budget reaches target_budget here
  std::int64_t initial_budget;  ///< b0, the sum of the adapters' initial ranks
  std::int64_t target_budget;   ///< bT, target_r × number of adapters

  /// 1 − (t − tinit) / (T − tfinal − tinit), in double: 1 just after warm-up, 0 at the final step.
  constexpr double remaining() const noexcept {
    return 1.0 - static_cast<double>(step - tinit) / static_cast<double>(final_step - tinit);
  }
};

/// A budget schedule:
///  1. names `budget_schedule_tag` as its `budget_schedule_concept`;
///  2. `s.budget(point)` returns the budget at `point.step`, between target_budget and initial_budget
///     (the allocator checks this and refuses a schedule that leaves the range);
///  3. `S::name` names it in messages.
/// The phases around it are the allocator's: the full budget up to tinit, masking every deltaT steps, the forced
/// mask at T − tfinal and the frozen pattern after it (SPEC §4).
template <class S>
concept BudgetSchedule = std::same_as<typename S::budget_schedule_concept, budget_schedule_tag> &&
                         std::copy_constructible<S> && requires(const S& s, const schedule_point& p) {
                           { s.budget(p) } -> std::convertible_to<std::int64_t>;
                           { S::name } -> std::convertible_to<const char*>;
                         };

}  // namespace adalora
