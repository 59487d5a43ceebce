// The ImportanceMetric concept (a per-element, host+device functor that folds (θ, ∇θ) into state and scores it) and
// BoundedImportanceMetric, whose input bound lets in-place state clear a step with a read-only check.
#pragma once

#include <concepts>
#include <cstddef>

namespace adalora {

/// Tag that an importance metric names as its `importance_metric_concept` to join the concept on purpose.
struct importance_metric_tag {};

/// An importance metric scores every element of P, Λ and Q from its value and gradient:
///  1. names `importance_metric_tag` as its `importance_metric_concept`;
///  2. `M::state_count` (≥ 1) floats of state per element, zero before the first update;
///  3. `M::needs_gradient` says whether `update` reads the gradient (if so, a missing gradient is an error);
///  4. `m.update(theta, grad, state)` folds one step into `float (&)[state_count]`, const and noexcept,
///     callable on host and device;
///  5. `m.score(state)` returns the element's importance from `const float (&)[state_count]`;
///  6. `M::name` names it in messages.
/// The allocator then scores a singular value i by s(λ_i) + mean_j s(Q_ij) + mean_j s(P_ji) (SPEC §3).
template <class M>
concept ImportanceMetric =
    std::same_as<typename M::importance_metric_concept, importance_metric_tag> && std::copy_constructible<M> &&
    (M::state_count >= 1) && requires(const M& m, float v, float (&s)[M::state_count],
                                      const float (&cs)[M::state_count]) {
      { M::needs_gradient } -> std::convertible_to<bool>;
      { m.update(v, v, s) } noexcept;
      { m.score(cs) } -> std::convertible_to<float>;
      { M::name } -> std::convertible_to<const char*>;
    };

/// An importance metric whose update the in-place state policies can clear by looking at θ and ∇θ alone (a
/// read-only pass over the inputs; for other metrics they try the whole update without storing it first):
///  1. an ImportanceMetric;
///  2. `m.input_size(theta, grad)` (const, noexcept, host and device) returns a float that is not ≤ M::safe_bound —
///     NaN, infinite or larger — whenever θ (or, if M::needs_gradient, ∇θ) is NaN or infinite;
///  3. `M::safe_bound` (a float): from state values of magnitude ≤ safe_bound and inputs whose input_size is
///     ≤ safe_bound, `update` gives finite state values and `score` a score of magnitude ≤ bounded_score_limit.
///     (That limit leaves room for the triplet sums: a line of up to 2^26 element scores sums, and three means add,
///     without leaving float's range, so a cleared mask step cannot produce a non-finite triplet score either.)
inline constexpr float bounded_score_limit = 0x1p100f;
/// The longest line (a row of Q, a column of P) whose element scores, each within bounded_score_limit, sum in float's
/// range: 2^26 · 2^100 = 2^126, and a triplet score adds three terms of at most that.
inline constexpr std::size_t bounded_line_elements = std::size_t{1} << 26;
static_assert(3.0 * static_cast<double>(bounded_line_elements) * static_cast<double>(bounded_score_limit) < 0x1p128);

template <class M>
concept BoundedImportanceMetric = ImportanceMetric<M> && requires(const M& m, float v) {
  { m.input_size(v, v) } noexcept -> std::same_as<float>;
  { M::safe_bound } -> std::convertible_to<float>;
};

}  // namespace adalora
