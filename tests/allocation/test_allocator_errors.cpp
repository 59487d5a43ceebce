// Bad input to the allocator: each case throws a typed error with a clear message and changes nothing.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <string>

#include "adalora/allocation/rank_allocator.hpp"
#include "support/adapter_fixture.hpp"
#include "support/allocator_configs.hpp"
#include "support/backends_under_test.hpp"

using namespace adalora;
using adalora::testing::adapter_fixture;
using adalora::testing::error_allocator_config;
using adalora::testing::backends_under_test;

namespace {
/// Runs a healthy allocator and a twin that also meets a failing call at `fail_at`; after the failure both must
/// stay identical (λ, budgets, patterns), proving the failed call changed nothing.
template <class B, StatePolicy P = in_place_state, class Break, class Mend>
void check_failure_changes_nothing(std::int64_t fail_at, Break break_inputs, Mend mend_inputs,
                                   const char* message_fragment) {
  const adalora_config cfg = error_allocator_config();
  adapter_fixture<B> a(B{}, {{4, 5, 3}, {4, 2, 6}}, 77), b(B{}, {{4, 5, 3}, {4, 2, 6}}, 77);
  using allocator = rank_allocator<B, sensitivity_uncertainty, cubic_schedule, float, self_communicator, P>;
  allocator healthy(cfg), twin(cfg);
  for (std::size_t k = 0; k < 2; ++k) {
    healthy.add_adapter(a.name(k), a.views(k));
    twin.add_adapter(b.name(k), b.views(k));
  }
  for (std::int64_t t = 0; t < cfg.total_step + 2; ++t) {
    a.perturb();
    b.perturb();
    a.upload();
    b.upload();
    if (t == fail_at) {
      const auto lambda_before = b.lambda(0);
      const auto state_before = twin.save_state();
      break_inputs(twin, b);
      REQUIRE_THROWS_WITH(twin.step(t), Catch::Contains(message_fragment));
      REQUIRE(b.lambda(0) == lambda_before);
      const auto state_after = twin.save_state();  // the importance was not replaced (or overwritten in place)
      REQUIRE(state_after.importance_live == state_before.importance_live);
      REQUIRE(state_after.importance == state_before.importance);
      REQUIRE(twin.last_step() == (t ? std::optional<std::int64_t>(t - 1) : std::nullopt));
      mend_inputs(twin, b);
    }
    const auto ra = healthy.step(t);
    const auto rb = twin.step(t);
    REQUIRE(ra.budget == rb.budget);
    REQUIRE(ra.threshold == rb.threshold);
    for (std::size_t k = 0; k < 2; ++k) {
      REQUIRE(a.lambda(k) == b.lambda(k));
      REQUIRE(healthy.rank_pattern(a.name(k)) == twin.rank_pattern(b.name(k)));
    }
  }
}
/// A broken user schedule: above the initial budget.
struct overshoot {
  using budget_schedule_concept = budget_schedule_tag;
  static constexpr const char* name = "overshoot";
  std::int64_t budget(const schedule_point& p) const noexcept { return p.initial_budget + 1; }
};
}  // namespace

TEMPLATE_LIST_TEST_CASE("a missing gradient is a clear error that changes nothing", "[allocator][errors]",
                        backends_under_test) {
  for (std::int64_t at : {0, 4}) {
    check_failure_changes_nothing<TestType>(
        at,
        [](auto& alloc, auto& fx) {
          auto v = fx.views(1);
          v.grad_B = {};
          alloc.rebind(fx.name(1), v);
        },
        [](auto& alloc, auto& fx) { alloc.rebind(fx.name(1), fx.views(1)); },
        "adapter 'layers.0.v' has no gradient for lora_B");
  }
}

