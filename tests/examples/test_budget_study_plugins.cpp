// The budget study's plug-ins (examples/budget_study): the one-shot allocation before training (warm-up sensitivity and
// its config) and the two user metrics, each driving the library's rank_allocator on every backend of the build.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "adalora/adalora.hpp"
#include "adalora/reference/allocator_reference.hpp"
#include "metrics.hpp"
#include "one_shot.hpp"
#include "support/adapter_fixture.hpp"
#include "support/allocator_configs.hpp"
#include "support/backends_under_test.hpp"

namespace {

using adalora::testing::adapter_fixture;
using adalora::testing::adapter_shape;
namespace one_shot = budget_study::one_shot;

// The plug-ins join the concept on purpose (the tag); a look-alike without it does not.
static_assert(adalora::ImportanceMetric<one_shot::warmup_sensitivity>);
static_assert(adalora::ImportanceMetric<budget_study::smoothed_sensitivity>);
static_assert(adalora::ImportanceMetric<budget_study::fisher_saliency>);
struct untagged_warmup_sensitivity {
  static constexpr std::size_t state_count = 1;
  static constexpr bool needs_gradient = true;
  static constexpr const char* name = "untagged";
  void update(float theta, float grad, float (&s)[1]) const noexcept { s[0] += std::abs(theta * grad); }
  float score(const float (&s)[1]) const noexcept { return s[0]; }
};
static_assert(!adalora::ImportanceMetric<untagged_warmup_sensitivity>);
static_assert(!adalora::BudgetSchedule<one_shot::warmup_sensitivity>);

/// A schedule the allocator must never consult: every budget it gives is out of range, which step() refuses.
struct out_of_range_schedule {
  using budget_schedule_concept = adalora::budget_schedule_tag;
  static constexpr const char* name = "out_of_range";
  std::int64_t budget(const adalora::schedule_point& p) const noexcept { return p.initial_budget + 1; }
};
static_assert(adalora::BudgetSchedule<out_of_range_schedule>);

const std::vector<adapter_shape> shapes{{6, 20, 12}, {6, 9, 30}, {6, 16, 16}, {6, 33, 7}, {6, 12, 24}};

/// Six ranks down to two over 30 steps, warm-up to step 3, a mask every 2 steps (tests/support).
adalora::adalora_config base_config() { return adalora::testing::small_allocator_config(); }

/// Per element: the metric's float state after folding (θ, ∇θ) of each step in, as the allocator keeps it.
template <class Metric>
struct host_metric_state {
  Metric metric;
  std::vector<std::vector<float>> A, E, B;  // per adapter, state_count floats per element

  void fold(const std::vector<adalora::reference::adapter_tensors>& host) {
    auto go = [&](std::vector<float>& st, const std::vector<float>& p, const std::vector<float>& g) {
      st.resize(p.size() * Metric::state_count, 0.0f);
      for (std::size_t i = 0; i < p.size(); ++i) {
        float s[Metric::state_count];
        std::copy_n(st.begin() + static_cast<std::ptrdiff_t>(i * Metric::state_count), Metric::state_count, s);
        metric.update(p[i], g[i], s);
        std::copy_n(s, Metric::state_count, st.begin() + static_cast<std::ptrdiff_t>(i * Metric::state_count));
      }
    };
    A.resize(host.size()), E.resize(host.size()), B.resize(host.size());
    for (std::size_t k = 0; k < host.size(); ++k) {
      go(A[k], host[k].A, host[k].grad_A);
      go(E[k], host[k].E, host[k].grad_E);
      go(B[k], host[k].B, host[k].grad_B);
    }
  }

  /// Every triplet score, adapters in order (SPEC §3), and the pattern that keeps the `budget` largest.
  std::vector<double> scores(const std::vector<adalora::reference::adapter_tensors>& host) const {
    std::vector<double> all;
    for (std::size_t k = 0; k < host.size(); ++k) {
      auto at = [&](const std::vector<float>& st) {
        return [&st, this](std::size_t i) {
          float s[Metric::state_count];
          std::copy_n(st.begin() + static_cast<std::ptrdiff_t>(i * Metric::state_count), Metric::state_count, s);
          return static_cast<double>(metric.score(s));
        };
      };
      const auto t = adalora::reference::triplet_scores(host[k], at(A[k]), at(E[k]), at(B[k]));
      all.insert(all.end(), t.begin(), t.end());
    }
    return all;
  }
};

}  // namespace

