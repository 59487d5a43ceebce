// AdamW against PyTorch's update rule written out in double, on every backend.
#include <catch2/catch.hpp>

#include <cmath>
#include <random>

#include "adalora/optim/adamw.hpp"
#include "support/backends_under_test.hpp"

using namespace adalora;
using adalora::testing::backends_under_test;

TEMPLATE_LIST_TEST_CASE("AdamW follows PyTorch's update rule", "[optim]", backends_under_test) {
  TestType b{};
  const std::size_t n = 50;
  std::mt19937 rng(3);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> p(n), g(n);
  for (auto& v : p) v = d(rng);
  auto pd = b.template allocate<float>(n), gd = b.template allocate<float>(n);
  b.copy_from_host(p.data(), n, pd.data());
  adamw_options o;
  o.lr = 0.01;
  o.weight_decay = 0.1;
  adamw<TestType> opt({{pd.data(), gd.data(), n}}, o);
  std::vector<double> ref(p.begin(), p.end()), m(n, 0.0), v(n, 0.0);
  for (int t = 1; t <= 20; ++t) {
    for (auto& x : g) x = d(rng);
    b.copy_from_host(g.data(), n, gd.data());
    opt.step();
    for (std::size_t k = 0; k < n; ++k) {
      ref[k] *= 1.0 - o.lr * o.weight_decay;
      m[k] = o.beta1 * m[k] + (1 - o.beta1) * g[k];
      v[k] = o.beta2 * v[k] + (1 - o.beta2) * double(g[k]) * g[k];
      const double mh = m[k] / (1 - std::pow(o.beta1, t)), vh = v[k] / (1 - std::pow(o.beta2, t));
      ref[k] -= o.lr * mh / (std::sqrt(vh) + o.eps);
    }
  }
  std::vector<float> got(n);
  b.copy_to_host(pd.data(), n, got.data());
  for (std::size_t k = 0; k < n; ++k) {
    INFO("element " << k);
    REQUIRE(got[k] == Approx(ref[k]).margin(1e-5));
    REQUIRE(got[k] != p[k]);
  }
  opt.zero_grad();
  b.copy_to_host(gd.data(), n, got.data());
  for (float x : got) REQUIRE(x == 0.0f);
  REQUIRE_THROWS_AS(adamw<TestType>({}, adamw_options{-1.0}), config_error);
}
