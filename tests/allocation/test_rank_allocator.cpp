// Generic tests of rank_allocator, run on every backend and held against the plain-loop reference.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "adalora/allocation/rank_allocator.hpp"
#include "adalora/core/host_device.hpp"
#include "adalora/importance/magnitude.hpp"
#include "adalora/reference/allocator_reference.hpp"
#include "adalora/schedules/constant.hpp"
#include "adalora/schedules/linear.hpp"
#include "support/adapter_fixture.hpp"
#include "support/allocator_configs.hpp"
#include "support/backends_under_test.hpp"

using namespace adalora;
using adalora::testing::adapter_fixture;
using adalora::testing::adapter_shape;
using adalora::testing::backends_under_test;
using adalora::testing::small_allocator_config;

namespace {

const std::vector<adapter_shape> small_shapes = {{6, 12, 8}, {6, 7, 20}, {6, 16, 16}, {6, 9, 5}, {6, 20, 11}};

template <class Alloc, class Fixture>
void register_all(Alloc& alloc, Fixture& fx) {
  for (std::size_t k = 0; k < fx.size(); ++k) alloc.add_adapter(fx.name(k), fx.views(k));
}

bool close_rel(double a, double b, double rtol, double atol) {
  return std::fabs(a - b) <= rtol * std::max(std::fabs(a), std::fabs(b)) + atol;
}

}  // namespace

TEMPLATE_LIST_TEST_CASE("the allocator matches the plain-loop reference step for step", "[allocator]",
                        backends_under_test) {
  const adalora_config cfg = small_allocator_config();
  adapter_fixture<TestType> fx(TestType{}, small_shapes, 1234);
  rank_allocator<TestType> alloc(cfg);
  register_all(alloc, fx);
  reference::allocator ref(cfg);
  for (auto& h : fx.host) ref.add(h);
  std::vector<reference::adapter_tensors*> hosts;
  for (auto& h : fx.host) hosts.push_back(&h);

  REQUIRE(alloc.initial_budget() == 30);
  REQUIRE(alloc.target_budget() == 10);
  int selections = 0, pruned_total = 0;
  for (std::int64_t t = 0; t < cfg.total_step + 3; ++t) {
    fx.perturb();
    fx.upload();
    const step_report rep = alloc.step(t);
    const auto expect = ref.step(t, hosts);
    INFO("step " << t);
    REQUIRE(rep.budget == expect.budget);
    REQUIRE(rep.masked == expect.masked);
    REQUIRE(rep.threshold.has_value() == expect.threshold.has_value());
    if (expect.threshold) {
      ++selections;
      REQUIRE(close_rel(*rep.threshold, *expect.threshold, 1e-5, 0.0));
      for (std::size_t k = 0; k < fx.size(); ++k) {
        const auto got = alloc.triplet_scores(fx.name(k));
        REQUIRE(got.size() == expect.scores[k].size());
        for (std::size_t i = 0; i < got.size(); ++i) {
          INFO("adapter " << fx.name(k) << " score " << i << ": expected " << expect.scores[k][i] << ", got "
                          << got[i]);
          REQUIRE(close_rel(got[i], expect.scores[k][i], 1e-5, 0.0));
        }
      }
    }
    for (std::size_t k = 0; k < fx.size(); ++k) {
      const auto got = fx.lambda(k);
      for (std::size_t i = 0; i < got.size(); ++i) {
        INFO("adapter " << fx.name(k) << " lambda " << i);
        REQUIRE(got[i] == fx.host[k].E[i]);  // masks and kept values exact
      }
      const auto pattern = alloc.rank_pattern(fx.name(k));
      for (std::size_t i = 0; i < pattern.size(); ++i) REQUIRE(pattern[i] == (ref.keep()[k][i] != 0));
    }
    if (rep.masked) {
      const auto ranks = alloc.ranks();
      pruned_total = static_cast<int>(alloc.initial_budget() - std::accumulate(ranks.begin(), ranks.end(), 0LL));
    }
  }
  REQUIRE(selections > 5);           // the run exercised many selections
  REQUIRE(pruned_total == 30 - 10);  // and ended at the target budget
  REQUIRE(alloc.pattern_frozen());
  REQUIRE_FALSE(alloc.importance_live());  // importance released at the forced mask
}

