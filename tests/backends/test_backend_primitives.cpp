// Generic tests of the backend primitives, run on every backend of the build and held against plain loops.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "adalora/backends/backend.hpp"
#include "adalora/backends/kth_order.hpp"
#include "adalora/core/host_device.hpp"
#include "support/backends_under_test.hpp"
#include "support/random_values.hpp"

using namespace adalora;
using adalora::testing::backends_under_test;
using adalora::testing::normal_values;

namespace {

template <class B>
struct device_copy {
  B& backend;
  buffer_t<B, float> buf;
  device_copy(B& b, const std::vector<float>& host) : backend(b), buf(b.template allocate<float>(host.size())) {
    b.copy_from_host(host.data(), host.size(), buf.data());
  }
  std::vector<float> host(std::size_t n) const {
    std::vector<float> h(n);
    backend.copy_to_host(buf.data(), n, h.data());
    return h;
  }
};

/// Writes i * 2 + 1 into out[i].
struct iota_fn {
  float* out;
  ADALORA_HOST_DEVICE void operator()(std::size_t i) const noexcept { out[i] = static_cast<float>(2 * i + 1); }
};
struct is_negative_fn {
  const float* v;
  ADALORA_HOST_DEVICE bool operator()(std::size_t i) const noexcept { return v[i] < 0.0f; }
};
struct square_fn {
  const float* v;
  ADALORA_HOST_DEVICE float operator()(std::size_t i) const noexcept { return v[i] * v[i]; }
};

void require_close(const std::vector<float>& got, const std::vector<double>& expect, double rtol, double atol) {
  REQUIRE(got.size() == expect.size());
  std::size_t worst = 0;
  double worst_err = -1;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(got[i] - expect[i]) - rtol * std::fabs(expect[i]);
    if (err > worst_err) worst_err = err, worst = i;
  }
  INFO("worst element " << worst << ": expected " << expect[worst] << ", got " << got[worst]);
  REQUIRE(worst_err <= atol);
}

}  // namespace

TEMPLATE_LIST_TEST_CASE("buffers are zeroed; for_each, count_if and transform_sum", "[backend]", backends_under_test) {
  TestType b{};
  auto buf = b.template allocate<float>(37);
  std::vector<float> h(37, 1.0f);
  b.copy_to_host(buf.data(), 37, h.data());
  REQUIRE(std::all_of(h.begin(), h.end(), [](float x) { return x == 0.0f; }));
  b.for_each(37, iota_fn{buf.data()});
  b.copy_to_host(buf.data(), 37, h.data());
  for (std::size_t i = 0; i < 37; ++i) REQUIRE(h[i] == static_cast<float>(2 * i + 1));

  const auto v = normal_values(1001, 3);
  device_copy<TestType> d(b, v);
  const auto negatives = static_cast<std::size_t>(std::count_if(v.begin(), v.end(), [](float x) { return x < 0; }));
  REQUIRE(negatives > 100);
  REQUIRE(b.count_if(v.size(), is_negative_fn{d.buf.data()}) == negatives);
  double sq = 0;
  for (float x : v) sq += double(x) * x;
  REQUIRE(b.transform_sum(v.size(), square_fn{d.buf.data()}) == Approx(sq).epsilon(1e-6));
  REQUIRE(b.transform_sum(0, square_fn{d.buf.data()}) == 0.0);

  auto idx = b.template allocate<std::size_t>(5);
  const std::vector<std::size_t> hi = {4, 0, 99, 7, 1};
  b.copy_from_host(hi.data(), 5, idx.data());
  std::vector<std::size_t> back(5);
  b.copy_to_host(idx.data(), 5, back.data());
  REQUIRE(back == hi);
}

TEMPLATE_LIST_TEST_CASE("column sums", "[backend]", backends_under_test) {
  TestType b{};
  for (auto [rows, cols] : {std::pair<std::size_t, std::size_t>{7, 13}, {1, 300}, {300, 1}, {64, 64}, {0, 5}}) {
    // multiples of 2^-20 in (-1, 1): every partial sum is exact in double, so that the rounded total is the same in
    // whatever order a backend adds, and can be required exactly
    auto m = normal_values(rows * cols, static_cast<unsigned>(rows * 31 + cols));
    for (auto& x : m) x = std::ldexp(std::round(std::ldexp(x, 20)), -20);
    device_copy<TestType> d(b, m);
    std::vector<double> sums(cols, 0.0);
    for (std::size_t i = 0; i < rows; ++i)
      for (std::size_t j = 0; j < cols; ++j) sums[j] += m[i * cols + j];
    auto out = b.template allocate<float>(cols);
    std::vector<float> poison(cols, std::numeric_limits<float>::quiet_NaN());
    b.copy_from_host(poison.data(), cols, out.data());
    b.col_sums(d.buf.data(), rows, cols, out.data());
    std::vector<float> host(cols);
    b.copy_to_host(out.data(), cols, host.data());
    for (std::size_t j = 0; j < cols; ++j) REQUIRE(host[j] == static_cast<float>(sums[j]));
  }
}