TEMPLATE_LIST_TEST_CASE("a non-finite gradient or parameter is a clear error that changes nothing",
                        "[allocator][errors]", backends_under_test) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  auto each_policy = [&]<StatePolicy P>() {
    INFO("state policy " << P::name);
    check_failure_changes_nothing<TestType, P>(
        5, [&](auto&, auto& fx) { fx.poke(0, "gA", 3, nan); }, [](auto&, auto& fx) { fx.upload(); },
        "the gradient of lora_A has 1 of 20 elements NaN or infinite");
    check_failure_changes_nothing<TestType, P>(
        6, [&](auto&, auto& fx) { fx.poke(1, "E", 2, -inf); }, [](auto&, auto& fx) { fx.upload(); },
        "adapter 'layers.0.v': lora_E has 1 of 4 elements NaN or infinite");
    // on a mask step, in the last tile
    check_failure_changes_nothing<TestType, P>(
        4, [&](auto&, auto& fx) { fx.poke(1, "gB", 23, inf); }, [](auto&, auto& fx) { fx.upload(); },
        "the gradient of lora_B has 1 of 24 elements NaN or infinite");
  };
  each_policy.template operator()<in_place_state>();
  each_policy.template operator()<double_buffered_state>();
  each_policy.template operator()<in_place_bf16_state>();
}

TEMPLATE_LIST_TEST_CASE("in place and double-buffered agree on inputs beyond the in-place check's bound",
                        "[allocator][errors]", backends_under_test) {
  // |θ·g| = 2^80 is finite but beyond sensitivity_uncertainty's safe bound (2^48): the in-place step tries the update
  // whole before it overwrites anything, and from then on (its state beyond the bound) every step does; so does the
  // first step after restoring a state. |θ·g| = 2^50 (steps 5 and 6, mask steps among them) is just beyond the bound:
  // the check sends those steps to the trial, whose scores must then be the ones the commit keeps; 2^47 (step 4) is
  // just within it. Whatever the library decides about such inputs, both policies must decide
  // the same and hold the same bits afterwards.
  const adalora_config cfg = error_allocator_config();
  adapter_fixture<TestType> a(TestType{}, {{4, 5, 3}, {4, 2, 6}}, 5), b(TestType{}, {{4, 5, 3}, {4, 2, 6}}, 5);
  rank_allocator<TestType, sensitivity_uncertainty, cubic_schedule, float, self_communicator, double_buffered_state> twin(cfg);
  rank_allocator<TestType> in_place(cfg);
  for (std::size_t k = 0; k < 2; ++k) {
    twin.add_adapter(a.name(k), a.views(k));
    in_place.add_adapter(b.name(k), b.views(k));
  }
  for (std::int64_t t = 0; t < cfg.total_step; ++t) {
    a.perturb();
    b.perturb();
    a.upload();
    b.upload();
    if (t == 2 || t == 3) {
      for (auto* fx : {&a, &b}) {
        fx->poke(0, "A", 7, 0x1p40f);
        fx->poke(0, "gA", 7, 0x1p40f);
      }
    }
    if (t == 4) {  // |θ·g| = 2^47, within the bound: the check clears the mask step, its commit leaves the sums
      for (auto* fx : {&a, &b}) {
        fx->poke(1, "B", 2, 0x1p23f);
        fx->poke(1, "gB", 2, 0x1p24f);
      }
    }
    if (t == 5 || t == 6) {
      for (auto* fx : {&a, &b}) {
        fx->poke(1, "B", 3, 0x1p25f);
        fx->poke(1, "gB", 3, 0x1p25f);
      }
    }
    if (t == 8) {  // both resume from a state with a value far beyond the bound (no check can know it)
      auto s = twin.save_state();
      s.importance.at(3) = 0x1p100f;
      twin.restore_state(s);
      in_place.restore_state(s);
    }
    std::string err_a, err_b;
    try {
      twin.step(t);
    } catch (const error& e) {
      err_a = e.what();
    }
    try {
      in_place.step(t);
    } catch (const error& e) {
      err_b = e.what();
    }
    INFO("step " << t);
    REQUIRE(err_a == err_b);
    const auto sa = twin.save_state(), sb = in_place.save_state();
    REQUIRE(sa.importance.size() == sb.importance.size());
    for (std::size_t i = 0; i < sa.importance.size(); ++i)
      REQUIRE(detail::float_to_bits(sa.importance[i]) == detail::float_to_bits(sb.importance[i]));
    REQUIRE(sa.keep == sb.keep);
    for (std::size_t k = 0; k < 2; ++k) REQUIRE(a.lambda(k) == b.lambda(k));
  }
}

