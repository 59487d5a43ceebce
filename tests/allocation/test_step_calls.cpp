// The allocator step makes the same number of backend calls (kernel launches on a GPU) whatever the adapter count,
// and allocates nothing after the first step, on every backend (counting_backend): in the tile form of the fused pass
// and in its block form (the CUDA backend's launch; on the host, Thrust's CPP system with a lane-by-lane launch).
#include <catch2/catch.hpp>

#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "adalora/allocation/rank_allocator.hpp"
#include "adalora/backends/counting_backend.hpp"
#include "support/adapter_fixture.hpp"
#include "support/backends_under_test.hpp"

using namespace adalora;
using adalora::testing::adapter_fixture;

namespace {

#if defined(ADALORA_TEST_THRUST) && !defined(ADALORA_TEST_CUDA_ONLY)
/// Thrust's CPP system with a block launch of tiled passes, run on the host lane by lane
/// (detail::run_tile_lanes_on_host): the calls the CUDA system's for_each_tile_lanes makes, on the CPU.
struct thrust_cpp_lanes_system : thrust_cpp_system {
  static constexpr const char* name = "thrust-cpp-lanes";
  template <detail::TileLanePass F>
  void for_each_tile_lanes(std::size_t tiles, const F& f) const {
    detail::run_tile_lanes_on_host(f, tiles);
  }
};
static_assert(ThrustSystem<thrust_cpp_lanes_system>);
using thrust_cpp_lanes_backend = thrust_backend<thrust_cpp_lanes_system>;
using step_call_backends = decltype(std::tuple_cat(std::declval<adalora::testing::backends_under_test>(),
                                                   std::declval<std::tuple<thrust_cpp_lanes_backend>>()));
#else
using step_call_backends = adalora::testing::backends_under_test;
#endif

static_assert(Backend<counting_backend<std::tuple_element_t<0, adalora::testing::backends_under_test>>>);

/// What one step asked of the backend.
struct step_counts {
  std::size_t calls = 0;
  std::size_t allocations = 0;
  std::size_t device_allocations = 0;  // on the CUDA backend: device memory taken (buffers and scratch)
  bool operator==(const step_counts&) const = default;
};

/// Device allocations of a backend that counts them (the CUDA backend), else 0.
template <class B>
std::size_t device_allocations(const B& b) {
  if constexpr (requires { b.system().device_allocations(); })
    return b.system().device_allocations();
  else
    return 0;
}

/// The counts of every step of a run over `adapters` adapters after the first, keyed by the step's phase and whether
/// it masked.
template <class B, StatePolicy P>
std::map<std::string, std::vector<step_counts>> counts_per_step(std::size_t adapters) {
  adalora_config c;
  c.init_r = 4;
  c.target_r = 2;
  c.tinit = 2;
  c.tfinal = 3;
  c.total_step = 14;
  c.deltaT = 2;
  std::vector<adalora::testing::adapter_shape> shapes;
  for (std::size_t k = 0; k < adapters; ++k) shapes.push_back({4, 6 + k % 5, 5 + k % 7});
  const counting_backend<B> backend;
  adapter_fixture<B> fx(backend, shapes, 3);
  rank_allocator<counting_backend<B>, sensitivity_uncertainty, cubic_schedule, float, self_communicator, P> alloc(c, backend);
  for (std::size_t k = 0; k < adapters; ++k) alloc.add_adapter(fx.name(k), fx.views(k));
  std::map<std::string, std::vector<step_counts>> out;
  for (std::int64_t t = 0; t < c.total_step; ++t) {
    fx.perturb();
    fx.upload();
    const backend_counts before = backend.counts();
    const std::size_t device_before = device_allocations(backend);
    const auto rep = alloc.step(t);
    const char* phase[] = {"warmup", "budgeting", "final_force", "final_pattern"};
    const std::string key = std::string(phase[static_cast<int>(rep.phase)]) + (rep.masked ? "+mask" : "");
    // step 0 also uploads the plan and allocates the importance state
    if (t > 0)
      out[key].push_back({backend.counts().calls - before.calls, backend.counts().allocations - before.allocations,
                          device_allocations(backend) - device_before});
  }
  return out;
}

template <class B>
void require_each(const std::map<std::string, std::vector<step_counts>>& counts, const std::string& key,
                  std::size_t calls) {
  INFO(B::name << ", " << key);
  REQUIRE(counts.count(key) == 1);
  for (const step_counts& s : counts.at(key)) {
    REQUIRE(s.calls == calls);
    REQUIRE(s.allocations == 0);
    REQUIRE(s.device_allocations == 0);
  }
}

}  // namespace