TEMPLATE_LIST_TEST_CASE("the worked budget vector of the spec", "[allocator][schedule]", backends_under_test) {
  adalora_config cfg;
  cfg.init_r = 6;
  cfg.target_r = 4;
  cfg.tinit = 10;
  cfg.tfinal = 20;
  cfg.total_step = 100;
  cfg.deltaT = 5;
  adapter_fixture<TestType> fx(TestType{}, {{6, 4, 4}, {6, 4, 4}, {6, 4, 4}, {6, 4, 4}}, 7);
  rank_allocator<TestType> alloc(cfg);
  register_all(alloc, fx);
  REQUIRE(alloc.initial_budget() == 24);
  REQUIRE(alloc.target_budget() == 16);
  auto expected_budget = [](std::int64_t t) -> std::int64_t {
    if (t <= 10) return 24;
    if (t <= 13) return 23;
    if (t <= 16) return 22;
    if (t <= 20) return 21;
    if (t <= 24) return 20;
    if (t <= 29) return 19;
    if (t >= 46) return 16;
    return -1;  // not pinned by the spec's vector
  };
  std::int64_t previous = 24;
  for (std::int64_t t = 0; t <= 100; ++t) {
    fx.perturb();
    fx.upload();
    const auto rep = alloc.step(t);
    INFO("step " << t);
    if (expected_budget(t) >= 0) REQUIRE(rep.budget == expected_budget(t));
    REQUIRE(rep.budget <= previous);
    previous = rep.budget;
    const bool expect_mask = (t > 10 && t < 80 && t % 5 == 0) || t >= 80;
    REQUIRE(rep.masked == expect_mask);
    REQUIRE(rep.phase == (t <= 10   ? allocation_phase::warmup
                          : t < 80  ? allocation_phase::budgeting
                          : t == 80 ? allocation_phase::final_force
                                    : allocation_phase::final_pattern));
  }
}

TEMPLATE_LIST_TEST_CASE("ties at the threshold are all pruned", "[allocator]", backends_under_test) {
  adalora_config cfg;
  cfg.init_r = 2;
  cfg.target_r = 1;
  cfg.total_step = 4;
  cfg.tfinal = 0;
  cfg.tinit = 0;
  cfg.deltaT = 1;
  // three identical adapters: every triplet score of a row repeats three times
  adapter_fixture<TestType> fx(TestType{}, {{2, 3, 3}, {2, 3, 3}, {2, 3, 3}}, 99);
  fx.perturb();
  fx.host[1] = fx.host[0];
  fx.host[2] = fx.host[0];
  fx.upload();
  rank_allocator<TestType> alloc(cfg);
  register_all(alloc, fx);
  alloc.step(0);
  fx.upload();
  const auto rep = alloc.step(4);  // skipped ahead: the forced mask to bT = 3 of b0 = 6
  REQUIRE(rep.phase == allocation_phase::final_force);
  REQUIRE(rep.threshold.has_value());
  const auto s = alloc.triplet_scores(fx.name(0));
  REQUIRE(s[0] != s[1]);  // the inputs are not degenerate within an adapter
  // k = 3: the three copies of the smaller score tie at the threshold and all go
  const auto ranks = alloc.ranks();
  REQUIRE(ranks == std::vector<std::int64_t>{1, 1, 1});
  const std::size_t kept = s[0] > s[1] ? 0 : 1;
  for (std::size_t k = 0; k < 3; ++k) {
    REQUIRE(fx.lambda(k)[1 - kept] == 0.0f);
    REQUIRE(fx.lambda(k)[kept] == fx.host[k].E[kept]);
  }
  // with k = 2 the tie would prune three: ties never keep the budget exactly, by design (PEFT's `<=`)
}

TEMPLATE_LIST_TEST_CASE("target_r 0 prunes every rank; rank-0 adapters take part", "[allocator]", backends_under_test) {
  adalora_config cfg;
  cfg.init_r = 3;
  cfg.target_r = 0;
  cfg.total_step = 6;
  cfg.deltaT = 1;
  adapter_fixture<TestType> fx(TestType{}, {{3, 5, 4}, {0, 5, 4}, {3, 2, 7}}, 5);
  rank_allocator<TestType> alloc(cfg);
  register_all(alloc, fx);
  REQUIRE(alloc.initial_budget() == 6);
  for (std::int64_t t = 0; t <= 7; ++t) {
    fx.perturb();
    fx.upload();
    alloc.step(t);
  }
  REQUIRE(alloc.ranks() == std::vector<std::int64_t>{0, 0, 0});
  REQUIRE(alloc.rank_pattern(fx.name(1)).empty());
  for (std::size_t k = 0; k < 3; ++k)
    for (float v : fx.lambda(k)) REQUIRE(v == 0.0f);
}

