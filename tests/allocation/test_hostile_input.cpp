// Hostile input to the allocator: sizes that overflow, states that no allocator saves, 100,000 adapters, two threads.
// Each is refused with a typed error that names the problem and changes nothing.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>
#include <thread>
#include <vector>

#include "adalora/allocation/rank_allocator.hpp"
#include "adalora/backends/eigen/eigen_backend.hpp"
#include "support/adapter_fixture.hpp"
#include "support/allocator_configs.hpp"
#include "support/backends_under_test.hpp"

using namespace adalora;
using adalora::testing::adapter_fixture;
using adalora::testing::error_allocator_config;
using adalora::testing::backends_under_test;

namespace {
/// Host views of one adapter with the given extents over a single float: registration must refuse them before any
/// element is read, so the memory they claim need not exist.
svd_adapter_views<float> claimed_views(float* p, std::size_t r, std::size_t in, std::size_t out) {
  return {make_matrix_view(p, r, in),        make_vector_view(p, r),        make_matrix_view(p, out, r),
          make_matrix_view<host_space, const float>(p, r, in), make_vector_view<host_space, const float>(p, r),
          make_matrix_view<host_space, const float>(p, out, r)};
}

/// A cubic schedule that, on the step where it is told to, says it has started and waits to be released: a step
/// held in the middle, so that another thread can call the allocator during it.
struct held_schedule {
  using budget_schedule_concept = budget_schedule_tag;
  static constexpr const char* name = "cubic";
  std::atomic<int>* state = nullptr;  // 0: run; 1: hold the next call; 2: holding; 3: released
  std::int64_t budget(const schedule_point& p) const noexcept {
    int expected = 1;
    if (state->compare_exchange_strong(expected, 2))
      while (state->load() != 3) std::this_thread::yield();
    return cubic_schedule{}.budget(p);
  }
};
}  // namespace

TEMPLATE_LIST_TEST_CASE("views whose sizes overflow are refused at registration", "[allocator][hostile][sizes]",
                        backends_under_test) {
  using S = typename TestType::memory_space;
  if constexpr (std::is_same_v<S, host_space>) {
    constexpr std::size_t size_max = std::numeric_limits<std::size_t>::max();
    float x = 0.0f;
    rank_allocator<TestType> alloc(error_allocator_config());
    // issue 17: out = SIZE_MAX was accepted, and the first step overflowed the state buffer
    REQUIRE_THROWS_AS(alloc.add_adapter("m", claimed_views(&x, 4, 2, size_max)), shape_error);
    REQUIRE_THROWS_WITH(alloc.add_adapter("m", claimed_views(&x, 4, 2, size_max)),
                        Catch::Contains("adapter 'm': lora_B: extent 18446744073709551615"));
    // a negative int64 passed as a size
    const auto negative = static_cast<std::size_t>(std::int64_t{-3});
    REQUIRE_THROWS_WITH(alloc.add_adapter("m", claimed_views(&x, 4, negative, 3)), Catch::Contains("lora_A: extent"));
    REQUIRE_THROWS_WITH(alloc.add_adapter("m", claimed_views(&x, negative, 2, 3)), Catch::Contains("lora_A: extent"));
    // every extent fits, r × in does not
    REQUIRE_THROWS_WITH(alloc.add_adapter("m", claimed_views(&x, std::size_t{1} << 32, std::size_t{1} << 32, 1)),
                        Catch::Contains("hold more elements than one object can"));
    // strides that reach beyond ptrdiff_t
    auto strided = claimed_views(&x, 4, 2, 3);
    strided.lora_A.strides = {std::numeric_limits<std::ptrdiff_t>::max() / 2, 1};
    REQUIRE_THROWS_WITH(alloc.add_adapter("m", strided), Catch::Contains("lora_A: extents (4, 2) with strides"));
    // each adapter fits, the importance state of all of them (2 buffers × 2 planes × Σ r·(in + 1 + out)) does not
    const std::size_t big = std::size_t{1} << 58;
    alloc.add_adapter("big", claimed_views(&x, 1, big, 1));
    REQUIRE_THROWS_WITH(alloc.add_adapter("big2", claimed_views(&x, 1, big, 1)),
                        Catch::Contains("add_adapter('big2'): the importance state of all adapters"));
    REQUIRE(alloc.adapter_count() == 1);
    REQUIRE(alloc.initial_budget() == 1);
    // rebind checks the new views too (same extents, strides that overflow)
    auto rebound = claimed_views(&x, 1, big, 1);
    rebound.lora_A.strides = {1, 64};
    REQUIRE_THROWS_WITH(alloc.rebind("big", rebound), Catch::Contains("reach offsets beyond"));
  }
}