TEMPLATE_LIST_TEST_CASE("a step's backend calls do not grow with the number of adapters, and it allocates nothing "
                        "after the first step",
                        "[allocator][launches]", step_call_backends) {
  SECTION("double-buffered state") {
    const auto few = counts_per_step<TestType, double_buffered_state>(2);
    const auto many = counts_per_step<TestType, double_buffered_state>(60);
    REQUIRE(few == many);
    // an update step: the fused pass and its non-finite count
    require_each<TestType>(few, "warmup", 2);
    require_each<TestType>(few, "budgeting", 2);
    // a mask step: fused pass, count, triplet scores and their non-finite count (before anything is committed),
    // selection, keep, mask, two copies to the host
    require_each<TestType>(few, "budgeting+mask", 9);
    // the forced mask scores the held state instead of updating it: no count of the pass
    require_each<TestType>(few, "final_force+mask", 8);
    require_each<TestType>(few, "final_pattern+mask", 1);
  }
  SECTION("state updated in place (the default), float32 or bfloat16") {
    const auto few = counts_per_step<TestType, in_place_state>(2);
    REQUIRE(few == counts_per_step<TestType, in_place_state>(60));
    REQUIRE(few == counts_per_step<TestType, in_place_bf16_state>(2));
    // an update step: the read-only check of θ and g, its count, the in-place pass
    require_each<TestType>(few, "warmup", 3);
    require_each<TestType>(few, "budgeting", 3);
    // a mask step: the check and its count (a cleared check bounds every score, so the triplet sums cannot
    // overflow), the in-place pass with the score sums, then triplet scores and their count, selection, keep, mask,
    // two copies to the host
    require_each<TestType>(few, "budgeting+mask", 10);
    require_each<TestType>(few, "final_force+mask", 8);
    require_each<TestType>(few, "final_pattern+mask", 1);
  }
}

TEST_CASE("in place, a suspect input makes the step try the update whole first", "[allocator][launches]") {
  adalora_config c;
  c.init_r = 4;
  c.target_r = 2;
  c.tinit = 60;
  c.tfinal = 3;
  c.total_step = 80;
  c.deltaT = 2;
  using B = std::tuple_element_t<0, adalora::testing::backends_under_test>;
  const counting_backend<B> backend;
  adapter_fixture<B> fx(backend, {{4, 6, 5}, {4, 3, 9}}, 3);
  rank_allocator<counting_backend<B>> alloc(c, backend);
  for (std::size_t k = 0; k < fx.size(); ++k) alloc.add_adapter(fx.name(k), fx.views(k));
  auto calls = [&](std::int64_t t) {
    fx.perturb();
    fx.upload();
    const std::size_t before = backend.counts().calls;
    alloc.step(t);
    return backend.counts().calls - before;
  };
  calls(0);
  REQUIRE(calls(1) == 3);  // check, count, in-place pass
  // |θ·g| = 2^56, beyond the safe bound (2^48) but with a finite score (about 2^106): the check flags it, the trial
  // (and its count) clear it
  fx.perturb();
  fx.upload();
  fx.poke(1, "B", 0, 0x1p28f);
  fx.poke(1, "gB", 0, 0x1p28f);
  const std::size_t before = backend.counts().calls;
  alloc.step(2);
  REQUIRE(backend.counts().calls - before == 5);
  // the state it left is beyond the bound ((1 - β1) · 2^56 > 2^48), which the next check sees: trial again
  REQUIRE(calls(3) == 5);
  // once the state is back within the bound, the check suffices again
  std::int64_t t = 4;
  while (calls(t) != 3) REQUIRE(++t < 50);  // Ū decays more slowly than Ī (|I − Ī| feeds it)
  // a restored state has no known bound: the first step after it tries the update whole instead of the check (as
  // many calls; the agreement test in test_allocator_errors.cpp restores a state beyond the bound)
  alloc.restore_state(alloc.save_state());
  REQUIRE(calls(++t) == 3);
  REQUIRE(calls(++t) == 3);
}