TEMPLATE_LIST_TEST_CASE("pruned singular values regrow and come back", "[allocator]", backends_under_test) {
  adalora_config cfg;
  cfg.init_r = 4;
  cfg.target_r = 3;  // one of four values is pruned at a time
  cfg.total_step = 100;
  cfg.tfinal = 10;
  cfg.deltaT = 1;
  cfg.beta1 = 0.1;  // short memory, so that importance follows the inputs quickly
  cfg.beta2 = 0.1;
  adapter_fixture<TestType> fx(TestType{}, {{4, 6, 6}}, 11);
  rank_allocator<TestType> alloc(cfg);
  register_all(alloc, fx);
  auto& h = fx.host[0];
  // singular value 3 is important early (large value and gradient), then unimportant; value 0 the other way
  // importance is sensitivity × uncertainty: the inputs fluctuate so that the uncertainty stays non-zero
  auto drive = [&](std::size_t hot, std::size_t cold, std::int64_t t) {
    const float wobble = t % 2 ? 1.5f : 0.5f;
    for (auto& g : h.grad_E) g = 0.01f;
    for (auto& g : h.grad_A) g = 0.01f;
    for (auto& g : h.grad_B) g = 0.01f;
    for (std::size_t i : {1, 2}) {  // moderately important values
      h.E[i] = 1.0f;
      h.grad_E[i] = wobble;
    }
    h.E[hot] = 2.0f;  // the optimizer moves it (again) away from 0
    h.grad_E[hot] = 3.0f * wobble;
    h.E[cold] = 0.001f;
  };
  std::int64_t t = 0;
  for (; t < 20; ++t) {
    drive(3, 0, t);
    fx.upload();
    alloc.step(t);
  }
  REQUIRE(alloc.rank_pattern(fx.name(0))[3]);
  REQUIRE_FALSE(alloc.rank_pattern(fx.name(0))[0]);
  REQUIRE(fx.lambda(0)[0] == 0.0f);
  for (; t < 60; ++t) {
    drive(0, 3, t);
    fx.upload();
    alloc.step(t);
  }
  REQUIRE(alloc.rank_pattern(fx.name(0))[0]);  // came back
  REQUIRE(fx.lambda(0)[0] == 2.0f);            // and kept its regrown value
  REQUIRE_FALSE(alloc.rank_pattern(fx.name(0))[3]);
}

TEMPLATE_LIST_TEST_CASE("the frozen pattern is re-applied after T - tfinal", "[allocator]", backends_under_test) {
  adalora_config cfg = small_allocator_config();
  adapter_fixture<TestType> fx(TestType{}, small_shapes, 21);
  rank_allocator<TestType> alloc(cfg);
  register_all(alloc, fx);
  for (std::int64_t t = 0; t <= cfg.final_step(); ++t) {
    fx.perturb();
    fx.upload();
    alloc.step(t);
  }
  REQUIRE(alloc.pattern_frozen());
  REQUIRE_FALSE(alloc.importance_live());
  std::vector<std::vector<bool>> frozen;
  for (std::size_t k = 0; k < fx.size(); ++k) frozen.push_back(alloc.rank_pattern(fx.name(k)));
  for (std::int64_t t = cfg.final_step() + 1; t < cfg.total_step + 5; ++t) {
    fx.perturb();  // the optimizer moves every λ, pruned ones too
    fx.upload();
    const auto rep = alloc.step(t);
    REQUIRE(rep.phase == allocation_phase::final_pattern);
    REQUIRE_FALSE(rep.importance_updated);
    REQUIRE(rep.budget == alloc.target_budget());
    for (std::size_t k = 0; k < fx.size(); ++k) {
      REQUIRE(alloc.rank_pattern(fx.name(k)) == frozen[k]);
      const auto lam = fx.lambda(k);
      for (std::size_t i = 0; i < lam.size(); ++i) {
        if (frozen[k][i])
          REQUIRE(lam[i] == fx.host[k].E[i]);
        else
          REQUIRE(lam[i] == 0.0f);
      }
    }
  }
}

