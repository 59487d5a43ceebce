// The total order in which every backend's kth_smallest ranks floats (NaN and -0 included), and its host form.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "adalora/core/bfloat16.hpp"
#include "adalora/core/error.hpp"
#include "adalora/core/host_device.hpp"

namespace adalora::detail {

/// The order of kth_smallest on every backend (Backend requirement 7), as an unsigned key: x ranks before y exactly
/// when kth_order_key(x) < kth_order_key(y).
///  - numbers rank by value, -inf first and +inf last; -0 and +0 rank equal (one key);
///  - every NaN (either sign, any payload) ranks after +inf, all NaNs equal.
/// So CPU and GPU backends pick the same threshold even from scores that hold -0 or NaN (which sorting by `<`,
/// unspecified with NaN, or by the raw bits, where a negative NaN sorts first, would not).
ADALORA_HOST_DEVICE constexpr std::uint32_t kth_order_key(float x) noexcept {
  const std::uint32_t u = float_to_bits(x);
  const std::uint32_t magnitude = u & 0x7fffffffu;
  if (magnitude > 0x7f800000u) return 0xffffffffu;  // NaN
  if (magnitude == 0) return 0x80000000u;           // -0 as +0
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);  // negatives reversed below the positives
}

/// The value that kth_smallest returns for a key of kth_order_key: the number itself, a zero as +0, a NaN as the
/// quiet NaN 0x7FC00000, so that every backend returns the same bits.
ADALORA_HOST_DEVICE constexpr float kth_order_value(std::uint32_t key) noexcept {
  if (key == 0xffffffffu) return bits_to_float(0x7fc00000u);
  return bits_to_float((key & 0x80000000u) ? (key & 0x7fffffffu) : ~key);
}

/// key[i] = kth_order_key(v[i]), as a work item over i.
struct kth_order_key_fn {
  const float* v;
  std::uint32_t* key;
  ADALORA_HOST_DEVICE void operator()(std::size_t i) const noexcept { key[i] = kth_order_key(v[i]); }
};

/// Throws usage_error unless 1 ≤ k ≤ n: every backend's kth_smallest checks its arguments so, before any work.
inline void check_kth_argument(std::size_t n, std::size_t k) {
  if (k < 1 || k > n)
    throw usage_error("kth_smallest: k = " + std::to_string(k) + " is outside [1, " + std::to_string(n) + "]");
}

/// kth_smallest on the host (Eigen, xtensor, Thrust's OMP system): std::nth_element over a copy of the keys, so
/// that v is left as it is; k already checked.
inline float kth_smallest_on_host(const float* v, std::size_t n, std::size_t k) {
  std::vector<std::uint32_t> keys(n);
  for (std::size_t i = 0; i < n; ++i) keys[i] = kth_order_key(v[i]);
  const auto kth = keys.begin() + static_cast<std::ptrdiff_t>(k - 1);
  std::nth_element(keys.begin(), kth, keys.end());
  return kth_order_value(*kth);
}

}  // namespace adalora::detail