TEMPLATE_LIST_TEST_CASE("target_r × adapters that overflows int64 is a config error", "[allocator][hostile][sizes]",
                        backends_under_test) {
  adalora_config c = error_allocator_config();
  c.init_r = c.target_r = std::numeric_limits<std::int64_t>::max();
  adapter_fixture<TestType> fx(TestType{}, {{4, 5, 3}, {4, 2, 6}}, 3);
  rank_allocator<TestType> alloc(c);
  alloc.add_adapter(fx.name(0), fx.views(0));
  alloc.add_adapter(fx.name(1), fx.views(1));
  fx.perturb();
  fx.upload();
  const auto before = fx.lambda(0);
  REQUIRE_THROWS_AS(alloc.step(0), config_error);
  REQUIRE_THROWS_WITH(alloc.step(0), Catch::Contains("target_r × adapters = 9223372036854775807 × 2 overflows int64"));
  REQUIRE(alloc.target_budget() == std::numeric_limits<std::int64_t>::max());
  REQUIRE_FALSE(alloc.last_step().has_value());
  REQUIRE(fx.lambda(0) == before);
}

TEMPLATE_LIST_TEST_CASE("a state no allocator saves is refused by restore_state, changing nothing",
                        "[allocator][hostile][checkpoint]", backends_under_test) {
  const adalora_config cfg = error_allocator_config();
  // a runs throughout; b's fixture gets the same values, and b restores a's state after step 3
  adapter_fixture<TestType> fa(TestType{}, {{4, 5, 3}, {4, 2, 6}}, 5), fb(TestType{}, {{4, 5, 3}, {4, 2, 6}}, 5);
  rank_allocator<TestType> a(cfg), b(cfg), twin(cfg);
  for (std::size_t k = 0; k < 2; ++k) {
    a.add_adapter(fa.name(k), fa.views(k));
    twin.add_adapter(fb.name(k), fb.views(k));
    b.add_adapter(fb.name(k), fb.views(k));
  }
  for (std::int64_t t = 0; t < 4; ++t) {
    fa.perturb();
    fb.perturb();
    fa.upload();
    fb.upload();
    a.step(t);
    twin.step(t);  // masks fb's λ as a masks fa's
  }
  const allocator_state good = a.save_state();
  REQUIRE(good.importance_live);
  REQUIRE(find_allocator_state_problem(good) == std::nullopt);
  auto refused = [&](allocator_state s, const char* message) {
    INFO(message);
    REQUIRE_THROWS_WITH(b.restore_state(s), Catch::Contains(message));
    REQUIRE_FALSE(b.last_step().has_value());
    REQUIRE_FALSE(b.importance_live());
  };
  // issue 17: an importance edited to NaN was restored, and the next mask step pruned every adapter to rank 0
  auto nan_importance = good;
  nan_importance.importance[3] = std::numeric_limits<float>::quiet_NaN();
  REQUIRE_THROWS_AS(b.restore_state(nan_importance), non_finite_error);
  refused(nan_importance, "the importance holds 1 NaN or infinite values");
  auto inf_score = good;
  inf_score.scores[0] = std::numeric_limits<float>::infinity();
  refused(inf_score, "the triplet scores hold 1 NaN or infinite values");
  auto inf_threshold = good;
  inf_threshold.threshold = -std::numeric_limits<float>::infinity();
  refused(inf_threshold, "the threshold is -inf");
  // every config field is compared, lora_alpha and orth_reg_weight included
  auto alpha = good;
  alpha.config.lora_alpha = 16.0;
  refused(alpha, "the configs differ (lora_alpha: 16 vs 8)");
  auto orth = good;
  orth.config.orth_reg_weight = 0.1;
  refused(orth, "the configs differ (orth_reg_weight: 0.10000000000000001 vs 0.5)");
  auto dropout = good;
  dropout.config.lora_dropout = 0.1;
  refused(dropout, "lora_dropout");
  // states that contradict themselves
  auto short_keep = good;
  short_keep.keep.pop_back();
  refused(short_keep, "the rank pattern (keep) has 7 entries; the adapters' ranks sum to 8");
  auto odd_keep = good;
  odd_keep.keep[0] = 7;
  refused(odd_keep, "holds a value other than 0 and 1");
  auto partial_plane = good;
  partial_plane.importance.pop_back();
  refused(partial_plane, "not a whole number of planes");
  auto frozen_early = good;
  frozen_early.frozen = true;
  refused(frozen_early, "the pattern is frozen at last step 3");
  auto dead_importance = good;
  dead_importance.importance_live = false;
  refused(dead_importance, "the importance holds values but is marked as not live");
  auto no_step = good;
  no_step.last_step.reset();
  refused(no_step, "live exactly from the first step");
  auto negative_step = good;
  negative_step.last_step = -2;
  refused(negative_step, "last_step is -2");
  auto wild_budget = good;
  wild_budget.budget = 1000;
  refused(wild_budget, "the budget 1000 is outside [target_r × adapters");
  // the good state itself restores, and both allocators go on identically
  b.restore_state(good);
  for (std::int64_t t = 4; t < cfg.total_step; ++t) {
    fa.perturb();
    fb.perturb();
    fa.upload();
    fb.upload();
    const auto ra = a.step(t);
    const auto rb = b.step(t);
    REQUIRE(ra.threshold == rb.threshold);
    REQUIRE(a.ranks() == b.ranks());
    REQUIRE(fa.lambda(0) == fb.lambda(0));
  }
}