TEMPLATE_LIST_TEST_CASE("a run that skips T - tfinal gets its forced mask at the next step", "[allocator]",
                        backends_under_test) {
  adalora_config cfg = small_allocator_config();
  adapter_fixture<TestType> fx(TestType{}, small_shapes, 3);
  rank_allocator<TestType> alloc(cfg);
  register_all(alloc, fx);
  for (std::int64_t t = 0; t < 10; ++t) {
    fx.perturb();
    fx.upload();
    alloc.step(t);
  }
  fx.perturb();
  fx.upload();
  const auto rep = alloc.step(cfg.final_step() + 3);
  REQUIRE(rep.phase == allocation_phase::final_force);
  REQUIRE(rep.budget == alloc.target_budget());
  REQUIRE(alloc.pattern_frozen());
  const auto ranks = alloc.ranks();
  REQUIRE(std::accumulate(ranks.begin(), ranks.end(), 0LL) == alloc.target_budget());
}

// ---- metrics and schedules plugged in from outside the library -------------------------------------------------

namespace {
/// A user metric: the squared gradient of the latest step (the library knows nothing of it). Host+device, so that
/// the CUDA backend's kernels can call it too (tests/cuda/test_cuda_allocation.cu).
struct squared_gradient {
  using importance_metric_concept = importance_metric_tag;
  static constexpr std::size_t state_count = 1;
  static constexpr bool needs_gradient = true;
  static constexpr const char* name = "squared_gradient";
  ADALORA_HOST_DEVICE void update(float, float g, float (&s)[1]) const noexcept { s[0] = g * g; }
  ADALORA_HOST_DEVICE float score(const float (&s)[1]) const noexcept { return s[0]; }
};
static_assert(ImportanceMetric<squared_gradient>);

/// A user schedule: drop straight to halfway, then to the target.
struct halfway_schedule {
  using budget_schedule_concept = budget_schedule_tag;
  static constexpr const char* name = "halfway";
  std::int64_t budget(const schedule_point& p) const noexcept {
    return p.remaining() > 0.5 ? (p.initial_budget + p.target_budget) / 2 : p.target_budget;
  }
};
static_assert(BudgetSchedule<halfway_schedule>);

/// Does not join on purpose (no tag), though it has the right members.
struct untagged_metric {
  [[maybe_unused]] static constexpr std::size_t state_count = 1;
  [[maybe_unused]] static constexpr bool needs_gradient = true;
  [[maybe_unused]] static constexpr const char* name = "untagged";
  void update(float, float, float (&)[1]) const noexcept {}
  float score(const float (&)[1]) const noexcept { return 0; }
};
static_assert(!ImportanceMetric<untagged_metric>);
static_assert(!ImportanceMetric<int>);
static_assert(!BudgetSchedule<squared_gradient>);
static_assert(!Backend<squared_gradient>);
static_assert(!BudgetSchedule<untagged_metric>);
// a metric without input_size / safe_bound: the in-place state policies try each update whole before storing it
static_assert(!BoundedImportanceMetric<squared_gradient>);
static_assert(BoundedImportanceMetric<sensitivity_uncertainty> && BoundedImportanceMetric<magnitude>);

/// State policies: the three the library has join; a type with the right members but no tag does not, nor does a
/// policy of another value type or buffer count.
struct untagged_policy {
  using value_type = float;
  [[maybe_unused]] static constexpr std::size_t buffers = 1;
  [[maybe_unused]] static constexpr const char* name = "untagged";
};
struct half_policy {
  using state_policy_concept = state_policy_tag;
  using value_type = std::uint16_t;
  [[maybe_unused]] static constexpr std::size_t buffers = 1;
  [[maybe_unused]] static constexpr const char* name = "half";
};
struct triple_policy {
  using state_policy_concept = state_policy_tag;
  using value_type = float;
  [[maybe_unused]] static constexpr std::size_t buffers = 3;
  [[maybe_unused]] static constexpr const char* name = "triple";
};
static_assert(StatePolicy<in_place_state> && StatePolicy<double_buffered_state> && StatePolicy<in_place_bf16_state>);
static_assert(!StatePolicy<untagged_policy>);
static_assert(!StatePolicy<half_policy>);
static_assert(!StatePolicy<triple_policy>);
static_assert(!StatePolicy<sensitivity_uncertainty>);
static_assert(state_bytes_per_parameter<double_buffered_state>(2) == 16);
static_assert(state_bytes_per_parameter<in_place_state>(2) == 8);
static_assert(state_bytes_per_parameter<in_place_bf16_state>(2) == 4);
}  // namespace

