// Finite-difference checks, in double precision, of the reference adapter and regularizer gradients.
#include <catch2/catch.hpp>

#include <functional>
#include <random>

#include "adalora/reference/adapter_reference.hpp"

using namespace adalora::reference;

namespace {

std::vector<double> randn(std::size_t n, std::mt19937& rng, double scale = 1.0) {
  std::normal_distribution<double> d(0.0, scale);
  std::vector<double> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

/// Checks every element of `analytic` against central differences of f with respect to `param`.
void check_fd(const char* what, std::vector<double>& param, const std::vector<double>& analytic,
              const std::function<double()>& f) {
  REQUIRE(param.size() == analytic.size());
  const double h = 1e-6;
  double worst = 0;
  std::size_t at = 0;
  double nonzero = 0;
  for (std::size_t i = 0; i < param.size(); ++i) {
    const double keep = param[i];
    param[i] = keep + h;
    const double up = f();
    param[i] = keep - h;
    const double down = f();
    param[i] = keep;
    const double fd = (up - down) / (2 * h);
    const double err = std::fabs(fd - analytic[i]) / std::max(1.0, std::fabs(fd));
    nonzero = std::max(nonzero, std::fabs(fd));
    if (err > worst) worst = err, at = i;
  }
  INFO(what << ": worst element " << at << ", analytic " << analytic[at] << ", relative error " << worst);
  REQUIRE(nonzero > 1e-3);  // the check is not vacuous
  REQUIRE(worst < 1e-7);
}

low_rank_params<double> random_params(std::size_t r, std::size_t in, std::size_t out, bool svd, std::mt19937& rng) {
  low_rank_params<double> p;
  p.r = r, p.in = in, p.out = out;
  p.A = randn(r * in, rng);
  p.B = randn(out * r, rng);
  if (svd) p.E = randn(r, rng);
  p.scaling = 1.7;
  return p;
}

}  // namespace

TEST_CASE("SVD and LoRA adapter gradients match finite differences", "[adapter][gradcheck]") {
  std::mt19937 rng(2024);
  for (bool svd : {true, false}) {
    INFO((svd ? "svd" : "lora"));
    const std::size_t batch = 5, r = 3, in = 7, out = 4;
    auto p = random_params(r, in, out, svd, rng);
    auto x = randn(batch * in, rng);
    const auto dy = randn(batch * out, rng);
    auto loss = [&] { return dot(adapter_forward(p, x, batch), dy); };
    const auto g = adapter_backward(p, x, dy, batch);
    check_fd("A", p.A, g.A, loss);
    check_fd("B", p.B, g.B, loss);
    check_fd("x", x, g.x, loss);
    if (svd) check_fd("E", p.E, g.E, loss);
  }
}

TEST_CASE("orthogonal penalty gradients match finite differences", "[adapter][gradcheck]") {
  std::mt19937 rng(7);
  for (bool squared : {false, true}) {
    INFO((squared ? "squared" : "un-squared"));
    auto p = random_params(4, 9, 6, true, rng);
    for (auto& v : p.A) v *= 0.4;
    auto value = [&] {
      const auto o = orthogonal_penalty(p, squared);
      return o.norm_A + o.norm_B;
    };
    const auto o = orthogonal_penalty(p, squared);
    check_fd("A", p.A, o.grad_A, value);
    check_fd("B", p.B, o.grad_B, value);
  }
}

TEST_CASE("the un-squared penalty has gradient 0 at an exactly orthonormal adapter", "[adapter]") {
  low_rank_params<double> p;
  p.r = 2, p.in = 3, p.out = 2;
  p.A = {1, 0, 0, 0, 1, 0};  // rows of the identity: A Aᵀ = I
  p.B = {0, 1, 1, 0};        // Bᵀ B = I
  const auto o = orthogonal_penalty(p);
  REQUIRE(o.norm_A == 0.0);
  REQUIRE(o.norm_B == 0.0);
  for (double g : o.grad_A) REQUIRE(g == 0.0);
  for (double g : o.grad_B) REQUIRE(g == 0.0);
}