TEMPLATE_LIST_TEST_CASE("steps must increase", "[allocator][errors]", backends_under_test) {
  adapter_fixture<TestType> fx(TestType{}, {{4, 5, 3}, {4, 2, 6}}, 1);
  rank_allocator<TestType> alloc(error_allocator_config());
  alloc.add_adapter(fx.name(0), fx.views(0));
  alloc.add_adapter(fx.name(1), fx.views(1));
  fx.perturb();
  fx.upload();
  alloc.step(4);
  REQUIRE_THROWS_AS(alloc.step(4), usage_error);
  REQUIRE_THROWS_WITH(alloc.step(4), Catch::Contains("already ran step 4; steps must increase"));
  REQUIRE_THROWS_WITH(alloc.step(2), Catch::Contains("already ran step 4"));
  REQUIRE_THROWS_WITH(alloc.step(-1), Catch::Contains("steps count optimizer steps from 0"));
  REQUIRE(alloc.last_step() == 4);
  REQUIRE_NOTHROW(alloc.step(6));  // skipping ahead is fine
}

TEMPLATE_LIST_TEST_CASE("registration errors", "[allocator][errors]", backends_under_test) {
  adapter_fixture<TestType> fx(TestType{}, {{4, 5, 3}, {4, 2, 6}}, 1);
  rank_allocator<TestType> alloc(error_allocator_config());
  REQUIRE_THROWS_WITH(alloc.step(0), Catch::Contains("no adapters are registered"));

  auto bad_rank = fx.views(0);
  bad_rank.lora_B.extents = {3, 5};
  REQUIRE_THROWS_AS(alloc.add_adapter("x", bad_rank), shape_error);
  REQUIRE_THROWS_WITH(alloc.add_adapter("x", bad_rank), Catch::Contains("ranks disagree"));

  auto bad_grad = fx.views(0);
  bad_grad.grad_A.extents = {5, 4};
  REQUIRE_THROWS_WITH(alloc.add_adapter("x", bad_grad),
                      Catch::Contains("grad_A is (5, 4) but its parameter is (4, 5)"));

  auto no_in = fx.views(0);
  no_in.lora_A.extents = {4, 0};
  REQUIRE_THROWS_WITH(alloc.add_adapter("x", no_in), Catch::Contains("in_features and out_features must be positive"));

  auto null_data = fx.views(0);
  null_data.lora_E.data = nullptr;
  REQUIRE_THROWS_WITH(alloc.add_adapter("x", null_data), Catch::Contains("lora_E has extents (4) but no data"));

  REQUIRE_THROWS_WITH(alloc.add_adapter("", fx.views(0)), Catch::Contains("name is empty"));
  REQUIRE(alloc.adapter_count() == 0);  // nothing half-registered
  alloc.add_adapter("a", fx.views(0));
  REQUIRE_THROWS_WITH(alloc.add_adapter("a", fx.views(1)), Catch::Contains("already registered"));
  REQUIRE_THROWS_WITH(alloc.rebind("a", fx.views(1)), Catch::Contains("shapes changed"));
  REQUIRE_THROWS_WITH(alloc.rebind("zzz", fx.views(1)), Catch::Contains("no adapter named 'zzz'"));
  alloc.add_adapter("b", fx.views(1));
  REQUIRE(alloc.initial_budget() == 8);
  fx.perturb();
  fx.upload();
  alloc.step(0);
  REQUIRE_THROWS_WITH(alloc.add_adapter("c", fx.views(1)),
                      Catch::Contains("register every adapter before the first step"));
}

TEMPLATE_LIST_TEST_CASE("config errors surface at construction or at the first step", "[allocator][errors]",
                        backends_under_test) {
  adalora_config bad = error_allocator_config();
  bad.tinit = 10;  // = total_step - tfinal
  REQUIRE_THROWS_AS(rank_allocator<TestType>(bad), config_error);
  REQUIRE_THROWS_WITH(rank_allocator<TestType>(bad), Catch::Contains("tinit = 10 is not below total_step - tfinal"));

  // target_r × adapters above the registered ranks (adapters smaller than init_r)
  adalora_config c = error_allocator_config();
  c.target_r = 3;
  adapter_fixture<TestType> fx(TestType{}, {{2, 5, 3}}, 1);
  rank_allocator<TestType> alloc(c);
  alloc.add_adapter("a", fx.views(0));
  REQUIRE_THROWS_WITH(alloc.step(0),
                      Catch::Contains("target_r × adapters = 3 exceeds the sum of the adapters' ranks = 2"));
}