TEMPLATE_LIST_TEST_CASE("the state policies: float32 ones bit-identical, bfloat16 close", "[allocator][state]",
                        backends_under_test) {
  // One run per policy on the same inputs. In place and double-buffered compute the same numbers: every step's
  // state, scores, threshold and masks agree to the bit. bfloat16 state rounds every stored EMA to 8 significant
  // bits; fed the same inputs, its triplet scores stay within a few percent of float32's.
  const adalora_config cfg = small_allocator_config();
  adapter_fixture<TestType> a(TestType{}, small_shapes, 99), b(TestType{}, small_shapes, 99),
      c(TestType{}, small_shapes, 99);
  rank_allocator<TestType> in_place(cfg);
  rank_allocator<TestType, sensitivity_uncertainty, cubic_schedule, float, self_communicator, double_buffered_state> doubled(cfg);
  rank_allocator<TestType, sensitivity_uncertainty, cubic_schedule, float, self_communicator, in_place_bf16_state> bf16(cfg);
  register_all(in_place, a);
  register_all(doubled, b);
  register_all(bf16, c);
  double worst = 0.0;
  int selections = 0;
  for (std::int64_t t = 0; t < cfg.total_step - cfg.tfinal; ++t) {
    for (auto* fx : {&a, &b, &c}) fx->perturb();
    // the same seeds: the same inputs at every step (each upload overwrites λ as masked, so its masks do not feed back)
    for (auto* fx : {&a, &b, &c}) fx->upload();
    const auto ra = in_place.step(t), rb = doubled.step(t), rc = bf16.step(t);
    INFO("step " << t);
    REQUIRE(ra.threshold == rb.threshold);
    REQUIRE(ra.masked == rc.masked);
    const auto sa = in_place.save_state(), sb = doubled.save_state(), sc = bf16.save_state();
    REQUIRE(sa.importance.size() == sb.importance.size());
    REQUIRE(std::memcmp(sa.importance.data(), sb.importance.data(), sa.importance.size() * sizeof(float)) == 0);
    for (float v : sc.importance) REQUIRE(static_cast<float>(bfloat16(v)) == v);  // held as bfloat16
    for (std::size_t k = 0; k < a.size(); ++k) {
      REQUIRE(a.lambda(k) == b.lambda(k));
      if (!ra.threshold) continue;
      const auto fa = in_place.triplet_scores(a.name(k)), fc = bf16.triplet_scores(c.name(k));
      REQUIRE(fa == doubled.triplet_scores(b.name(k)));
      for (std::size_t i = 0; i < fa.size(); ++i) {
        const double rel = std::fabs(fa[i] - fc[i]) / std::fabs(fa[i]);
        worst = std::max(worst, rel);
        REQUIRE(rel < 0.05);
      }
    }
    selections += ra.threshold ? 1 : 0;
  }
  REQUIRE(selections > 5);
  REQUIRE(worst > 0.0);  // bfloat16 did round
}

