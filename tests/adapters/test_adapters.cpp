// Generic tests of the adapter layers on every backend, held against the double-precision reference.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <random>
#include <tuple>

#include "adalora/adapters/lora_adapter.hpp"
#include "adalora/adapters/orthogonal_regularizer.hpp"
#include "adalora/adapters/svd_adapter.hpp"
#include "adalora/reference/adapter_reference.hpp"
#include "support/backends_under_test.hpp"
#include "support/random_values.hpp"

using namespace adalora;
using adalora::testing::backends_under_test;
using adalora::testing::normal_values;

// both adapter kinds are Adapters on every backend under test
static_assert([]<class... B>(std::tuple<B...>*) {
  return (... && (Adapter<svd_adapter<B>> && Adapter<lora_adapter<B>>));
}(static_cast<backends_under_test*>(nullptr)));
static_assert(!Adapter<svd_adapter_views<float>>);
static_assert(!Adapter<int>);

namespace {

template <class B>
struct dev {
  B backend{};
  using S = typename B::memory_space;
  buffer_t<B, float> put(const std::vector<float>& h) {
    auto d = backend.template allocate<float>(h.size());
    backend.copy_from_host(h.data(), h.size(), d.data());
    return d;
  }
  template <class Buf>
  std::vector<float> get(const Buf& d, std::size_t n) {
    std::vector<float> h(n);
    backend.copy_to_host(d.data(), n, h.data());
    return h;
  }
  std::vector<float> read(const float* p, std::size_t n) {
    std::vector<float> h(n);
    backend.copy_to_host(p, n, h.data());
    return h;
  }
  matrix_view<const float, S> cview(const buffer_t<B, float>& d, std::size_t rows, std::size_t cols) {
    return make_matrix_view<S>(static_cast<const float*>(d.data()), rows, cols);
  }
  matrix_view<float, S> view(buffer_t<B, float>& d, std::size_t rows, std::size_t cols) {
    return make_matrix_view<S>(d.data(), rows, cols);
  }
};

std::vector<double> to_double(const std::vector<float>& v) {
  return {v.begin(), v.end()};
}

void require_close(const std::vector<float>& got, const std::vector<double>& expect, double rtol, const char* what) {
  REQUIRE(got.size() == expect.size());
  double scale = 0;
  for (double e : expect) scale = std::max(scale, std::fabs(e));
  std::size_t worst = 0;
  double err = -1;
  for (std::size_t i = 0; i < got.size(); ++i)
    if (std::fabs(got[i] - expect[i]) > err) err = std::fabs(got[i] - expect[i]), worst = i;
  INFO(what << ": worst element " << worst << " expected " << expect[worst] << ", got " << got[worst]);
  REQUIRE(scale > 0);
  REQUIRE(err <= rtol * scale);
}

}  // namespace

TEMPLATE_LIST_TEST_CASE("a new adapter leaves the base output unchanged", "[adapter]", backends_under_test) {
  dev<TestType> d;
  const std::size_t batch = 3, in = 10, out = 6;
  auto x = d.put(normal_values(batch * in, 1));
  const auto y0 = normal_values(batch * out, 2);
  auto y = d.put(y0);
  svd_adapter<TestType> svd(in, out, 4, {});
  svd.forward(d.cview(x, batch, in), d.view(y, batch, out));
  REQUIRE(d.get(y, batch * out) == y0);  // λ = 0 exactly
  lora_adapter<TestType> lora(in, out, 4, {});
  lora.forward(d.cview(x, batch, in), d.view(y, batch, out));
  REQUIRE(d.get(y, batch * out) == y0);  // B = 0 exactly
  // P and Q are not zero: N(0, 0.02²)
  const auto a = d.read(svd.lora_A().data, 4 * in);
  double ss = 0;
  for (float v : a) ss += double(v) * v;
  REQUIRE(std::sqrt(ss / a.size()) == Approx(0.02).epsilon(0.5));
}

