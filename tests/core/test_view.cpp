// Tests of strided views: extents, strides, contiguity, flat indexing, and memory spaces in the type.
#include <catch2/catch.hpp>

#include <numeric>
#include <vector>

#include "adalora/core/view.hpp"

using namespace adalora;

static_assert(MemorySpace<host_space>);
static_assert(MemorySpace<cuda_device_space>);
static_assert(!MemorySpace<int>);
static_assert(!MemorySpace<strided_view<float, 1>>);
// a host view does not convert to a device view, nor the other way round
static_assert(!std::is_convertible_v<matrix_view<float, host_space>, matrix_view<float, cuda_device_space>>);
static_assert(!std::is_convertible_v<matrix_view<float, cuda_device_space>, matrix_view<float, host_space>>);
// mutable views convert to read-only ones, not back
static_assert(std::is_convertible_v<matrix_view<float>, matrix_view<const float>>);
static_assert(!std::is_convertible_v<matrix_view<const float>, matrix_view<float>>);

TEST_CASE("row-major matrix views index like PyTorch", "[view]") {
  std::vector<float> buf(12);
  std::iota(buf.begin(), buf.end(), 0.0f);
  auto m = make_matrix_view(buf.data(), 3, 4);
  REQUIRE(m.size() == 12);
  REQUIRE(m.is_contiguous());
  REQUIRE(m(2, 1) == 9.0f);
  for (std::size_t i = 0; i < 12; ++i) REQUIRE(m.flat(i) == buf[i]);
  REQUIRE(extents_string(m) == "(3, 4)");
}

TEST_CASE("strided views see a transposed matrix", "[view]") {
  std::vector<float> buf(12);
  std::iota(buf.begin(), buf.end(), 0.0f);
  auto t = make_matrix_view(buf.data(), 4, 3, 1, 4);  // the transpose of a 3x4 row-major matrix
  REQUIRE_FALSE(t.is_contiguous());
  REQUIRE(t(1, 2) == 9.0f);
  REQUIRE(t.flat(5) == t(1, 2));
  auto col = vector_view<float>{buf.data() + 1, {3}, {4}};  // column 1
  REQUIRE(col(2) == 9.0f);
  REQUIRE_FALSE(col.is_contiguous());
}

TEST_CASE("empty views", "[view]") {
  matrix_view<float> m{};
  REQUIRE(m.empty());
  auto z = make_matrix_view(static_cast<float*>(nullptr), 0, 5);
  REQUIRE(z.size() == 0);
  REQUIRE(z.is_contiguous());
}
