// The allocator step makes the same number of backend calls (kernel launches on a GPU) whatever the adapter count.
#include <catch2/catch.hpp>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "adalora/allocation/rank_allocator.hpp"
#include "adalora/backends/eigen/eigen_backend.hpp"
#include "support/adapter_fixture.hpp"

using namespace adalora;
using adalora::testing::adapter_fixture;

namespace {
/// Eigen, counting every call that would be a launch or a transfer on a device.
struct counting_backend : eigen_backend {
  static constexpr const char* name = "counting";
  std::shared_ptr<std::size_t> calls = std::make_shared<std::size_t>(0);
  template <class F>
  void for_each(std::size_t n, F f) const {
    ++*calls;
    eigen_backend::for_each(n, f);
  }
  template <class P>
  std::size_t count_if(std::size_t n, P p) const {
    ++*calls;
    return eigen_backend::count_if(n, p);
  }
  float kth_smallest(const float* v, std::size_t n, std::size_t k) const {
    ++*calls;
    return eigen_backend::kth_smallest(v, n, k);
  }
  template <class T>
  void copy_to_host(const T* src, std::size_t n, T* dst) const {
    ++*calls;
    eigen_backend::copy_to_host(src, n, dst);
  }
  template <class T>
  void copy_from_host(const T* src, std::size_t n, T* dst) const {
    ++*calls;
    eigen_backend::copy_from_host(src, n, dst);
  }
};
static_assert(Backend<counting_backend>);

/// Backend calls of every step of a run over `adapters` adapters, keyed by the step's phase and whether it masked.
std::map<std::string, std::vector<std::size_t>> calls_per_step(std::size_t adapters) {
  adalora_config c;
  c.init_r = 4;
  c.target_r = 2;
  c.tinit = 2;
  c.tfinal = 3;
  c.total_step = 14;
  c.deltaT = 2;
  std::vector<adalora::testing::adapter_shape> shapes;
  for (std::size_t k = 0; k < adapters; ++k) shapes.push_back({4, 6 + k % 5, 5 + k % 7});
  adapter_fixture<eigen_backend> fx(eigen_backend{}, shapes, 3);
  counting_backend backend;
  rank_allocator<counting_backend> alloc(c, backend);
  // the fixture's views are host memory, which the counting backend (Eigen underneath) shares
  for (std::size_t k = 0; k < adapters; ++k) alloc.add_adapter(fx.name(k), fx.views(k));
  std::map<std::string, std::vector<std::size_t>> out;
  for (std::int64_t t = 0; t < c.total_step; ++t) {
    fx.perturb();
    fx.upload();
    const std::size_t before = *backend.calls;
    const auto rep = alloc.step(t);
    const char* phase[] = {"warmup", "budgeting", "final_force", "final_pattern"};
    const std::string key = std::string(phase[static_cast<int>(rep.phase)]) + (rep.masked ? "+mask" : "");
    if (t > 0) out[key].push_back(*backend.calls - before);  // step 0 also uploads the plan
  }
  return out;
}
}  // namespace

TEST_CASE("a step's backend calls do not grow with the number of adapters", "[allocator][launches]") {
  const auto few = calls_per_step(2);
  const auto many = calls_per_step(60);
  REQUIRE(few == many);
  // an update step: the fused pass and its non-finite count
  for (std::size_t n : few.at("warmup")) REQUIRE(n == 2);
  // a mask step: fused pass, count, triplet scores, selection, keep, mask, two copies to the host
  for (std::size_t n : few.at("budgeting")) REQUIRE(n == 2);
  for (std::size_t n : few.at("budgeting+mask")) REQUIRE(n == 8);
  // the forced mask scores the held state instead of updating it: no count
  for (std::size_t n : few.at("final_force+mask")) REQUIRE(n == 7);
  for (std::size_t n : few.at("final_pattern+mask")) REQUIRE(n == 1);
}
