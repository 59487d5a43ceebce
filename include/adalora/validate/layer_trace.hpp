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
#include "adalora/core/checked_size.hpp"
#include "adalora/core/error.hpp"
#include "adalora/io/bounded_json.hpp"
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
    auto field = [&](const char* key, const std::string& where) -> const nlohmann::json& {
      return io::json_require(c, key, "layer trace: " + where);
    };
    const auto id = std::to_string(io::json_int(field("case", "a case"), "layer trace: a case's number"));
    const std::string at = "layer trace: case " + id;
    // every size is checked against the file's tensors before anything is allocated
    const auto d_in = io::json_size(field("d_in", "case " + id), at + ": d_in");
    const auto d_out = io::json_size(field("d_out", "case " + id), at + ": d_out");
    const auto r = io::json_size(field("r", "case " + id), at + ": r");
    const auto batch = io::json_size(field("batch", "case " + id), at + ": batch");
    const auto alpha = io::json_number(field("alpha", "case " + id), at + ": alpha");
    if (d_in == 0 || d_out == 0)
      throw format_error(at + ": d_in = " + std::to_string(d_in) + " and d_out = " + std::to_string(d_out) +
                         "; both must be positive");
    const std::string p = id + "/";
    // every tensor's size, the outputs' too, before anything is allocated or computed: every buffer below is then no
    // larger than a tensor of the file (a case's sizes are untrusted: 2^32 × 2^32 wraps to 0 in size_t)
    struct expected_size {
      const char* key;
      std::size_t rows, cols;
    };
    for (const expected_size& e : {expected_size{"W", d_out, d_in}, {"A", r, d_in}, {"E", r, 1}, {"B", d_out, r},
                                   {"x", batch, d_in}, {"dy", batch, d_out}, {"y", batch, d_out}, {"grad/A", r, d_in},
                                   {"grad/E", r, 1}, {"grad/B", d_out, r}, {"grad/x", batch, d_in}, {"orth/R", 1, 1},
                                   {"orth/grad/A", r, d_in}, {"orth/grad/B", d_out, r}}) {
      const auto n = checked_mul(e.rows, e.cols);
      if (!n) throw format_error(at + ": the size of " + e.key + " overflows (d_in, d_out, r or batch is corrupt)");
      const auto& info = file.info(p + e.key);
      if (info.numel() != *n)
        throw format_error(at + ": " + p + e.key + " has shape " + io::detail::shape_string(info.shape) + ", " +
                           std::to_string(info.numel()) + " values; expected " + std::to_string(*n));
    }
    auto read = [&](const char* key) { return file.read_f32(p + key); };
    const auto W = read("W"), A = read("A"), E = read("E"), Bm = read("B"), x = read("x"), dy = read("dy");

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