TEMPLATE_LIST_TEST_CASE("k-th smallest", "[backend]", backends_under_test) {
  TestType b{};
  auto v = normal_values(513, 9);
  v[10] = v[20] = v[30] = 0.25f;  // ties
  device_copy<TestType> d(b, v);
  auto sorted = v;
  std::sort(sorted.begin(), sorted.end());
  for (std::size_t k : {std::size_t{1}, std::size_t{2}, std::size_t{100}, std::size_t{256}, std::size_t{513}})
    REQUIRE(b.kth_smallest(d.buf.data(), v.size(), k) == sorted[k - 1]);
  REQUIRE(d.host(v.size()) == v);  // the input is left as it was
}

TEST_CASE("kth_smallest's order: numbers by value, -0 equal to +0, every NaN last", "[backend][kth]") {
  using detail::kth_order_key;
  using detail::kth_order_value;
  constexpr float inf = std::numeric_limits<float>::infinity();
  static_assert(kth_order_key(-0.0f) == kth_order_key(0.0f));
  static_assert(kth_order_key(-inf) < kth_order_key(-1.0f) && kth_order_key(-1.0f) < kth_order_key(-1e-45f));
  static_assert(kth_order_key(-1e-45f) < kth_order_key(0.0f) && kth_order_key(0.0f) < kth_order_key(1e-45f));
  static_assert(kth_order_key(1e-45f) < kth_order_key(1.0f) && kth_order_key(1.0f) < kth_order_key(inf));
  static_assert(kth_order_value(kth_order_key(-0.0f)) == 0.0f);
  static_assert(detail::float_to_bits(kth_order_value(kth_order_key(-0.0f))) == 0u);  // a zero comes back as +0
  for (const std::uint32_t nan : {0x7fc00000u, 0xffc00000u, 0x7f800001u, 0xffbfffffu, 0x7fc12345u}) {
    INFO("NaN bits " << std::hex << nan);
    REQUIRE(kth_order_key(detail::bits_to_float(nan)) > kth_order_key(inf));
    REQUIRE(detail::float_to_bits(kth_order_value(kth_order_key(detail::bits_to_float(nan)))) == 0x7fc00000u);
  }
  for (const float x : {-inf, -3.5f, -1e-45f, 1e-45f, 2.0f, 3e38f, inf})
    REQUIRE(detail::float_to_bits(kth_order_value(kth_order_key(x))) == detail::float_to_bits(x));
}

TEMPLATE_LIST_TEST_CASE("k-th smallest in the stated order, with -0, +0, infinities and NaNs", "[backend][kth]",
                        backends_under_test) {
  TestType b{};
  const float inf = std::numeric_limits<float>::infinity();
  const auto bits = [](std::uint32_t u) { return detail::bits_to_float(u); };
  // Large enough for the GPU's sort and the generic radix select; the special values at random places.
  auto v = normal_values(3001, 17);
  std::mt19937 rng(4);
  std::uniform_int_distribution<std::size_t> at(0, v.size() - 1);
  const float specials[] = {-0.0f, 0.0f, -0.0f, bits(0x7fc00000u), bits(0xffc00000u), bits(0x7fc12345u),
                            bits(0xffd00001u), inf, -inf, inf};
  for (std::size_t copy = 0; copy < 40; ++copy)
    for (float x : specials) v[at(rng)] = x;
  // the expected order, built without the keys: NaNs counted and set aside, -0 written as +0, the rest sorted by <
  std::vector<float> numbers;
  std::size_t nans = 0;
  for (float x : v) {
    if (std::isnan(x)) ++nans;
    else numbers.push_back(x == 0.0f ? 0.0f : x);
  }
  std::sort(numbers.begin(), numbers.end());
  REQUIRE(nans >= 40);
  REQUIRE(std::count(v.begin(), v.end(), 0.0f) >= 20);
  REQUIRE(std::count_if(v.begin(), v.end(), [](float x) { return x == 0.0f && std::signbit(x); }) >= 10);
  device_copy<TestType> d(b, v);
  const auto zeros_from = static_cast<std::size_t>(std::lower_bound(numbers.begin(), numbers.end(), 0.0f) - numbers.begin());
  std::vector<std::size_t> ks = {1, 2, zeros_from + 1, zeros_from + 2, numbers.size() / 2, numbers.size(),
                                 numbers.size() + 1, v.size()};
  for (std::size_t k = 1; k <= v.size(); k += 97) ks.push_back(k);
  for (const std::size_t k : ks) {
    const std::uint32_t expect = k <= numbers.size() ? detail::float_to_bits(numbers[k - 1]) : 0x7fc00000u;
    const std::uint32_t got = detail::float_to_bits(b.kth_smallest(d.buf.data(), v.size(), k));
    INFO(TestType::name << ": k = " << k << " of " << v.size() << " (" << nans << " NaNs): expected bits " << std::hex
                        << expect << ", got " << got);
    REQUIRE(got == expect);
  }
  // bit for bit as it was (NaN payloads and -0 included): the selection works on a copy
  const auto back = d.host(v.size());
  REQUIRE(std::memcmp(back.data(), v.data(), v.size() * sizeof(float)) == 0);
}

