// Replays a layer trace (format adalora-trace/layer/1): forward, gradients and the regularizer of SVD adapters.
#pragma once

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "adalora/adapters/orthogonal_regularizer.hpp"
#include "adalora/adapters/svd_adapter.hpp"
#include "adalora/backends/backend.hpp"
#include "adalora/core/error.hpp"
#include "adalora/io/safetensors.hpp"
#include "adalora/validate/alloc_trace.hpp"
#include "adalora/validate/trace_result.hpp"

namespace adalora::validate {

/// Relative tolerance against the largest magnitude of each expected tensor (FORMAT.md: about 1e-4).
struct layer_trace_tolerance {
  double rtol = 1e-4;
};

namespace detail {
/// "" when got matches expected within rtol·max|expected|, else the worst element.
inline std::string compare_tensor(const std::vector<float>& expected, const std::vector<float>& got, double rtol) {
  if (expected.size() != got.size())
    return std::to_string(expected.size()) + " values expected, got " + std::to_string(got.size());
  double scale = 0.0;
  for (float v : expected) scale = std::max(scale, std::fabs(static_cast<double>(v)));
  std::size_t worst = 0;
  double worst_err = 0.0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(static_cast<double>(got[i]) - expected[i]);
    if (!(err <= worst_err)) worst_err = err, worst = i;  // NaN counts as worst
  }
  if (got.empty() || worst_err <= rtol * std::max(scale, 1e-30)) return {};
  return "[" + std::to_string(worst) + "]: expected " + format_float(expected[worst]) + ", got " +
         format_float(got[worst]) + " (tolerance " + format_float(rtol * scale) + ")";
}
}  // namespace detail

/// For every case: y = x Wᵀ + adapter(x), the gradients of ⟨y, dy⟩ (A, E, B, x), and the single-adapter
/// regularizer (‖AAᵀ − I‖ + ‖BᵀB − I‖)/2 with its gradients, each compared within `tol`.
template <Backend B>
trace_result replay_layer_trace(const io::safetensors_file& file, B backend = B{},
                                const layer_trace_tolerance& tol = {}) {
  using detail::require_field;
  const auto cases = detail::parse_metadata_json(file, "cases");
  if (!cases.is_array() || cases.empty()) throw format_error("layer trace: 'cases' is not a non-empty list");
  using S = typename B::memory_space;
  trace_result result;
  result.kind = "layer";
  auto to_device = [&](const std::vector<float>& h) {
    auto d = backend.template allocate<float>(h.size());
    backend.copy_from_host(h.data(), h.size(), d.data());
    return d;
  };
  auto to_host = [&](const auto& d, std::size_t n) {
    std::vector<float> h(n);
    backend.copy_to_host(d.data(), n, h.data());
    return h;
  };
  for (const auto& c : cases) {
    const auto id = std::to_string(require_field(c, "case", "a case").template get<long long>());
    const auto d_in = require_field(c, "d_in", "case " + id).template get<std::size_t>();
    const auto d_out = require_field(c, "d_out", "case " + id).template get<std::size_t>();
    const auto r = require_field(c, "r", "case " + id).template get<std::size_t>();
    const auto batch = require_field(c, "batch", "case " + id).template get<std::size_t>();
    const auto alpha = require_field(c, "alpha", "case " + id).template get<double>();
    const std::string p = id + "/";
    auto read = [&](const std::string& key, std::size_t n) {
      auto v = file.read_f32(p + key);
      if (v.size() != n)
        throw format_error("layer trace: " + p + key + " has " + std::to_string(v.size()) + " values, expected " +
                           std::to_string(n));
      return v;
    };
    const auto W = read("W", d_out * d_in), A = read("A", r * d_in), E = read("E", r), Bm = read("B", d_out * r);
    const auto x = read("x", batch * d_in), dy = read("dy", batch * d_out);

    adapter_options o;
    o.lora_alpha = alpha;
    svd_adapter<B> layer(d_in, d_out, r, o, backend);
    layer.load(A, E, Bm);
    auto dW = to_device(W), dx_in = to_device(x), ddy = to_device(dy);
    // base layer: y = x Wᵀ, ∂x = dy W
    auto dyout = backend.template allocate<float>(batch * d_out);
    auto dgx = backend.template allocate<float>(batch * d_in);
    backend.gemm(transpose::no, transpose::yes, batch, d_out, d_in, 1.0f, dx_in.data(), d_in, dW.data(), d_in, 0.0f,
                 dyout.data(), d_out);
    backend.gemm(transpose::no, transpose::no, batch, d_in, d_out, 1.0f, ddy.data(), d_out, dW.data(), d_in, 0.0f,
                 dgx.data(), d_in);
    const auto xv = make_matrix_view<S>(static_cast<const float*>(dx_in.data()), batch, d_in);
    layer.forward(xv, make_matrix_view<S>(dyout.data(), batch, d_out));
    layer.backward(make_matrix_view<S>(static_cast<const float*>(ddy.data()), batch, d_out),
                   make_matrix_view<S>(dgx.data(), batch, d_in));

    auto check = [&](const std::string& key, const std::vector<float>& got) {
      const auto why = detail::compare_tensor(file.read_f32(p + key), got, tol.rtol);
      return why.empty() ? std::string{} : "case " + id + ", " + key + why;
    };
    auto ga = layer.grad_A(), gb = layer.grad_B();
    auto ge = layer.grad_E();
    for (const auto& [key, got] : std::vector<std::pair<std::string, std::vector<float>>>{
             {"y", to_host(dyout, batch * d_out)},
             {"grad/A", to_host(std::span<float>(ga.data, r * d_in), r * d_in)},
             {"grad/E", to_host(std::span<float>(ge.data, r), r)},
             {"grad/B", to_host(std::span<float>(gb.data, d_out * r), d_out * r)},
             {"grad/x", to_host(dgx, batch * d_in)}})
      if (auto why = check(key, got); !why.empty()) return trace_result::fail(why);

    // the regularizer of this adapter alone, γ = 1: (‖AAᵀ − I‖ + ‖BᵀB − I‖) / 2
    layer.zero_grad();
    const orthogonal_views<S> ov{layer.lora_A(), layer.lora_B(), layer.grad_A(), layer.grad_B()};
    const double R = orthogonal_regularization(backend, std::span<const orthogonal_views<S>>(&ov, 1), 1.0);
    if (auto why = check("orth/R", {static_cast<float>(R)}); !why.empty()) return trace_result::fail(why);
    if (auto why = check("orth/grad/A", to_host(std::span<float>(ga.data, r * d_in), r * d_in)); !why.empty())
      return trace_result::fail(why);
    if (auto why = check("orth/grad/B", to_host(std::span<float>(gb.data, d_out * r), d_out * r)); !why.empty())
      return trace_result::fail(why);
    ++result.checked;
  }
  return result;
}

}  // namespace adalora::validate
