// budget_study: a small frozen transformer (pre-norm attention + MLP blocks) with an adapter on every projection.
//
// Every block has the six projections of a transformer layer, q, k, v, o (d × d), up (f × d) and down (d × f):
//   a = rms(h);  Q, K, V = a Wqᵀ, a Wkᵀ, a Wvᵀ;  C_h = softmax(Q_h K_hᵀ / √d_h) V_h per sequence and head;
//   h += C Woᵀ
//   m = rms(h);  h += gelu(m Wupᵀ) Wdownᵀ
// with rms(h) = h / √(mean(h²) + ε) (no learned scale). The residual stream and the normalisation keep the
// blocks on a comparable footing: the loss gradient reaches every block through the residual path unchanged,
// so no block is favoured only because it sits near the output. Several heads matter for the study: with one
// head, a change of Wv could be moved exactly into Wo (and one of Wq into Wk), so "the true rank of Wv" would not
// be well defined; with heads of width d/heads, only the part of a change inside one head's subspace can move.
// All matrix products go through the backend.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <vector>

#include "adalora/adalora.hpp"

namespace budget_study {

using backend = adalora::eigen_backend;
using adalora::make_matrix_view;
using adalora::transpose;
using matrix = std::vector<float>;  // row-major

/// The projections of one block, in the order they are stored.
inline constexpr std::size_t projections_per_block = 6;
inline constexpr std::array<const char*, projections_per_block> projection_names{"q", "k", "v", "o", "up", "down"};

struct net_shape {
  std::size_t d_model = 64;
  std::size_t d_ff = 128;
  std::size_t blocks = 4;
  std::size_t seq_len = 8;
  std::size_t heads = 4;

  std::size_t head_dim() const noexcept { return d_model / heads; }

  std::size_t matrices() const noexcept { return blocks * projections_per_block; }
  /// Input and output features of matrix m (m = block · 6 + projection).
  std::size_t in_of(std::size_t m) const noexcept { return m % projections_per_block == 5 ? d_ff : d_model; }
  std::size_t out_of(std::size_t m) const noexcept { return m % projections_per_block == 4 ? d_ff : d_model; }
  std::string name_of(std::size_t m) const {
    return "blocks." + std::to_string(m / projections_per_block) + "." + projection_names[m % projections_per_block];
  }
};

/// Activations of one forward pass, kept for the backward pass (the adapters also keep pointers into them).
struct workspace {
  struct block_cache {
    matrix a, a_rms, q, k, v, p, c, m, m_rms, u, g;
  };
  std::vector<block_cache> blocks;
  matrix out;
  // backward scratch
  matrix dh, da, dq, dk, dv, dc, dm, du, dg, dp;
};

namespace detail {

inline constexpr float rms_eps = 1e-5f;

/// y = x / √(mean(x²) + ε) per row; keeps 1/rms per row.
inline void rms_norm(const matrix& x, std::size_t rows, std::size_t cols, matrix& y, matrix& inv_rms) {
  y.resize(rows * cols);
  inv_rms.resize(rows);
  for (std::size_t i = 0; i < rows; ++i) {
    double s = 0.0;
    for (std::size_t j = 0; j < cols; ++j) s += double(x[i * cols + j]) * x[i * cols + j];
    const float inv = 1.0f / std::sqrt(float(s / double(cols)) + rms_eps);
    inv_rms[i] = inv;
    for (std::size_t j = 0; j < cols; ++j) y[i * cols + j] = x[i * cols + j] * inv;
  }
}

/// dx += (dy − y · mean(dy ⊙ y)) / rms, the backward of rms_norm (y its output).
inline void rms_norm_backward(const matrix& y, const matrix& inv_rms, const matrix& dy, std::size_t rows,
                              std::size_t cols, matrix& dx) {
  for (std::size_t i = 0; i < rows; ++i) {
    double s = 0.0;
    for (std::size_t j = 0; j < cols; ++j) s += double(dy[i * cols + j]) * y[i * cols + j];
    const float mean = float(s / double(cols));
    for (std::size_t j = 0; j < cols; ++j)
      dx[i * cols + j] += (dy[i * cols + j] - y[i * cols + j] * mean) * inv_rms[i];
  }
}

inline constexpr float gelu_c = 0.7978845608f;  // √(2/π)
inline float gelu(float u) noexcept { return 0.5f * u * (1.0f + std::tanh(gelu_c * (u + 0.044715f * u * u * u))); }
inline float gelu_grad(float u) noexcept {
  const float t = std::tanh(gelu_c * (u + 0.044715f * u * u * u));
  return 0.5f * (1.0f + t) + 0.5f * u * (1.0f - t * t) * gelu_c * (1.0f + 3.0f * 0.044715f * u * u);
}

}  // namespace detail

/// The frozen network: weights[m] is matrix m (out × in), m = block · 6 + projection.
class frozen_transformer {
public:
  frozen_transformer(net_shape shape, std::vector<matrix> weights) : shape_(shape), w_(std::move(weights)) {
    if (w_.size() != shape_.matrices()) throw std::invalid_argument("frozen_transformer: wrong number of matrices");
    if (shape_.heads == 0 || shape_.d_model % shape_.heads != 0)
      throw std::invalid_argument("frozen_transformer: d_model must be a multiple of the number of heads");
  }