TEMPLATE_LIST_TEST_CASE("adapter forward and backward match the reference", "[adapter]", backends_under_test) {
  dev<TestType> d;
  for (bool use_svd : {true, false}) {
    INFO((use_svd ? "svd_adapter" : "lora_adapter"));
    const std::size_t batch = 6, in = 13, out = 9, r = 5;
    const auto A = normal_values(r * in, 3), E = normal_values(r, 4), Bm = normal_values(out * r, 5);
    const auto x = normal_values(batch * in, 6), dy = normal_values(batch * out, 7), y0 = normal_values(batch * out, 8);
    const auto dx0 = normal_values(batch * in, 9);
    adapter_options o;
    o.lora_alpha = 12;
    svd_adapter<TestType> svd(in, out, r, o);
    lora_adapter<TestType> lora(in, out, r, o);
    auto run = [&](auto& layer) {
      layer.load(A, E, Bm);
      auto dxb = d.put(x), dyb = d.put(dy), yb = d.put(y0), dxo = d.put(dx0);
      layer.forward(d.cview(dxb, batch, in), d.view(yb, batch, out));
      layer.backward(d.cview(dyb, batch, out), d.view(dxo, batch, in));
      layer.backward(d.cview(dyb, batch, out));  // gradients accumulate; dx is optional
      return std::pair{d.get(yb, batch * out), d.get(dxo, batch * in)};
    };
    const auto [y, dx] = use_svd ? run(svd) : run(lora);

    reference::low_rank_params<double> p;
    p.r = r, p.in = in, p.out = out;
    p.A = to_double(A), p.B = to_double(Bm);
    if (use_svd) p.E = to_double(E);
    p.scaling = use_svd ? svd.scaling() : lora.scaling();
    REQUIRE(svd.scaling() == Approx(12.0 / (5 + 1e-5)));
    REQUIRE(lora.scaling() == Approx(12.0 / 5));
    auto ey = reference::adapter_forward(p, to_double(x), batch);
    for (std::size_t i = 0; i < ey.size(); ++i) ey[i] += y0[i];
    const auto g = reference::adapter_backward(p, to_double(x), to_double(dy), batch);
    require_close(y, ey, 1e-5, "y");
    std::vector<double> edx(g.x);
    for (std::size_t i = 0; i < edx.size(); ++i) edx[i] += dx0[i];
    require_close(dx, edx, 1e-5, "dx");
    auto twice = [](std::vector<double> v) {
      for (auto& e : v) e *= 2;
      return v;
    };
    if (use_svd) {
      require_close(d.read(svd.grad_A().data, r * in), twice(g.A), 1e-5, "grad_A");
      require_close(d.read(svd.grad_E().data, r), twice(g.E), 1e-5, "grad_E");
      require_close(d.read(svd.grad_B().data, out * r), twice(g.B), 1e-5, "grad_B");
      svd.zero_grad();
      for (float v : d.read(svd.grad_A().data, r * in)) REQUIRE(v == 0.0f);
    } else {
      require_close(d.read(lora.grad_A().data, r * in), twice(g.A), 1e-5, "grad_A");
      require_close(d.read(lora.grad_B().data, out * r), twice(g.B), 1e-5, "grad_B");
      REQUIRE(lora.parameters().size() == 2);
    }
  }
}