TEMPLATE_LIST_TEST_CASE("one-shot plug-in: importance over the warm-up, the ranks fixed once at step warmup_steps from "
                        "the summed sensitivity, frozen afterwards, the schedule never consulted",
                        "[examples][one_shot]", adalora::testing::backends_under_test) {
  using B = TestType;
  constexpr std::int64_t warmup = 7;
  const adalora::adalora_config cfg = one_shot::config(base_config(), warmup);
  CHECK(cfg.tinit == warmup - 1);
  CHECK(cfg.final_step() == warmup);

  adapter_fixture<B> fx(B{}, shapes, 1234u);
  adalora::rank_allocator<B, one_shot::warmup_sensitivity, out_of_range_schedule> allocator(cfg);
  for (std::size_t k = 0; k < fx.size(); ++k) allocator.add_adapter(fx.name(k), fx.views(k));
  const std::int64_t b0 = allocator.initial_budget(), bT = allocator.target_budget();
  REQUIRE(b0 == 30);
  REQUIRE(bT == 10);

  host_metric_state<one_shot::warmup_sensitivity> reference;
  std::vector<std::vector<bool>> fixed;  // the pattern chosen at step warmup_steps
  for (std::int64_t t = 0; t < cfg.total_step; ++t) {
    fx.perturb();  // parameters move, fresh gradients: every step's sensitivity differs
    fx.upload();
    if (t < warmup) reference.fold(fx.host);
    const auto rep = allocator.step(t);
    if (t < warmup) {
      CHECK(rep.phase == adalora::allocation_phase::warmup);
      CHECK(rep.budget == b0);
      CHECK_FALSE(rep.masked);
      CHECK(rep.importance_updated);
      for (std::size_t k = 0; k < fx.size(); ++k) CHECK(fx.lambda(k) == fx.host[k].E);  // nothing masked
    } else if (t == warmup) {
      CHECK(rep.phase == adalora::allocation_phase::final_force);
      CHECK(rep.budget == bT);
      CHECK(rep.masked);
      CHECK_FALSE(rep.importance_updated);  // step warmup_steps's gradients are not part of the decision
      CHECK_FALSE(allocator.importance_live());
      CHECK(allocator.pattern_frozen());
      // the kept singular values are the bT largest summed sensitivities of steps 0 … warmup_steps − 1
      const std::vector<double> s = reference.scores(fx.host);
      std::vector<double> sorted = s;
      std::sort(sorted.begin(), sorted.end());
      const auto cut = static_cast<std::size_t>(b0 - bT);
      REQUIRE(sorted[cut] - sorted[cut - 1] > 1e-4 * sorted[cut]);  // no near-tie at the threshold
      std::size_t i = 0, kept = 0;
      for (std::size_t k = 0; k < fx.size(); ++k) {
        const auto pattern = allocator.rank_pattern(fx.name(k));
        const auto lambda = fx.lambda(k);
        for (std::size_t j = 0; j < pattern.size(); ++j, ++i) {
          INFO("adapter " << k << " singular value " << j << " score " << s[i] << " threshold " << sorted[cut - 1]);
          CHECK(pattern[j] == (s[i] > sorted[cut - 1]));
          CHECK((pattern[j] ? lambda[j] == fx.host[k].E[j] : lambda[j] == 0.0f));
          kept += pattern[j] ? 1u : 0u;
        }
        fixed.push_back(pattern);
      }
      CHECK(kept == static_cast<std::size_t>(bT));
    } else {
      CHECK(rep.phase == adalora::allocation_phase::final_pattern);
      CHECK(rep.budget == bT);
      for (std::size_t k = 0; k < fx.size(); ++k) {
        CHECK(allocator.rank_pattern(fx.name(k)) == fixed[k]);  // fresh gradients change nothing
        const auto lambda = fx.lambda(k);
        for (std::size_t j = 0; j < lambda.size(); ++j)
          CHECK((fixed[k][j] ? lambda[j] == fx.host[k].E[j] : lambda[j] == 0.0f));  // regrown λ pruned again
      }
    }
  }
}

TEMPLATE_LIST_TEST_CASE("one-shot plug-in: the schedule it never consults is refused where a budgeting phase exists",
                        "[examples][one_shot]", adalora::testing::backends_under_test) {
  using B = TestType;
  // the same allocator with the base config's budgeting phase (tinit 3 < t < 25) reaches the schedule at step 4
  adapter_fixture<B> fx(B{}, shapes, 99u);
  adalora::rank_allocator<B, one_shot::warmup_sensitivity, out_of_range_schedule> allocator(base_config());
  for (std::size_t k = 0; k < fx.size(); ++k) allocator.add_adapter(fx.name(k), fx.views(k));
  fx.upload();
  for (std::int64_t t = 0; t <= 3; ++t) allocator.step(t);
  CHECK_THROWS_WITH(allocator.step(4), Catch::Contains("schedule 'out_of_range' gave budget 31"));
}