  const net_shape& shape() const noexcept { return shape_; }
  const matrix& weight(std::size_t m) const { return w_.at(m); }

  /// Output (rows = sequences · seq_len, d_model) of the network for x (same shape), with adapters[m] added to
  /// matrix m when `adapters` is not null. The activations stay in `ws` for backward().
  template <class Adapter>
  const matrix& forward(backend& be, const matrix& x, std::size_t sequences, std::vector<Adapter>* adapters,
                        workspace& ws) const {
    const std::size_t n = sequences * shape_.seq_len, d = shape_.d_model, f = shape_.d_ff, L = shape_.seq_len;
    const std::size_t H = shape_.heads, dh = shape_.head_dim();
    ws.blocks.resize(shape_.blocks);
    matrix h = x;
    for (std::size_t b = 0; b < shape_.blocks; ++b) {
      auto& c = ws.blocks[b];
      detail::rms_norm(h, n, d, c.a, c.a_rms);
      project(be, b * 6 + 0, c.a, n, c.q, adapters);
      project(be, b * 6 + 1, c.a, n, c.k, adapters);
      project(be, b * 6 + 2, c.a, n, c.v, adapters);
      // attention per sequence and head: P = softmax(Q_h K_hᵀ/√d_h), C_h = P V_h (heads are column blocks)
      c.p.resize(sequences * H * L * L);
      c.c.resize(n * d);
      const float scale = 1.0f / std::sqrt(float(dh));
      for (std::size_t sh = 0; sh < sequences * H; ++sh) {
        float* p = c.p.data() + sh * L * L;
        const std::size_t off = (sh / H) * L * d + (sh % H) * dh;
        be.gemm(transpose::no, transpose::yes, L, L, dh, scale, c.q.data() + off, d, c.k.data() + off, d, 0.0f, p, L);
        for (std::size_t i = 0; i < L; ++i) {
          float mx = p[i * L];
          for (std::size_t j = 1; j < L; ++j) mx = std::max(mx, p[i * L + j]);
          float sum = 0.0f;
          for (std::size_t j = 0; j < L; ++j) sum += (p[i * L + j] = std::exp(p[i * L + j] - mx));
          for (std::size_t j = 0; j < L; ++j) p[i * L + j] /= sum;
        }
        be.gemm(transpose::no, transpose::no, L, dh, L, 1.0f, p, L, c.v.data() + off, d, 0.0f, c.c.data() + off, d);
      }
      matrix o;
      project(be, b * 6 + 3, c.c, n, o, adapters);
      for (std::size_t i = 0; i < h.size(); ++i) h[i] += o[i];
      detail::rms_norm(h, n, d, c.m, c.m_rms);
      project(be, b * 6 + 4, c.m, n, c.u, adapters);
      c.g.resize(n * f);
      for (std::size_t i = 0; i < c.u.size(); ++i) c.g[i] = detail::gelu(c.u[i]);
      matrix dn;
      project(be, b * 6 + 5, c.g, n, dn, adapters);
      for (std::size_t i = 0; i < h.size(); ++i) h[i] += dn[i];
    }
    ws.out = std::move(h);
    return ws.out;
  }