TEMPLATE_LIST_TEST_CASE("gemm in all four transposition cases, with strides and beta", "[backend]",
                        backends_under_test) {
  TestType b{};
  struct shape {
    std::size_t m, n, k;
  };
  // small; and wide enough for several column blocks of the Thrust host form, with ragged ends (301 = 2·128 + 45)
  for (const shape sh : {shape{9, 7, 11}, shape{5, 301, 37}, shape{3, 4, 0}})
    for (transpose ta : {transpose::no, transpose::yes})
      for (transpose tb : {transpose::no, transpose::yes})
        for (float beta : {0.0f, 0.5f}) {
          const std::size_t m = sh.m, n = sh.n, k = sh.k, pad = 3;
          const std::size_t a_rows = ta == transpose::no ? m : k, a_cols = ta == transpose::no ? k : m;
          const std::size_t b_rows = tb == transpose::no ? k : n, b_cols = tb == transpose::no ? n : k;
          const std::size_t lda = a_cols + pad, ldb = b_cols + pad, ldc = n + pad;
          const auto A = normal_values(std::max<std::size_t>(a_rows * lda, 1), 1);
          const auto Bm = normal_values(std::max<std::size_t>(b_rows * ldb, 1), 2);
          auto C = normal_values(m * ldc, 3);
          if (beta == 0.0f) C[0] = std::nanf("");  // must not be read
          auto a_at = [&](std::size_t i, std::size_t p) {
            return ta == transpose::no ? A[i * lda + p] : A[p * lda + i];
          };
          auto b_at = [&](std::size_t p, std::size_t j) {
            return tb == transpose::no ? Bm[p * ldb + j] : Bm[j * ldb + p];
          };
          std::vector<double> expect(m * ldc);
          for (std::size_t i = 0; i < m; ++i)
            for (std::size_t j = 0; j < ldc; ++j) {
              if (j >= n) {
                expect[i * ldc + j] = C[i * ldc + j];  // padding untouched
                continue;
              }
              double s = 0;
              for (std::size_t p = 0; p < k; ++p) s += double(a_at(i, p)) * b_at(p, j);
              expect[i * ldc + j] = 1.5 * s + (beta == 0.0f ? 0.0 : double(beta) * C[i * ldc + j]);
            }
          device_copy<TestType> dA(b, A), dB(b, Bm), dC(b, C);
          b.gemm(ta, tb, m, n, k, 1.5f, dA.buf.data(), lda, dB.buf.data(), ldb, beta, dC.buf.data(), ldc);
          INFO("m " << m << " n " << n << " k " << k << " op_a " << (ta == transpose::yes) << " op_b "
                    << (tb == transpose::yes) << " beta " << beta);
          require_close(dC.host(m * ldc), expect, 1e-5, 1e-5);
        }
}