TEMPLATE_LIST_TEST_CASE("dropout acts on the adapter branch only, in training mode", "[adapter]", backends_under_test) {
  dev<TestType> d;
  const std::size_t batch = 64, in = 32, out = 8, r = 4;
  adapter_options o;
  o.lora_dropout = 0.25;
  o.seed = 5;
  svd_adapter<TestType> layer(in, out, r, o);
  const auto A = normal_values(r * in, 1), E = normal_values(r, 2), Bm = normal_values(out * r, 3),
             x = normal_values(batch * in, 4);
  layer.load(A, E, Bm);
  auto xb = d.put(x);
  auto y_eval = d.put(std::vector<float>(batch * out, 0.0f)), y_train = d.put(std::vector<float>(batch * out, 0.0f));
  layer.train(false);
  layer.forward(d.cview(xb, batch, in), d.view(y_eval, batch, out));
  layer.train(true);
  layer.forward(d.cview(xb, batch, in), d.view(y_train, batch, out));
  // Reconstruct the training-mode input from the same stateless mask the layer used (counter 2: second forward).
  std::vector<double> xd(batch * in);
  std::size_t dropped = 0;
  for (std::size_t k = 0; k < xd.size(); ++k) {
    const bool keep = detail::hash_uniform(5, 2, k) >= 0.25f;
    dropped += keep ? 0 : 1;
    xd[k] = keep ? x[k] / 0.75 : 0.0;
  }
  REQUIRE(dropped > xd.size() / 5);
  REQUIRE(dropped < xd.size() / 3);
  reference::low_rank_params<double> p;
  p.r = r, p.in = in, p.out = out, p.A = to_double(A), p.E = to_double(E), p.B = to_double(Bm);
  p.scaling = layer.scaling();
  require_close(d.get(y_train, batch * out), reference::adapter_forward(p, xd, batch), 1e-5, "y (training)");
  require_close(d.get(y_eval, batch * out), reference::adapter_forward(p, to_double(x), batch), 1e-5, "y (eval)");
  // ∂x passes through the same mask
  const auto dy = normal_values(batch * out, 9);
  auto dyb = d.put(dy);
  auto dxb = d.put(std::vector<float>(batch * in, 0.0f));
  layer.backward(d.cview(dyb, batch, out), d.view(dxb, batch, in));
  auto g = reference::adapter_backward(p, xd, to_double(dy), batch);
  for (std::size_t k = 0; k < g.x.size(); ++k) g.x[k] *= xd[k] == 0.0 ? 0.0 : 1.0 / 0.75;
  require_close(d.get(dxb, batch * in), g.x, 1e-5, "dx");
  require_close(d.read(layer.grad_A().data, r * in), g.A, 1e-5, "grad_A");
}

TEMPLATE_LIST_TEST_CASE("merge and unmerge round-trip; broken adapters refuse to merge", "[adapter]",
                        backends_under_test) {
  dev<TestType> d;
  const std::size_t batch = 4, in = 11, out = 7, r = 3;
  svd_adapter<TestType> layer(in, out, r, {});
  layer.load(normal_values(r * in, 1), normal_values(r, 2), normal_values(out * r, 3));
  const auto W0 = normal_values(out * in, 4), x = normal_values(batch * in, 5);
  auto W = d.put(W0), xb = d.put(x);
  // unmerged output: x Wᵀ + adapter(x)
  auto y_split = d.put(std::vector<float>(batch * out, 0.0f));
  d.backend.gemm(transpose::no, transpose::yes, batch, out, in, 1.0f, xb.data(), in, W.data(), in, 0.0f, y_split.data(),
                 out);
  layer.forward(d.cview(xb, batch, in), d.view(y_split, batch, out));
  layer.merge(d.view(W, out, in));
  REQUIRE(layer.merged());
  auto y_merged = d.put(std::vector<float>(batch * out, 0.0f));
  d.backend.gemm(transpose::no, transpose::yes, batch, out, in, 1.0f, xb.data(), in, W.data(), in, 0.0f,
                 y_merged.data(), out);
  require_close(d.get(y_merged, batch * out), to_double(d.get(y_split, batch * out)), 1e-5, "merged output");
  REQUIRE_THROWS_AS(layer.merge(d.view(W, out, in)), usage_error);
  REQUIRE_THROWS_AS(layer.forward(d.cview(xb, batch, in), d.view(y_merged, batch, out)), usage_error);
  layer.unmerge(d.view(W, out, in));
  require_close(d.get(W, out * in), to_double(W0), 1e-6, "W after unmerge");
  REQUIRE_THROWS_AS(layer.unmerge(d.view(W, out, in)), usage_error);
  REQUIRE_THROWS_AS(layer.merge(d.view(W, in, out)), shape_error);

  auto E = normal_values(r, 2);
  E[1] = std::numeric_limits<float>::quiet_NaN();
  layer.load(normal_values(r * in, 1), E, normal_values(out * r, 3));
  const auto before = d.get(W, out * in);
  REQUIRE_THROWS_WITH(layer.merge(d.view(W, out, in)), Catch::Contains("W is left unchanged"));
  REQUIRE_FALSE(layer.merged());
  const auto after = d.get(W, out * in);
  REQUIRE(std::memcmp(before.data(), after.data(), before.size() * sizeof(float)) == 0);

  // a transposed (strided) base weight works too
  svd_adapter<TestType> other(in, out, r, {});
  other.load(normal_values(r * in, 6), normal_values(r, 7), normal_values(out * r, 8));
  auto Wt = d.put(std::vector<float>(in * out, 0.0f));  // stored in × out
  other.merge(
      make_matrix_view<typename TestType::memory_space>(Wt.data(), out, in, 1, static_cast<std::ptrdiff_t>(out)));
  const auto delta = other.delta_weight();
  const auto wt = d.get(Wt, in * out);
  for (std::size_t o = 0; o < out; ++o)
    for (std::size_t j = 0; j < in; ++j) REQUIRE(wt[j * out + o] == delta[o * in + j]);
}

