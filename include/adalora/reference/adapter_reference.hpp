// Plain-loop reference of the adapter math (SPEC §1–2) in any precision: forward, backward, regularizer.
#pragma once

#include <cmath>
#include <cstddef>
#include <vector>

namespace adalora::reference {

/// Dense row-major matrices as flat vectors; E empty means plain LoRA (λ ≡ 1).
template <class Real>
struct low_rank_params {
  std::size_t r = 0, in = 0, out = 0;
  std::vector<Real> A, E, B;  // A (r × in), E (r), B (out × r)
  Real scaling = 1;
  Real lambda(std::size_t i) const { return E.empty() ? Real(1) : E[i]; }
};

/// y (batch × out) = s · ((x Aᵀ) ⊙ λ) Bᵀ, the adapter's contribution alone.
template <class Real>
std::vector<Real> adapter_forward(const low_rank_params<Real>& p, const std::vector<Real>& x, std::size_t batch) {
  std::vector<Real> y(batch * p.out, Real(0));
  for (std::size_t b = 0; b < batch; ++b)
    for (std::size_t i = 0; i < p.r; ++i) {
      Real h = 0;
      for (std::size_t j = 0; j < p.in; ++j) h += x[b * p.in + j] * p.A[i * p.in + j];
      const Real hl = h * p.lambda(i) * p.scaling;
      for (std::size_t o = 0; o < p.out; ++o) y[b * p.out + o] += hl * p.B[o * p.r + i];
    }
  return y;
}

template <class Real>
struct adapter_gradients {
  std::vector<Real> A, E, B, x;
};

/// Gradients of ⟨adapter_forward(x), dy⟩ with respect to A, E, B and x.
template <class Real>
adapter_gradients<Real> adapter_backward(const low_rank_params<Real>& p, const std::vector<Real>& x,
                                         const std::vector<Real>& dy, std::size_t batch) {
  adapter_gradients<Real> g;
  g.A.assign(p.r * p.in, Real(0));
  g.E.assign(p.r, Real(0));
  g.B.assign(p.out * p.r, Real(0));
  g.x.assign(batch * p.in, Real(0));
  for (std::size_t b = 0; b < batch; ++b)
    for (std::size_t i = 0; i < p.r; ++i) {
      Real h = 0, u = 0;  // h = x·A_i, u = dy·B_:i
      for (std::size_t j = 0; j < p.in; ++j) h += x[b * p.in + j] * p.A[i * p.in + j];
      for (std::size_t o = 0; o < p.out; ++o) u += dy[b * p.out + o] * p.B[o * p.r + i];
      for (std::size_t o = 0; o < p.out; ++o) g.B[o * p.r + i] += p.scaling * dy[b * p.out + o] * h * p.lambda(i);
      g.E[i] += p.scaling * u * h;
      const Real dh = p.scaling * u * p.lambda(i);
      for (std::size_t j = 0; j < p.in; ++j) {
        g.A[i * p.in + j] += dh * x[b * p.in + j];
        g.x[b * p.in + j] += dh * p.A[i * p.in + j];
      }
    }
  if (p.E.empty()) g.E.clear();
  return g;
}

/// ‖A Aᵀ − I‖_F and ‖Bᵀ B − I‖_F with their gradients (0 where the norm is 0).
template <class Real>
struct orthogonality {
  Real norm_A = 0, norm_B = 0;
  std::vector<Real> grad_A, grad_B;  // of norm_A + norm_B (or of the squares, when squared)
};

template <class Real>
orthogonality<Real> orthogonal_penalty(const low_rank_params<Real>& p, bool squared = false) {
  orthogonality<Real> o;
  const std::size_t r = p.r;
  std::vector<Real> X(r * r), Y(r * r);
  for (std::size_t i = 0; i < r; ++i)
    for (std::size_t k = 0; k < r; ++k) {
      Real x = 0, y = 0;
      for (std::size_t j = 0; j < p.in; ++j) x += p.A[i * p.in + j] * p.A[k * p.in + j];
      for (std::size_t j = 0; j < p.out; ++j) y += p.B[j * r + i] * p.B[j * r + k];
      X[i * r + k] = x - (i == k ? Real(1) : Real(0));
      Y[i * r + k] = y - (i == k ? Real(1) : Real(0));
    }
  Real sx = 0, sy = 0;
  for (Real v : X) sx += v * v;
  for (Real v : Y) sy += v * v;
  o.norm_A = squared ? sx : std::sqrt(sx);
  o.norm_B = squared ? sy : std::sqrt(sy);
  // d‖X‖/dA = 2 X A / ‖X‖ (X symmetric); d‖X‖²/dA = 4 X A
  const Real ca = squared ? Real(4) : (sx > 0 ? Real(2) / std::sqrt(sx) : Real(0));
  const Real cb = squared ? Real(4) : (sy > 0 ? Real(2) / std::sqrt(sy) : Real(0));
  o.grad_A.assign(r * p.in, Real(0));
  o.grad_B.assign(p.out * r, Real(0));
  for (std::size_t i = 0; i < r; ++i)
    for (std::size_t j = 0; j < p.in; ++j) {
      Real s = 0;
      for (std::size_t k = 0; k < r; ++k) s += X[i * r + k] * p.A[k * p.in + j];
      o.grad_A[i * p.in + j] = ca * s;
    }
  for (std::size_t j = 0; j < p.out; ++j)
    for (std::size_t i = 0; i < r; ++i) {
      Real s = 0;
      for (std::size_t k = 0; k < r; ++k) s += p.B[j * r + k] * Y[k * r + i];
      o.grad_B[j * r + i] = cb * s;
    }
  return o;
}

}  // namespace adalora::reference