TEMPLATE_LIST_TEST_CASE("gemm with k = 0 reads no operand (they may be null): C = 0, or beta · C", "[backend]",
                        backends_under_test) {
  TestType b{};
  const std::size_t m = 3, n = 5;
  for (transpose ta : {transpose::no, transpose::yes})
    for (transpose tb : {transpose::no, transpose::yes})
      for (float beta : {0.0f, 0.5f}) {
        auto C = normal_values(m * n, 4);
        if (beta == 0.0f) C[2] = std::nanf("");  // must not be read
        device_copy<TestType> dC(b, C);
        b.gemm(ta, tb, m, n, 0, 2.0f, nullptr, 7, nullptr, 9, beta, dC.buf.data(), n);
        const auto got = dC.host(m * n);
        for (std::size_t i = 0; i < m * n; ++i) REQUIRE(got[i] == (beta == 0.0f ? 0.0f : beta * C[i]));
      }
}

#if defined(ADALORA_TEST_THRUST)
#include <cstring>

#include "adalora/backends/thrust/thrust_backend.hpp"
#include "adalora/backends/thrust/thrust_gemm.hpp"

// The Thrust backend's host GEMM (a row × a block of columns per item) against its plain element loop, which the
// CUDA system's generic path runs as it is: the same sums in the same order, so the same bits. Each dot product is
// built so that its order shows: terms of up to 2^40 that cancel exactly in pairs (p and p + h), then small terms
// of about 1, which a different order absorbs into a large partial sum.
TEST_CASE("Thrust GEMM: the host block form gives the bits of the element loop", "[backend][thrust]") {
  std::mt19937 rng(41);
  std::uniform_int_distribution<int> exponent(10, 20);
  struct shape {
    std::size_t m, n, k;
  };
  for (const shape sh : {shape{1, 1, 1}, shape{7, 129, 300}, shape{4, 258, 513}, shape{33, 5, 64}, shape{2, 3, 0}})
    for (transpose ta : {transpose::no, transpose::yes})
      for (transpose tb : {transpose::no, transpose::yes})
        for (float beta : {0.0f, -0.75f}) {
          const std::size_t m = sh.m, n = sh.n, k = sh.k, h = k / 3;
          const std::size_t lda = (ta == transpose::no ? k : m) + 2, ldb = (tb == transpose::no ? n : k) + 1;
          const std::size_t ldc = n + 5;
          auto A = normal_values((ta == transpose::no ? m : k) * lda + 1, rng);
          auto Bm = normal_values((tb == transpose::no ? k : n) * ldb + 1, rng);
          const auto a_at = [&](std::size_t i, std::size_t p) -> float& {
            return A[ta == transpose::no ? i * lda + p : p * lda + i];
          };
          const auto b_at = [&](std::size_t p, std::size_t j) -> float& {
            return Bm[tb == transpose::no ? p * ldb + j : j * ldb + p];
          };
          for (std::size_t p = 0; p < h; ++p) {
            for (std::size_t i = 0; i < m; ++i) {
              a_at(i, p) = std::ldexp(a_at(i, p), exponent(rng));
              a_at(i, p + h) = a_at(i, p);
            }
            for (std::size_t j = 0; j < n; ++j) {
              b_at(p, j) = std::ldexp(b_at(p, j), exponent(rng));
              b_at(p + h, j) = -b_at(p, j);
            }
          }
          auto C = normal_values(m * ldc, rng);
          if (beta == 0.0f) C[0] = std::nanf("");  // must not be read
          std::vector<float> by_element = C, by_block = C, by_omp = C;
          const float alpha = -1.25f;
          const detail::gemm_operands g{A.data(), lda, ta == transpose::yes, Bm.data(), ldb, tb == transpose::yes, m,
                                        n,        k};
          const detail::thrust_gemm_fn element{g, {by_element.data(), ldc, alpha, beta}};
          for (std::size_t idx = 0; idx < m * n; ++idx) element(idx);
          const detail::thrust_gemm_block_fn block{g, {by_block.data(), ldc, alpha, beta}};
          // the items in reverse: each writes its own elements, so their order must not matter
          for (std::size_t idx = detail::thrust_gemm_block_fn::items(m, n); idx-- > 0;) block(idx);
          thrust_omp_backend{}.gemm(ta, tb, m, n, k, alpha, A.data(), lda, Bm.data(), ldb, beta, by_omp.data(), ldc);
          INFO("m " << m << " n " << n << " k " << k << " op_a " << (ta == transpose::yes) << " op_b "
                    << (tb == transpose::yes) << " beta " << beta);
          REQUIRE(std::memcmp(by_block.data(), by_element.data(), C.size() * sizeof(float)) == 0);
          REQUIRE(std::memcmp(by_omp.data(), by_element.data(), C.size() * sizeof(float)) == 0);
        }
}
#endif