TEMPLATE_LIST_TEST_CASE("a shrunk adapter equals the masked full-rank one", "[adapter]", backends_under_test) {
  dev<TestType> d;
  const std::size_t batch = 5, in = 12, out = 10, r = 6;
  adapter_options o;
  o.lora_alpha = 16;
  svd_adapter<TestType> full(in, out, r, o);
  const std::vector<bool> keep = {true, false, true, true, false, false};
  auto E = normal_values(r, 2);
  for (std::size_t i = 0; i < r; ++i)
    if (!keep[i]) E[i] = 0.0f;  // what the allocator's mask leaves
  full.load(normal_values(r * in, 1), E, normal_values(out * r, 3));
  const auto x = normal_values(batch * in, 4);
  auto xb = d.put(x);
  auto y_full = d.put(std::vector<float>(batch * out, 0.0f)), y_small = d.put(std::vector<float>(batch * out, 0.0f));
  full.forward(d.cview(xb, batch, in), d.view(y_full, batch, out));
  auto small = full.shrink(keep);
  REQUIRE(small.rank() == 3);
  REQUIRE(small.init_r() == r);
  REQUIRE(small.scaling() == full.scaling());  // α / (init_r + 1e-5), never the new rank
  small.forward(d.cview(xb, batch, in), d.view(y_small, batch, out));
  require_close(d.get(y_small, batch * out), to_double(d.get(y_full, batch * out)), 1e-6, "shrunk output");

  auto none = full.shrink(std::vector<bool>(r, false));
  REQUIRE(none.rank() == 0);
  auto y_none = d.put(std::vector<float>(batch * out, 1.0f));
  none.forward(d.cview(xb, batch, in), d.view(y_none, batch, out));
  for (float v : d.get(y_none, batch * out)) REQUIRE(v == 1.0f);
  REQUIRE_THROWS_AS(full.shrink({true}), shape_error);
}

