// How rank_allocator stores the importance state (element type, one arena or two) and keeps a refused step harmless.
#pragma once

#include <concepts>
#include <cstddef>

#include "adalora/core/bfloat16.hpp"

namespace adalora {

/// Tag that a state policy names as its `state_policy_concept` to join the StatePolicy concept on purpose.
struct state_policy_tag {};

/// A state policy says how rank_allocator keeps the importance metric's per-element state (e.g. the two EMAs of
/// sensitivity_uncertainty) and how a step keeps its promise that a refused step (a NaN or infinite input) changes
/// nothing:
///  1. names `state_policy_tag` as its `state_policy_concept`;
///  2. `P::value_type` is `float` or `bfloat16`: one stored state value. The metric always computes in float; a
///     bfloat16 value is widened exactly when read and rounded to nearest (ties to even) when written;
///  3. `P::buffers` is 2 or 1:
///     2 — double-buffered: the pass reads one arena and writes the other, which replaces the first only when every
///         input was finite (one pass, twice the memory);
///     1 — in place: a read-only check of the inputs runs first (θ and g of every element against the metric's
///         safe bound, see BoundedImportanceMetric), and only then does the pass overwrite the state;
///  4. `P::name` names it in messages and checkpoints.
/// The state takes buffers × state_count × sizeof(value_type) bytes per adapter parameter
/// (state_bytes_per_parameter).
template <class P>
concept StatePolicy = std::same_as<typename P::state_policy_concept, state_policy_tag> &&
                      (std::same_as<typename P::value_type, float> ||
                       std::same_as<typename P::value_type, bfloat16>)&&(P::buffers == 1 || P::buffers == 2) &&
                      requires {
  { P::name } -> std::convertible_to<const char*>;
};

/// Two float32 arenas (16 B per parameter for the default metric): each step reads one and writes the other. One
/// pass over θ, g and the state per step; on a GPU the fastest policy (a CPU also reads the arena it writes:
/// write-allocate).
struct double_buffered_state {
  using state_policy_concept = state_policy_tag;
  using value_type = float;
  static constexpr std::size_t buffers = 2;
  static constexpr const char* name = "double_buffered";
};

/// One float32 arena (8 B per parameter for the default metric), updated in place after a read-only check of θ and g.
/// The default: half the memory of double_buffered_state and the same results bit for bit (PEFT-exact).
struct in_place_state {
  using state_policy_concept = state_policy_tag;
  using value_type = float;
  static constexpr std::size_t buffers = 1;
  static constexpr const char* name = "in_place";
};

/// One bfloat16 arena (4 B per parameter for the default metric), updated in place as in_place_state. Not PEFT-exact:
/// every stored EMA is rounded to 8 significant bits, which moves scores by up to 2^-8 relative and can change which
/// singular values a selection keeps near the threshold (measured in benchmarks/README.md, "bf16 importance state").
struct in_place_bf16_state {
  using state_policy_concept = state_policy_tag;
  using value_type = bfloat16;
  static constexpr std::size_t buffers = 1;
  static constexpr const char* name = "in_place_bf16";
};

static_assert(StatePolicy<double_buffered_state>);
static_assert(StatePolicy<in_place_state>);
static_assert(StatePolicy<in_place_bf16_state>);

/// Bytes of importance state a policy holds per adapter parameter for a metric with `state_count` values per element.
template <StatePolicy P>
constexpr std::size_t state_bytes_per_parameter(std::size_t state_count) noexcept {
  return P::buffers * state_count * sizeof(typename P::value_type);
}

/// The name of a state value type in checkpoints and messages: "float32" or "bfloat16".
template <StatePolicy P>
constexpr const char* state_value_name() noexcept {
  if constexpr (std::same_as<typename P::value_type, bfloat16>)
    return "bfloat16";
  else
    return "float32";
}

}  // namespace adalora
