// Element-wise host+device functors of the adapter layers: scaling, dropout, gathers, merges.
#pragma once

#include <cstddef>
#include <cstdint>

#include "adalora/core/float_ops.hpp"
#include "adalora/core/host_device.hpp"

namespace adalora::detail {

/// out[b, i] = in[b, i] · λ[i] · s for a (rows × r) row-major block.
struct scale_columns_fn {
  const float* in;
  const float* lambda;  // null: λ ≡ 1
  float s;
  std::size_t r;
  float* out;
  ADALORA_HOST_DEVICE void operator()(std::size_t k) const noexcept {
    const float l = lambda ? lambda[k % r] : 1.0f;
    out[k] = in[k] * l * s;
  }
};

/// p[k] = value.
struct fill_fn {
  float* p;
  float value;
  ADALORA_HOST_DEVICE void operator()(std::size_t k) const noexcept { p[k] = value; }
};

/// out[k] = a[k] · b[k].
struct multiply_fn {
  const float* a;
  const float* b;
  float* out;
  ADALORA_HOST_DEVICE void operator()(std::size_t k) const noexcept { out[k] = a[k] * b[k]; }
};

/// y[k] += s · x[k].
struct axpy_fn {
  float s;
  const float* x;
  float* y;
  ADALORA_HOST_DEVICE void operator()(std::size_t k) const noexcept { y[k] += s * x[k]; }
};

/// A uniform number in [0, 1) from (seed, counter, index): a stateless hash, the same on host and device.
ADALORA_HOST_DEVICE inline float hash_uniform(std::uint64_t seed, std::uint64_t counter, std::uint64_t index) noexcept {
  std::uint64_t z = seed ^ (counter * 0x9E3779B97F4A7C15ull) ^ (index * 0xD1B54A32D192ED03ull);
  z += 0x9E3779B97F4A7C15ull;  // splitmix64 finalizer
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<float>(z >> 40) * (1.0f / 16777216.0f);
}

/// Inverted dropout of a (rows × cols) strided input into a contiguous buffer; p = 0 copies.
struct dropout_fn {
  const float* x;
  std::size_t cols;
  std::ptrdiff_t ld;
  float p;
  std::uint64_t seed, counter;
  float* out;
  ADALORA_HOST_DEVICE void operator()(std::size_t k) const noexcept {
    const float v = x[static_cast<std::ptrdiff_t>(k / cols) * ld + static_cast<std::ptrdiff_t>(k % cols)];
    out[k] = p > 0.0f ? (hash_uniform(seed, counter, k) >= p ? v / (1.0f - p) : 0.0f) : v;
  }
};

/// dx[b, j] += g[b, j] · keep(b, j) / (1 − p), the dropout mask of the forward pass recomputed from its counter.
struct dropout_backward_fn {
  const float* g;
  std::size_t cols;
  std::ptrdiff_t ld;
  float p;
  std::uint64_t seed, counter;
  float* dx;
  ADALORA_HOST_DEVICE void operator()(std::size_t k) const noexcept {
    const float keep = p > 0.0f ? (hash_uniform(seed, counter, k) >= p ? 1.0f / (1.0f - p) : 0.0f) : 1.0f;
    dx[static_cast<std::ptrdiff_t>(k / cols) * ld + static_cast<std::ptrdiff_t>(k % cols)] += g[k] * keep;
  }
};

/// X[i, i] −= 1 for an (r × r) matrix.
struct subtract_identity_fn {
  float* x;
  std::size_t r;
  ADALORA_HOST_DEVICE void operator()(std::size_t i) const noexcept { x[i * r + i] -= 1.0f; }
};

/// x[k]².
struct square_fn {
  const float* x;
  ADALORA_HOST_DEVICE double operator()(std::size_t k) const noexcept {
    return static_cast<double>(x[k]) * static_cast<double>(x[k]);
  }
};

/// W[o, j] += sign · delta[o, j] over a strided (out × in) weight.
struct add_into_strided_fn {
  const float* delta;
  std::size_t cols;
  float* w;
  std::ptrdiff_t row_stride, col_stride;
  float sign;
  ADALORA_HOST_DEVICE void operator()(std::size_t k) const noexcept {
    w[static_cast<std::ptrdiff_t>(k / cols) * row_stride + static_cast<std::ptrdiff_t>(k % cols) * col_stride] +=
        sign * delta[k];
  }
};

/// True where W[o, j] + sign · delta[o, j] is not finite.
struct merged_non_finite_fn {
  const float* delta;
  std::size_t cols;
  const float* w;
  std::ptrdiff_t row_stride, col_stride;
  float sign;
  ADALORA_HOST_DEVICE bool operator()(std::size_t k) const noexcept {
    const float v =
        w[static_cast<std::ptrdiff_t>(k / cols) * row_stride + static_cast<std::ptrdiff_t>(k % cols) * col_stride] +
        sign * delta[k];
    return !is_finite_f(v);
  }
};

/// out[k] = in[row_index[k / cols] · cols + k % cols]: keeps selected rows of a row-major matrix.
struct gather_rows_fn {
  const float* in;
  const std::size_t* index;
  std::size_t cols;
  float* out;
  ADALORA_HOST_DEVICE void operator()(std::size_t k) const noexcept { out[k] = in[index[k / cols] * cols + k % cols]; }
};

/// out[o, c] = in[o, index[c]]: keeps selected columns of a row-major (rows × in_cols) matrix.
struct gather_cols_fn {
  const float* in;
  const std::size_t* index;
  std::size_t in_cols, out_cols;
  float* out;
  ADALORA_HOST_DEVICE void operator()(std::size_t k) const noexcept {
    out[k] = in[(k / out_cols) * in_cols + index[k % out_cols]];
  }
};

}  // namespace adalora::detail
