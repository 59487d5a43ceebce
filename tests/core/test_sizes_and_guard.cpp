// Hostile sizes and concurrent use: checked size arithmetic, views that describe impossible memory, the config's
// scaling range, and the guard that turns overlapping calls into a usage_error.
#include <catch2/catch.hpp>

#include <cstddef>
#include <cstdint>
#include <limits>

#include "adalora/core/checked_size.hpp"
#include "adalora/core/config.hpp"
#include "adalora/core/usage_guard.hpp"
#include "adalora/core/view.hpp"

using namespace adalora;

namespace {
constexpr std::size_t size_max = std::numeric_limits<std::size_t>::max();
constexpr std::ptrdiff_t ptrdiff_max = std::numeric_limits<std::ptrdiff_t>::max();
}  // namespace

TEST_CASE("checked size arithmetic reports overflow instead of wrapping", "[sizes]") {
  REQUIRE(checked_mul(3, 4) == std::size_t{12});
  REQUIRE(checked_mul(size_max, 1) == size_max);
  REQUIRE_FALSE(checked_mul(size_max, 2).has_value());
  REQUIRE_FALSE(checked_mul(std::size_t{1} << 32, std::size_t{1} << 32).has_value());
  REQUIRE(checked_add(size_max - 1, 1) == size_max);
  REQUIRE_FALSE(checked_add(size_max, 1).has_value());
  // the layer trace of issue 17: d_out × d_in = 2^32 × 2^32 wrapped to 0
  REQUIRE_FALSE(checked_product({std::size_t{1} << 32, std::size_t{1} << 32}).has_value());
  REQUIRE(checked_product({std::size_t{1} << 32, std::size_t{1} << 32, 0}) == std::size_t{0});
  REQUIRE(checked_product({}) == std::size_t{1});
  constexpr std::int64_t i64_max = std::numeric_limits<std::int64_t>::max();
  REQUIRE_FALSE(checked_mul_i64(i64_max, 2).has_value());
  REQUIRE(checked_mul_i64(i64_max, 1) == i64_max);
  REQUIRE_FALSE(checked_add_i64(i64_max, 1).has_value());
  REQUIRE_THROWS_AS(size_or_throw<shape_error>(checked_mul(size_max, 2), "r × in"), shape_error);
  REQUIRE_THROWS_WITH(size_or_throw<shape_error>(checked_mul(size_max, 2), "r × in"), Catch::Contains("r × in overflows"));
}

TEST_CASE("views that describe memory that cannot exist are named", "[sizes][view]") {
  float x = 0.0f;
  REQUIRE(extents_problem(make_matrix_view(&x, 1, 1)).empty());
  REQUIRE(extents_problem(make_matrix_view(&x, 3, 4)).empty());
  REQUIRE(extents_problem(make_matrix_view(&x, 0, 7)).empty());  // empty: nothing is addressed
  // an extent of SIZE_MAX, or a negative int64 passed as a size, even in an empty view
  REQUIRE_THAT(extents_problem(make_matrix_view(&x, size_max, 4)),
               Catch::Contains("extent 18446744073709551615 (dimension 0 of (18446744073709551615, 4))"));
  REQUIRE_THAT(extents_problem(make_matrix_view(&x, 0, std::size_t{1} << 63)), Catch::Contains("extent 9223372036854775808"));
  // each extent fits, their product does not
  REQUIRE_THAT(extents_problem(make_matrix_view(&x, std::size_t{1} << 40, std::size_t{1} << 40)),
               Catch::Contains("hold more elements than one object can"));
  REQUIRE(extents_problem(make_matrix_view(&x, std::size_t{1} << 30, std::size_t{1} << 30)).empty());
  // offsets beyond ptrdiff_t through the strides, positive or negative
  REQUIRE_THAT(extents_problem(make_matrix_view(&x, 4, 2, ptrdiff_max / 2, 1)), Catch::Contains("reach offsets beyond"));
  REQUIRE_THAT(extents_problem(make_matrix_view(&x, 2, 2, std::numeric_limits<std::ptrdiff_t>::min(), 1)),
               Catch::Contains("strides (-9223372036854775808, 1)"));
  REQUIRE(extents_problem(make_matrix_view(&x, 1, 2, std::numeric_limits<std::ptrdiff_t>::min(), 1)).empty());
}

TEST_CASE("a lora_alpha whose float32 scaling is infinite is a config error", "[config][sizes]") {
  adalora_config c;
  c.total_step = 10;
  c.lora_alpha = 1e300;
  REQUIRE_THROWS_AS(c.validate(), config_error);
  REQUIRE_THROWS_WITH(c.validate(), Catch::Contains("gives an infinite scaling"));
  c.lora_alpha = -1e300;  // α ≤ 0 means α = init_r: finite
  REQUIRE_NOTHROW(c.validate());
  c.lora_alpha = 3.0e38;  // within float's range, and so is α / (init_r + 1e-5)
  REQUIRE_NOTHROW(c.validate());
  c.init_r = 0;
  c.target_r = 0;  // α / 1e-5 overflows float
  REQUIRE_THROWS_WITH(c.validate(), Catch::Contains("infinite scaling"));
  REQUIRE(adapter_scaling(1e300, 4) == std::numeric_limits<float>::infinity());
  REQUIRE(adapter_scaling(8.0, 4) == 8.0f / (4.0f + 1e-5f));
}

TEST_CASE("the usage guard lets reading calls overlap and refuses anything that overlaps a writing call",
          "[threads]") {
  detail::usage_guard g;
  {
    const detail::usage_guard::reading a(g, "ranks", "thing");
    const detail::usage_guard::reading b(g, "save_state", "thing");  // readers overlap
    REQUIRE_THROWS_AS(detail::usage_guard::writing(g, "step", "thing"), usage_error);
    REQUIRE_THROWS_WITH(detail::usage_guard::writing(g, "step", "thing"),
                        Catch::Contains("step: another call on this thing is running (2 reading it)"));
  }
  {
    const detail::usage_guard::writing w(g, "step", "thing");
    REQUIRE_THROWS_WITH(detail::usage_guard::writing(g, "rebind", "thing"),
                        Catch::Contains("rebind: another call on this thing is running (one that changes it)"));
    REQUIRE_THROWS_WITH(detail::usage_guard::reading(g, "ranks", "thing"),
                        Catch::Contains("a thing is used by one thread at a time"));
    const detail::usage_guard copy = g;  // a copy starts idle
    REQUIRE_NOTHROW(detail::usage_guard::writing(copy, "step", "thing"));
  }
  // released: both kinds work again, and a refused call left nothing held
  REQUIRE_NOTHROW(detail::usage_guard::writing(g, "step", "thing"));
  REQUIRE_NOTHROW(detail::usage_guard::reading(g, "ranks", "thing"));
}
