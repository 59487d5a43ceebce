// bfloat16 adapter parameters: the allocator over bf16 tensors agrees exactly with one over the same values in float.
//
// The parameter type T of rank_allocator<B, M, S, T> is only the storage of the trainer's tensors: every θ and g is
// widened to float32 (exactly) as it is read, and the importance state, scores and threshold are float32 whatever T
// is. So a bf16 run and a float32 run fed the same values, widened, must agree bit for bit: importance, scores,
// threshold, ranks, masks, and λ (zeroed where pruned, untouched elsewhere).
#include <catch2/catch.hpp>

#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "adalora/allocation/rank_allocator.hpp"
#include "adalora/core/bfloat16.hpp"
#include "adalora/importance/sensitivity_uncertainty.hpp"
#include "adalora/schedules/cubic.hpp"
#include "support/allocator_configs.hpp"
#include "support/backends_under_test.hpp"

using namespace adalora;
using adalora::testing::backends_under_test;
using adalora::testing::small_allocator_config;

namespace {

struct shape {
  std::size_t r, in, out;
};
// Adapter 1 stores lora_A (and its gradient) column-major, so a strided bf16 view is read too.
const std::vector<shape> shapes = {{6, 12, 8}, {6, 7, 20}, {6, 16, 16}, {6, 9, 5}};
constexpr std::size_t strided_adapter = 1;

// The six tensors of an adapter, in this order: lora_A, lora_E, lora_B and their gradients.
enum tensor_id : std::size_t { A, E, B, gA, gE, gB };
constexpr std::size_t tensor_count = 6;

std::size_t tensor_size(const shape& s, std::size_t t) {
  return t == A || t == gA ? s.r * s.in : t == E || t == gE ? s.r : s.out * s.r;
}

std::uint32_t bits_of(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

/// The float with the same value as b, from its bits (independently of bfloat16's own conversion).
float widen(bfloat16 b) {
  const std::uint32_t u = static_cast<std::uint32_t>(b.bits()) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (bits_of(a[i]) != bits_of(b[i])) return false;
  return true;
}

bool same_state(const allocator_state& a, const allocator_state& b) {
  return a.last_step == b.last_step && a.budget == b.budget && a.threshold.has_value() == b.threshold.has_value() &&
         (!a.threshold || bits_of(*a.threshold) == bits_of(*b.threshold)) && a.frozen == b.frozen &&
         a.importance_live == b.importance_live && same_bits(a.importance, b.importance) && a.keep == b.keep &&
         same_bits(a.scores, b.scores);
}

/// The trainer's tensors twice over, in the backend's memory: in bfloat16 (the truth, also held on the host) and
/// widened to float, with an allocator over each.
template <Backend Bk>
class twin_run {
public:
  using space = typename Bk::memory_space;
  using bf16_allocator = rank_allocator<Bk, sensitivity_uncertainty, cubic_schedule, bfloat16>;
  using f32_allocator = rank_allocator<Bk, sensitivity_uncertainty, cubic_schedule, float>;
  // The importance state is float32 whatever the parameter type.
  static_assert(std::is_same_v<typename bf16_allocator::value_type, bfloat16>);
  static_assert(std::is_same_v<decltype(std::declval<bf16_allocator&>().save_state().importance), std::vector<float>>);
  static_assert(std::is_same_v<decltype(std::declval<bf16_allocator&>().triplet_scores("")), std::vector<float>>);

  explicit twin_run(unsigned seed) : rng_(seed), bf16_(small_allocator_config()), f32_(small_allocator_config()) {
    for (const shape& s : shapes) {
      adapter a;
      for (std::size_t t = 0; t < tensor_count; ++t) {
        const std::size_t n = tensor_size(s, t);
        a.host[t].assign(n, bfloat16{});
        a.b16.push_back(backend_.template allocate<bfloat16>(n));
        a.f32.push_back(backend_.template allocate<float>(n));
      }
      adapters_.push_back(std::move(a));
    }
    for (std::size_t k = 0; k < shapes.size(); ++k) {
      for (std::size_t t : {A, E, B}) fill(adapters_[k].host[t], 1.0f);
      bf16_.add_adapter(name(k), views<bfloat16>(k, adapters_[k].b16));
      f32_.add_adapter(name(k), views<float>(k, adapters_[k].f32));
    }
  }

  static std::string name(std::size_t k) { return "layers." + std::to_string(k) + ".q"; }

  /// A pretend optimizer step in bf16: parameters move a little (from what the allocator left, pruned λ regrow),
  /// gradients are fresh; both copies are written.
  void perturb_and_upload() {
    for (auto& a : adapters_) {
      for (std::size_t t : {A, E, B}) {
        std::normal_distribution<float> n(0.0f, 0.05f);
        for (auto& x : a.host[t]) x = bfloat16(static_cast<float>(x) + n(rng_));
      }
      for (std::size_t t : {gA, gE, gB}) fill(a.host[t], 1.0f);
      for (std::size_t t = 0; t < tensor_count; ++t) upload(a, t);
    }
  }

  /// Runs step t on both allocators and checks that they agree exactly, and that the bf16 λ were zeroed where
  /// pruned and left as they were elsewhere (A and B are never written). Returns the bf16 allocator's report.
  step_report step_both(std::int64_t t) {
    const step_report r16 = bf16_.step(t);
    const step_report r32 = f32_.step(t);
    INFO("step " << t);
    REQUIRE(r16.phase == r32.phase);
    REQUIRE(r16.budget == r32.budget);
    REQUIRE(r16.importance_updated == r32.importance_updated);
    REQUIRE(r16.masked == r32.masked);
    REQUIRE(r16.threshold.has_value() == r32.threshold.has_value());
    if (r16.threshold) REQUIRE(bits_of(*r16.threshold) == bits_of(*r32.threshold));
    REQUIRE(bf16_.ranks() == f32_.ranks());
    // importance state and scores: float32 in both, bit for bit
    const allocator_state s16 = bf16_.save_state(), s32 = f32_.save_state();
    REQUIRE(s16.importance_live == s32.importance_live);
    REQUIRE(same_bits(s16.importance, s32.importance));
    for (std::size_t k = 0; k < adapters_.size(); ++k) {
      INFO("adapter " << name(k));
      REQUIRE(same_bits(bf16_.triplet_scores(name(k)), f32_.triplet_scores(name(k))));
      const std::vector<bool> keep = bf16_.rank_pattern(name(k));
      REQUIRE(keep == f32_.rank_pattern(name(k)));
      auto& a = adapters_[k];
      const std::vector<bfloat16> before = a.host[E];
      download(a, E);
      const std::vector<float> e32 = download_f32(a, E);
      for (std::size_t i = 0; i < keep.size(); ++i) {
        INFO("lambda " << i << ": bf16 " << a.host[E][i] << " (0x" << std::hex << a.host[E][i].bits() << "), float "
                       << e32[i] << std::dec << ", kept " << keep[i]);
        REQUIRE(bits_of(widen(a.host[E][i])) == bits_of(e32[i]));
        if (r16.masked && !keep[i]) {
          REQUIRE(a.host[E][i].bits() == 0x0000);  // +0
        } else {
          REQUIRE(a.host[E][i].bits() == before[i].bits());
        }
        if (r16.masked && !keep[i] && before[i].bits() != 0) ++zeroed_;
      }
      for (std::size_t t2 : {A, B}) {
        std::vector<bfloat16> now(a.host[t2].size());
        backend_.copy_to_host(a.b16[t2].data(), now.size(), now.data());
        for (std::size_t i = 0; i < now.size(); ++i) REQUIRE(now[i].bits() == a.host[t2][i].bits());
      }
    }
    return r16;
  }

  /// Writes one bf16 value into the backend copy of tensor t of adapter k (the float copy is left alone).
  void poke(std::size_t k, std::size_t t, std::size_t i, bfloat16 v) {
    backend_.copy_from_host(&v, 1, adapters_[k].b16[t].data() + i);
  }
  bfloat16 host_value(std::size_t k, std::size_t t, std::size_t i) const { return adapters_[k].host[t][i]; }

  /// True when the backend's bf16 A, E and B still hold the bits last uploaded (or left by the last good step).
  bool parameters_unchanged() {
    for (auto& a : adapters_)
      for (std::size_t t : {A, E, B}) {
        std::vector<bfloat16> now(a.host[t].size());
        backend_.copy_to_host(a.b16[t].data(), now.size(), now.data());
        for (std::size_t i = 0; i < now.size(); ++i)
          if (now[i].bits() != a.host[t][i].bits()) return false;
      }
    return true;
  }

  bf16_allocator& bf16() { return bf16_; }
  f32_allocator& f32() { return f32_; }
  /// How many λ that were non-zero a masking step zeroed, over the run so far.
  std::size_t zeroed() const { return zeroed_; }

private:
  struct adapter {
    std::vector<bfloat16> host[tensor_count];
    std::vector<buffer_t<Bk, bfloat16>> b16;
    std::vector<buffer_t<Bk, float>> f32;
  };

  template <class T, class Buffers>
  svd_adapter_views<T, space> views(std::size_t k, Buffers& d) {
    const shape& s = shapes[k];
    const T* gA_data = d[gA].data();
    auto q = make_matrix_view<space>(d[A].data(), s.r, s.in);
    auto gq = make_matrix_view<space>(gA_data, s.r, s.in);
    if (k == strided_adapter) {  // column-major: element (i, j) at i + j·r
      const auto r = static_cast<std::ptrdiff_t>(s.r);
      q = make_matrix_view<space>(d[A].data(), s.r, s.in, 1, r);
      gq = make_matrix_view<space>(gA_data, s.r, s.in, 1, r);
    }
    return {q,
            make_vector_view<space>(d[E].data(), s.r),
            make_matrix_view<space>(d[B].data(), s.out, s.r),
            gq,
            make_vector_view<space>(static_cast<const T*>(d[gE].data()), s.r),
            make_matrix_view<space>(static_cast<const T*>(d[gB].data()), s.out, s.r)};
  }

  void fill(std::vector<bfloat16>& v, float scale) {
    std::normal_distribution<float> n(0.0f, scale);
    for (auto& x : v) x = bfloat16(n(rng_));
  }
  void upload(adapter& a, std::size_t t) {
    const std::vector<bfloat16>& h = a.host[t];
    std::vector<float> wide(h.size());
    for (std::size_t i = 0; i < h.size(); ++i) wide[i] = widen(h[i]);
    backend_.copy_from_host(h.data(), h.size(), a.b16[t].data());
    backend_.copy_from_host(wide.data(), wide.size(), a.f32[t].data());
  }
  void download(adapter& a, std::size_t t) {
    backend_.copy_to_host(a.b16[t].data(), a.host[t].size(), a.host[t].data());
  }
  std::vector<float> download_f32(adapter& a, std::size_t t) {
    std::vector<float> out(a.host[t].size());
    backend_.copy_to_host(a.f32[t].data(), out.size(), out.data());
    return out;
  }

  Bk backend_{};
  std::mt19937 rng_;
  std::vector<adapter> adapters_;
  bf16_allocator bf16_;
  f32_allocator f32_;
  std::size_t zeroed_ = 0;
};

}  // namespace

TEMPLATE_LIST_TEST_CASE("bf16 parameters allocate exactly as the same values in float32", "[allocator][bfloat16]",
                        backends_under_test) {
  twin_run<TestType> run(4321);
  const adalora_config cfg = small_allocator_config();
  int selections = 0;
  for (std::int64_t t = 0; t < cfg.total_step + 3; ++t) {
    run.perturb_and_upload();
    const step_report rep = run.step_both(t);
    if (rep.threshold) ++selections;
  }
  // the run was not trivial: many selections, λ zeroed, the target budget reached, scores distinct
  REQUIRE(selections > 5);
  REQUIRE(run.zeroed() > 20);
  const auto ranks = run.bf16().ranks();
  REQUIRE(std::accumulate(ranks.begin(), ranks.end(), std::int64_t{0}) == run.bf16().target_budget());
  REQUIRE(run.bf16().pattern_frozen());
  const auto s = run.bf16().triplet_scores(twin_run<TestType>::name(0));
  REQUIRE(s.size() == 6);
  REQUIRE(s[0] != s[1]);
}

TEMPLATE_LIST_TEST_CASE("a non-finite bf16 gradient fails the step and changes nothing", "[allocator][bfloat16]",
                        backends_under_test) {
  twin_run<TestType> run(99);
  for (std::int64_t t = 0; t < 6; ++t) {
    run.perturb_and_upload();
    run.step_both(t);
  }
  run.perturb_and_upload();
  const std::int64_t t = 6;  // a budgeting step that would select and mask (deltaT = 2)
  REQUIRE(run.bf16().phase_of(t) == allocation_phase::budgeting);
  struct bad_value {
    std::size_t adapter, tensor, index;
    std::uint16_t bits;
  };
  const bad_value cases[] = {
      {0, gB, 5, 0x7fc0},                 // NaN in a contiguous gradient
      {strided_adapter, gA, 13, 0x7f80},  // +inf in the strided (column-major) gradient
      {2, gE, 3, 0xff80},                 // -inf in a gradient of λ
      {3, gB, 0, 0xffc1},                 // a negative NaN with a payload (as a bf16 overflow can leave)
  };
  for (const bad_value& c : cases) {
    INFO("adapter " << c.adapter << ", tensor " << c.tensor << ", element " << c.index << " = 0x" << std::hex
                    << c.bits);
    const allocator_state before = run.bf16().save_state();
    run.poke(c.adapter, c.tensor, c.index, bfloat16::from_bits(c.bits));
    REQUIRE_THROWS_AS(run.bf16().step(t), non_finite_error);
    REQUIRE_THROWS_WITH(run.bf16().step(t), Catch::Contains(twin_run<TestType>::name(c.adapter)));
    REQUIRE(same_state(run.bf16().save_state(), before));
    REQUIRE(run.parameters_unchanged());  // λ not masked, nothing written
    REQUIRE(run.bf16().last_step() == std::optional<std::int64_t>(5));
    run.poke(c.adapter, c.tensor, c.index, run.host_value(c.adapter, c.tensor, c.index));  // put it right
  }
  // Nothing changed: the step now runs and still agrees exactly with the float allocator, which never failed
  // (step_both also checks that λ held their values up to this step's mask).
  const step_report rep = run.step_both(t);
  REQUIRE(rep.masked);
  REQUIRE(rep.threshold.has_value());
}
