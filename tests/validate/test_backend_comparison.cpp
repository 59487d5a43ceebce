// The validation API: every backend of the build against the Eigen reference, and a deliberate difference caught.
#include <catch2/catch.hpp>

#include <random>
#include <string>

#include "adalora/backends/eigen/eigen_backend.hpp"
#include "adalora/validate/backend_comparison.hpp"
#include "support/backends_under_test.hpp"
#include "support/random_values.hpp"

using namespace adalora;
using adalora::testing::backends_under_test;
using adalora::testing::normal_values;

namespace {
/// A backend that is Eigen except for an off-by-one selection (the (k+1)-th smallest): what validation must catch.
struct skewed_backend : eigen_backend {
  static constexpr const char* name = "skewed";
  float kth_smallest(const float* v, std::size_t n, std::size_t k) const {
    return eigen_backend::kth_smallest(v, n, k < n ? k + 1 : k);
  }
};
static_assert(Backend<skewed_backend>);
}  // namespace

TEMPLATE_LIST_TEST_CASE("each backend agrees with the Eigen reference", "[validate]", backends_under_test) {
  adalora_config cfg;
  cfg.init_r = 6;
  cfg.target_r = 2;
  cfg.tinit = 2;
  cfg.tfinal = 4;
  cfg.total_step = 20;
  cfg.deltaT = 2;
  validate::allocator_comparison<eigen_backend, TestType> cmp(cfg);
  const std::vector<std::array<std::size_t, 3>> shapes = {{6, 20, 12}, {6, 8, 30}, {6, 16, 16}};
  for (std::size_t k = 0; k < shapes.size(); ++k)
    cmp.add_adapter("m" + std::to_string(k), shapes[k][0], shapes[k][1], shapes[k][2]);
  std::mt19937 rng(5);
  for (std::int64_t t = 0; t < 24; ++t) {
    for (std::size_t k = 0; k < shapes.size(); ++k) {
      const auto [r, in, out] = shapes[k];
      cmp.set_inputs("m" + std::to_string(k), normal_values(r * in, rng), normal_values(r, rng),
                     normal_values(out * r, rng), normal_values(r * in, rng), normal_values(r, rng),
                     normal_values(out * r, rng));
    }
    cmp.step(t);
  }
  INFO(cmp.report().to_string());
  REQUIRE(cmp.report().masks_agree);
  REQUIRE(cmp.report().find("triplet scores")->compared > 100);
  REQUIRE(cmp.report().within(1e-5));
  REQUIRE(cmp.report().to_string().find("masks and budgets: agree") != std::string::npos);

  std::mt19937 rng2(8);
  const std::size_t in = 24, out = 18, r = 5, batch = 7;
  const auto rep = validate::compare_adapter_passes<eigen_backend, TestType>(
      in, out, r, 10.0f, normal_values(r * in, rng2), normal_values(r, rng2), normal_values(out * r, rng2),
      normal_values(batch * in, rng2), normal_values(batch * out, rng2));
  INFO(rep.to_string());
  REQUIRE(rep.find("grad_x")->compared == batch * in);
  REQUIRE(rep.within(1e-5));
  REQUIRE_FALSE(rep.compares_masks);  // adapter passes make no discrete decisions: no masks line in the report
  REQUIRE(rep.to_string().find("masks") == std::string::npos);
}

TEST_CASE("a backend that selects the wrong threshold is caught", "[validate]") {
  adalora_config cfg;
  cfg.init_r = 4;
  cfg.target_r = 1;
  cfg.total_step = 10;
  validate::allocator_comparison<eigen_backend, skewed_backend> cmp(cfg);
  cmp.add_adapter("a", 4, 10, 6);
  cmp.add_adapter("b", 4, 10, 6);
  std::mt19937 rng(1);
  for (std::int64_t t = 0; t < 8; ++t) {
    for (const char* n : {"a", "b"})
      cmp.set_inputs(n, normal_values(40, rng), normal_values(4, rng), normal_values(24, rng), normal_values(40, rng),
                     normal_values(4, rng), normal_values(24, rng));
    cmp.step(t);
  }
  INFO(cmp.report().to_string());
  REQUIRE(cmp.report().find("threshold")->max_rel > 1e-3);
  REQUIRE_FALSE(cmp.report().masks_agree);
  REQUIRE_FALSE(cmp.report().within(1e-5));
  REQUIRE(cmp.report().to_string().find("masks and budgets: DIFFER at step ") != std::string::npos);
  REQUIRE_THROWS_AS(cmp.set_inputs("a", {}, {}, {}, {}, {}, {}), shape_error);
}