TEST_CASE("one-shot plug-in: config refuses a warm-up that leaves no step to fix the ranks at",
          "[examples][one_shot]") {
  const adalora::adalora_config c = base_config();
  for (std::int64_t w : {std::int64_t{0}, std::int64_t{-3}, c.total_step, c.total_step + 5}) {
    INFO("warmup_steps " << w);
    CHECK_THROWS_AS(one_shot::config(c, w), adalora::config_error);
    CHECK_THROWS_WITH(one_shot::config(c, w), Catch::Contains("warmup_steps = " + std::to_string(w)) &&
                                                  Catch::Contains("need 1 <= warmup_steps < total_step"));
  }
  // the last possible warm-up: the ranks are fixed at the last step
  const auto last = one_shot::config(c, c.total_step - 1);
  CHECK(last.final_step() == c.total_step - 1);
  CHECK(last.tfinal == 1);
  // the rest of the config is still validated
  adalora::adalora_config bad = c;
  bad.target_r = 9;
  CHECK_THROWS_WITH(one_shot::config(bad, 5), Catch::Contains("target_r = 9"));
  adalora::adalora_config no_steps = c;
  no_steps.total_step = 0;
  CHECK_THROWS_AS(one_shot::config(no_steps, 5), adalora::config_error);
}

TEST_CASE("user metrics: warm-up sensitivity sums |θ·∇θ|, sensitivity alone is the default metric's Ī, Fisher saliency "
          "is θ² times the EMA of ∇θ²",
          "[examples][metrics]") {
  one_shot::warmup_sensitivity w;
  float ws[1] = {0.0f};
  w.update(2.0f, -3.0f, ws);
  w.update(-0.5f, -4.0f, ws);
  CHECK(ws[0] == 8.0f);
  CHECK(w.score(ws) == 8.0f);

  adalora::adalora_config c;
  c.beta1 = 0.7;
  c.beta2 = 0.9;
  const budget_study::smoothed_sensitivity sens(c);
  const adalora::sensitivity_uncertainty su(c);
  float s1[1] = {0.0f}, s2[2] = {0.0f, 0.0f};
  std::mt19937 rng(7);
  std::normal_distribution<float> n(0.0f, 1.0f);
  for (int i = 0; i < 50; ++i) {
    const float theta = n(rng), grad = n(rng);
    sens.update(theta, grad, s1);
    su.update(theta, grad, s2);
    REQUIRE(s1[0] == s2[0]);  // bit for bit: the same rounding order
  }
  CHECK(s1[0] > 0.0f);
  CHECK(sens.score(s1) == s1[0]);

  const budget_study::fisher_saliency f(c);
  float fs[2] = {0.0f, 0.0f};
  f.update(3.0f, 2.0f, fs);  // F = 0.3·4 = 1.2, θ² = 9
  CHECK(fs[0] == Approx(1.2f));
  CHECK(fs[1] == 9.0f);
  f.update(-1.0f, 1.0f, fs);  // F = 0.7·1.2 + 0.3·1 = 1.14, θ² = 1
  CHECK(fs[0] == Approx(1.14f));
  CHECK(f.score(fs) == Approx(1.14f));
}

TEMPLATE_LIST_TEST_CASE("user metrics drive the allocator: its masks keep the largest triplet scores of each metric",
                        "[examples][metrics]", adalora::testing::backends_under_test) {
  using B = TestType;
  adalora::adalora_config cfg = base_config();
  cfg.beta1 = 0.8;
  auto check_metric = [&](auto metric_tag) {
    using M = decltype(metric_tag);
    adapter_fixture<B> fx(B{}, shapes, 4321u);
    adalora::rank_allocator<B, M> allocator(cfg);
    for (std::size_t k = 0; k < fx.size(); ++k) allocator.add_adapter(fx.name(k), fx.views(k));
    host_metric_state<M> reference{M(cfg), {}, {}, {}};
    for (std::int64_t t = 0; t <= 6; ++t) {  // step 6: the budgeting phase's first mask step (deltaT 2)
      fx.perturb();
      fx.upload();
      reference.fold(fx.host);
      const auto rep = allocator.step(t);
      REQUIRE(rep.masked == (t == 4 || t == 6));
    }
    const std::vector<double> s = reference.scores(fx.host);
    std::vector<double> sorted = s;
    std::sort(sorted.begin(), sorted.end());
    const auto cut = static_cast<std::size_t>(allocator.initial_budget() - allocator.budget());
    REQUIRE(cut > 0);
    REQUIRE(sorted[cut] - sorted[cut - 1] > 1e-4 * sorted[cut]);
    std::size_t i = 0;
    for (std::size_t k = 0; k < fx.size(); ++k) {
      const auto pattern = allocator.rank_pattern(fx.name(k));
      for (std::size_t j = 0; j < pattern.size(); ++j, ++i) {
        INFO(M::name << ": adapter " << k << " singular value " << j);
        CHECK(pattern[j] == (s[i] > sorted[cut - 1]));
      }
    }
  };
  check_metric(budget_study::smoothed_sensitivity{});
  check_metric(budget_study::fisher_saliency{});
}