TEMPLATE_LIST_TEST_CASE("the forced mask needs importance from earlier steps", "[allocator][errors]",
                        backends_under_test) {
  adapter_fixture<TestType> fx(TestType{}, {{4, 5, 3}}, 1);
  rank_allocator<TestType> alloc(error_allocator_config());
  alloc.add_adapter("a", fx.views(0));
  REQUIRE_THROWS_WITH(alloc.step(10), Catch::Contains("needs importance from earlier steps"));
  REQUIRE_FALSE(alloc.last_step().has_value());
}

TEMPLATE_LIST_TEST_CASE("a schedule that leaves the budget range is refused", "[allocator][errors]",
                        backends_under_test) {
  adapter_fixture<TestType> fx(TestType{}, {{4, 5, 3}}, 1);
  rank_allocator<TestType, sensitivity_uncertainty, overshoot> alloc(error_allocator_config(),
                                                                     sensitivity_uncertainty(error_allocator_config()));
  alloc.add_adapter("a", fx.views(0));
  fx.perturb();
  fx.upload();
  alloc.step(0);
  alloc.step(1);
  REQUIRE_THROWS_WITH(alloc.step(2),
                      Catch::Contains("schedule 'overshoot' gave budget 5, outside [target 2, initial 4]"));
}

TEMPLATE_LIST_TEST_CASE("finite inputs whose importance overflows are refused and change nothing",
                        "[allocator][errors][hostile]", backends_under_test) {
  // θ = g = 1e20: |θ·g| = 1e40 is beyond float, the importance would be inf/NaN and the adapter pruned for good
  for (std::int64_t at : {0, 5}) {  // a warm-up step, a mask step
    check_failure_changes_nothing<TestType>(
        at,
        [](auto&, auto& fx) {
          fx.poke(1, "B", 4, 1e20f);
          fx.poke(1, "gB", 4, 1e20f);
        },
        [](auto&, auto& fx) { fx.upload(); }, "the importance of adapter 'layers.0.v' (lora_B)");
  }
  // θ = g = 1e12: the importance (about 1e24) fits, its score Ī·Ū (about 1e46) does not: refused on any step too
  for (std::int64_t at : {1, 6}) {
    check_failure_changes_nothing<TestType>(
        at,
        [](auto&, auto& fx) {
          fx.poke(0, "A", 7, 1e12f);
          fx.poke(0, "gA", 7, -1e12f);
        },
        [](auto&, auto& fx) { fx.upload(); }, "adapter 'layers.0.q' (lora_A) (1 tiles in all) or its score");
  }
}

TEMPLATE_LIST_TEST_CASE("finite scores whose triplet sum overflows refuse the mask step and change nothing",
                        "[allocator][errors][hostile]", backends_under_test) {
  // θ = g = 1e10 on Q's row 1: each element's score Ī·Ū is about 1.9e38, within float; the row's mean, summed in
  // double and rounded to float32 as PEFT does, is not, and so neither is the triplet score of singular value 1
  // (PEFT would take an infinite threshold and prune at random)
  // (in place, the check cannot clear such inputs and the mask step's trial with scores refuses it)
  auto each_policy = [&]<StatePolicy P>() {  // (a capture-default: no conversion to a function pointer for nvcc)
    INFO("state policy " << P::name);
    check_failure_changes_nothing<TestType, P>(
        5,
        [](auto&, auto& fx) {
          for (std::size_t j = 0; j < 5; ++j) {
            fx.poke(0, "A", 5 + j, 1e10f);
            fx.poke(0, "gA", 5 + j, 1e10f);
          }
        },
        [](auto&, auto& fx) { fx.upload(); }, "triplet scores are NaN or infinite, the first of adapter 'layers.0.q'");
  };
  each_policy.template operator()<in_place_state>();
  each_policy.template operator()<double_buffered_state>();
}