TEST_CASE("registering 100,000 adapters takes O(n log n)", "[allocator][hostile][registration]") {
  // issue 17: add_adapter looked names up one by one; 100,000 adapters took 75 s (30,000: 4.5 s). A mixture of
  // experts with 100,000 adapted modules is real. This is a guard against quadratic work, not a speed figure: it
  // allows 20 s for what takes well under a second (and several minutes when quadratic) even under the sanitizers.
  constexpr std::size_t n = 100'000;
  adalora_config c = error_allocator_config();
  c.init_r = 1;
  c.target_r = 1;
  std::vector<float> params(3 * n, 0.5f), grads(3 * n, 0.25f);
  rank_allocator<eigen_backend> alloc(c);
  const auto start = std::chrono::steady_clock::now();
  for (std::size_t k = 0; k < n; ++k) {
    float* p = params.data() + 3 * k;
    const float* g = grads.data() + 3 * k;
    alloc.add_adapter("model.layers." + std::to_string(k / 64) + ".mlp.experts." + std::to_string(k % 64) + ".up",
                      {make_matrix_view(p, 1, 1), make_vector_view(p + 1, 1), make_matrix_view(p + 2, 1, 1),
                       make_matrix_view(g, 1, 1), make_vector_view(g + 1, 1), make_matrix_view(g + 2, 1, 1)});
  }
  REQUIRE(alloc.adapter_count() == n);
  REQUIRE_THROWS_WITH(alloc.add_adapter("model.layers.7.mlp.experts.3.up", {}), Catch::Contains("already registered"));
  REQUIRE(alloc.adapter_index("model.layers.1562.mlp.experts.31.up") == 1562 * 64 + 31);
  alloc.step(0);
  REQUIRE(alloc.ranks() == std::vector<std::int64_t>(n, 1));
  for (std::size_t k = 0; k < n; k += 997)
    REQUIRE(alloc.rank_pattern(alloc.adapter_name(k)) == std::vector<bool>{true});
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  INFO("registration, lookups and one step of " << n << " adapters took " << seconds << " s");
  REQUIRE(seconds < 20.0);
}

TEMPLATE_LIST_TEST_CASE("a call that overlaps a step on another thread is a usage error", "[allocator][threads]",
                        backends_under_test) {
  std::atomic<int> hold{0};
  const adalora_config cfg = error_allocator_config();
  adapter_fixture<TestType> fx(TestType{}, {{4, 5, 3}, {4, 2, 6}}, 9);
  rank_allocator<TestType, sensitivity_uncertainty, held_schedule> alloc(cfg, sensitivity_uncertainty(cfg),
                                                                         held_schedule{&hold});
  for (std::size_t k = 0; k < 2; ++k) alloc.add_adapter(fx.name(k), fx.views(k));
  fx.perturb();
  fx.upload();
  alloc.step(0);
  alloc.step(1);
  const auto state_before = alloc.save_state();
  hold = 1;  // step 2 (budgeting) asks the schedule for its budget and waits there
  std::thread trainer([&] { alloc.step(2); });
  while (hold.load() != 2) std::this_thread::yield();
  // issue 17: two threads calling step both "succeeded", racing on the allocator's buffers
  REQUIRE_THROWS_AS(alloc.step(3), usage_error);
  REQUIRE_THROWS_WITH(alloc.step(3), Catch::Contains("step: another call on this rank_allocator is running"));
  REQUIRE_THROWS_WITH(alloc.ranks(), Catch::Contains("ranks: another call on this rank_allocator is running"));
  REQUIRE_THROWS_WITH(alloc.save_state(), Catch::Contains("save_state: another call"));
  REQUIRE_THROWS_WITH(alloc.rebind(fx.name(0), fx.views(0)), Catch::Contains("rebind: another call"));
  REQUIRE_THROWS_WITH(alloc.restore_state(state_before), Catch::Contains("restore_state: another call"));
  hold = 3;
  trainer.join();
  // the held step completed; the refused calls changed nothing, and the allocator goes on
  REQUIRE(alloc.last_step() == 2);
  REQUIRE_NOTHROW(alloc.step(3));
  REQUIRE(alloc.ranks().size() == 2);
}