  /// Accumulates the adapters' gradients of ⟨out, dout⟩ for the last forward() through `ws`.
  template <class Adapter>
  void backward(backend& be, const matrix& dout, std::size_t sequences, std::vector<Adapter>& adapters,
                workspace& ws) const {
    const std::size_t n = sequences * shape_.seq_len, d = shape_.d_model, L = shape_.seq_len;
    const std::size_t H = shape_.heads, dh = shape_.head_dim();
    const float scale = 1.0f / std::sqrt(float(dh));
    ws.dh = dout;  // gradient on the residual stream
    for (std::size_t b = shape_.blocks; b-- > 0;) {
      auto& c = ws.blocks[b];
      // MLP: h += gelu(m Wupᵀ) Wdownᵀ
      project_backward(be, b * 6 + 5, ws.dh, n, ws.dg, adapters);
      for (std::size_t i = 0; i < ws.dg.size(); ++i) ws.dg[i] *= detail::gelu_grad(c.u[i]);
      project_backward(be, b * 6 + 4, ws.dg, n, ws.dm, adapters);
      detail::rms_norm_backward(c.m, c.m_rms, ws.dm, n, d, ws.dh);
      // attention: h += C Woᵀ
      project_backward(be, b * 6 + 3, ws.dh, n, ws.dc, adapters);
      ws.dq.assign(n * d, 0.0f);
      ws.dk.assign(n * d, 0.0f);
      ws.dv.assign(n * d, 0.0f);
      ws.dp.resize(L * L);
      for (std::size_t sh = 0; sh < sequences * H; ++sh) {
        const float* p = c.p.data() + sh * L * L;
        const std::size_t off = (sh / H) * L * d + (sh % H) * dh;
        // dV = Pᵀ dC,  dP = dC Vᵀ,  dS = P ⊙ (dP − rowsum(dP ⊙ P)),  dQ = dS K/√d_h,  dK = dSᵀ Q/√d_h
        be.gemm(transpose::yes, transpose::no, L, dh, L, 1.0f, p, L, ws.dc.data() + off, d, 0.0f,
                ws.dv.data() + off, d);
        be.gemm(transpose::no, transpose::yes, L, L, dh, 1.0f, ws.dc.data() + off, d, c.v.data() + off, d, 0.0f,
                ws.dp.data(), L);
        for (std::size_t i = 0; i < L; ++i) {
          float dot = 0.0f;
          for (std::size_t j = 0; j < L; ++j) dot += ws.dp[i * L + j] * p[i * L + j];
          for (std::size_t j = 0; j < L; ++j) ws.dp[i * L + j] = p[i * L + j] * (ws.dp[i * L + j] - dot);
        }
        be.gemm(transpose::no, transpose::no, L, dh, L, scale, ws.dp.data(), L, c.k.data() + off, d, 0.0f,
                ws.dq.data() + off, d);
        be.gemm(transpose::yes, transpose::no, L, dh, L, scale, ws.dp.data(), L, c.q.data() + off, d, 0.0f,
                ws.dk.data() + off, d);
      }
      ws.da.assign(n * d, 0.0f);
      project_backward(be, b * 6 + 0, ws.dq, n, ws.da, adapters, true);
      project_backward(be, b * 6 + 1, ws.dk, n, ws.da, adapters, true);
      project_backward(be, b * 6 + 2, ws.dv, n, ws.da, adapters, true);
      detail::rms_norm_backward(c.a, c.a_rms, ws.da, n, d, ws.dh);
    }
  }

private:
  /// y = x W_mᵀ (+ adapter m).
  template <class Adapter>
  void project(backend& be, std::size_t m, const matrix& x, std::size_t n, matrix& y,
               std::vector<Adapter>* adapters) const {
    const std::size_t in = shape_.in_of(m), out = shape_.out_of(m);
    y.resize(n * out);
    be.gemm(transpose::no, transpose::yes, n, out, in, 1.0f, x.data(), in, w_[m].data(), in, 0.0f, y.data(), out);
    if (adapters)
      (*adapters)[m].forward(make_matrix_view(static_cast<const float*>(x.data()), n, in),
                             make_matrix_view(y.data(), n, out));
  }

  /// dx (+)= dy W_m, plus the adapter's part of dx; the adapter's parameter gradients accumulate.
  template <class Adapter>
  void project_backward(backend& be, std::size_t m, const matrix& dy, std::size_t n, matrix& dx,
                        std::vector<Adapter>& adapters, bool accumulate = false) const {
    const std::size_t in = shape_.in_of(m), out = shape_.out_of(m);
    if (!accumulate) dx.resize(n * in);
    be.gemm(transpose::no, transpose::no, n, in, out, 1.0f, dy.data(), out, w_[m].data(), in, accumulate ? 1.0f : 0.0f,
            dx.data(), in);
    adapters[m].backward(make_matrix_view(dy.data(), n, out), make_matrix_view(dx.data(), n, in));
  }

  net_shape shape_;
  std::vector<matrix> w_;
};

}  // namespace budget_study