TEMPLATE_LIST_TEST_CASE("a user-defined metric plugs in", "[allocator][metric]", backends_under_test) {
  adalora_config cfg;
  cfg.init_r = 3;
  cfg.target_r = 1;
  cfg.total_step = 10;
  cfg.deltaT = 1;
  adapter_fixture<TestType> fx(TestType{}, {{3, 4, 5}, {3, 6, 2}}, 8);
  rank_allocator<TestType, squared_gradient> alloc(cfg);
  register_all(alloc, fx);
  fx.perturb();
  fx.upload();
  alloc.step(0);
  fx.perturb();
  fx.upload();
  alloc.step(1);  // t = 1 > tinit = 0 and 1 % 1 == 0: a selection
  for (std::size_t k = 0; k < fx.size(); ++k) {
    const auto& h = fx.host[k];
    const auto got = alloc.triplet_scores(fx.name(k));
    REQUIRE(got.size() == h.r);
    for (std::size_t i = 0; i < h.r; ++i) {
      double q = 0, p = 0;
      for (std::size_t j = 0; j < h.in; ++j) q += double(h.grad_A[i * h.in + j]) * h.grad_A[i * h.in + j];
      for (std::size_t j = 0; j < h.out; ++j) p += double(h.grad_B[j * h.r + i]) * h.grad_B[j * h.r + i];
      const double expect = double(h.grad_E[i]) * h.grad_E[i] + q / h.in + p / h.out;
      INFO("adapter " << k << " value " << i << ": expected " << expect << ", got " << got[i]);
      REQUIRE(close_rel(got[i], expect, 1e-5, 0.0));
    }
  }
}

TEMPLATE_LIST_TEST_CASE("the magnitude metric needs no gradients", "[allocator][metric]", backends_under_test) {
  adalora_config cfg;
  cfg.init_r = 4;
  cfg.target_r = 2;
  cfg.total_step = 10;
  cfg.deltaT = 1;
  adapter_fixture<TestType> fx(TestType{}, {{4, 5, 6}, {4, 3, 3}}, 17);
  rank_allocator<TestType, magnitude> alloc(cfg);
  for (std::size_t k = 0; k < fx.size(); ++k) {
    auto v = fx.views(k);
    v.grad_A = {};
    v.grad_E = {};
    v.grad_B = {};
    alloc.add_adapter(fx.name(k), v);
  }
  fx.perturb();
  fx.upload();
  alloc.step(0);
  fx.upload();
  alloc.step(1);
  for (std::size_t k = 0; k < fx.size(); ++k) {
    const auto& h = fx.host[k];
    const auto got = alloc.triplet_scores(fx.name(k));
    for (std::size_t i = 0; i < h.r; ++i) {
      double q = 0, p = 0;
      for (std::size_t j = 0; j < h.in; ++j) q += std::fabs(h.A[i * h.in + j]);
      for (std::size_t j = 0; j < h.out; ++j) p += std::fabs(h.B[j * h.r + i]);
      const double expect = std::fabs(h.E[i]) + q / h.in + p / h.out;
      INFO("adapter " << k << " value " << i << ": expected " << expect << ", got " << got[i]);
      REQUIRE(close_rel(got[i], expect, 1e-5, 0.0));
    }
  }
}

TEMPLATE_LIST_TEST_CASE("user-defined and built-in schedules drive the budget", "[allocator][schedule]",
                        backends_under_test) {
  adalora_config cfg;
  cfg.init_r = 4;
  cfg.target_r = 1;
  cfg.tinit = 2;
  cfg.tfinal = 2;
  cfg.total_step = 12;
  cfg.deltaT = 1;
  adapter_fixture<TestType> fx(TestType{}, {{4, 3, 3}, {4, 3, 3}}, 2);
  auto run = [&](auto alloc) {
    register_all(alloc, fx);
    std::vector<std::int64_t> budgets;
    for (std::int64_t t = 0; t < 12; ++t) {
      fx.perturb();
      fx.upload();
      budgets.push_back(alloc.step(t).budget);
    }
    return budgets;
  };
  using V = std::vector<std::int64_t>;
  // b0 = 8, bT = 2, budgeting for t in (2, 10): m = 1 - (t - 2)/8
  REQUIRE(run(rank_allocator<TestType, sensitivity_uncertainty, halfway_schedule>(cfg, sensitivity_uncertainty(cfg))) ==
          V{8, 8, 8, 5, 5, 5, 2, 2, 2, 2, 2, 2});
  REQUIRE(run(rank_allocator<TestType, sensitivity_uncertainty, linear_schedule>(cfg)) ==
          V{8, 8, 8, 7, 6, 5, 5, 4, 3, 2, 2, 2});
  REQUIRE(run(rank_allocator<TestType, sensitivity_uncertainty, constant_schedule>(cfg)) ==
          V{8, 8, 8, 2, 2, 2, 2, 2, 2, 2, 2, 2});
  REQUIRE(run(rank_allocator<TestType>(cfg)) == V{8, 8, 8, 6, 4, 3, 2, 2, 2, 2, 2, 2});
}