TEMPLATE_LIST_TEST_CASE("the orthogonal regularizer matches the reference in both forms", "[adapter][orth]",
                        backends_under_test) {
  dev<TestType> d;
  using S = typename TestType::memory_space;
  const std::vector<std::array<std::size_t, 3>> shapes = {{4, 9, 7}, {2, 5, 12}, {0, 3, 3}, {6, 6, 6}};
  for (auto form : {orth_reg_form::peft, orth_reg_form::paper_squared}) {
    std::vector<svd_adapter<TestType>> layers;
    for (std::size_t k = 0; k < shapes.size(); ++k) {
      const auto [r, in, out] = shapes[k];
      layers.emplace_back(in, out, r, adapter_options{});
      layers.back().load(normal_values(r * in, 10 + unsigned(k), 0.5f), normal_values(r, 20),
                         normal_values(out * r, 30 + unsigned(k), 0.5f));
    }
    std::vector<svd_adapter<TestType>*> ptrs;
    for (auto& l : layers) ptrs.push_back(&l);
    const double gamma = 0.3;
    const double value =
        orthogonal_regularization<TestType>(std::span<svd_adapter<TestType>* const>(ptrs), gamma, form);
    const bool squared = form == orth_reg_form::paper_squared;
    const double coef = gamma / (squared ? 1.0 : 2.0 * shapes.size());
    double expect = 0;
    for (std::size_t k = 0; k < shapes.size(); ++k) {
      const auto [r, in, out] = shapes[k];
      reference::low_rank_params<double> p;
      p.r = r, p.in = in, p.out = out;
      p.A = to_double(d.read(layers[k].lora_A().data, r * in));
      p.B = to_double(d.read(layers[k].lora_B().data, out * r));
      const auto o = reference::orthogonal_penalty(p, squared);
      expect += coef * (o.norm_A + o.norm_B);
      if (r == 0) continue;
      auto ga = o.grad_A, gb = o.grad_B;
      for (auto& v : ga) v *= coef;
      for (auto& v : gb) v *= coef;
      require_close(d.read(layers[k].grad_A().data, r * in), ga, 1e-5, "grad_A");
      require_close(d.read(layers[k].grad_B().data, out * r), gb, 1e-5, "grad_B");
    }
    REQUIRE(value == Approx(expect).epsilon(1e-5));
  }
  // value only, when no gradient views are given
  svd_adapter<TestType> l(5, 5, 2, {});
  const orthogonal_views<S> v{l.lora_A(), l.lora_B(), {}, {}};
  REQUIRE(orthogonal_regularization(d.backend, std::span<const orthogonal_views<S>>(&v, 1), 1.0) > 0.0);
  REQUIRE_THROWS_AS(orthogonal_regularization(d.backend, std::span<const orthogonal_views<S>>(&v, 1), -1.0),
                    config_error);
}

TEMPLATE_LIST_TEST_CASE("adapter misuse is a clear error", "[adapter][errors]", backends_under_test) {
  dev<TestType> d;
  svd_adapter<TestType> layer(8, 4, 2, {});
  auto x = d.put(std::vector<float>(3 * 8, 1.0f)), y = d.put(std::vector<float>(3 * 4, 0.0f));
  REQUIRE_THROWS_WITH(layer.backward(d.cview(y, 3, 4)), Catch::Contains("backward() before any forward()"));
  REQUIRE_THROWS_WITH(layer.forward(d.cview(x, 4, 6), d.view(y, 3, 4)),
                      Catch::Contains("x is (4, 6), expected (4, 8)"));
  REQUIRE_THROWS_WITH(layer.forward(d.cview(x, 3, 8), d.view(y, 3, 3)),
                      Catch::Contains("y is (3, 3), expected (3, 4)"));
  auto strided = make_matrix_view<typename TestType::memory_space>(static_cast<const float*>(x.data()), 3, 8, 8, 2);
  REQUIRE_THROWS_WITH(layer.forward(strided, d.view(y, 3, 4)), Catch::Contains("row-major with unit column stride"));
  REQUIRE_THROWS_AS(svd_adapter<TestType>(0, 4, 2, {}), shape_error);
  adapter_options o;
  o.lora_dropout = 1.0;
  REQUIRE_THROWS_AS(svd_adapter<TestType>(8, 4, 2, o), config_error);
  REQUIRE_THROWS_AS(layer.load({1.0f}, {}, {}), shape_error);
}
