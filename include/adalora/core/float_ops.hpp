// Host+device float helpers (absolute value, square root, finiteness) with the same results on CPU and GPU.
#pragma once

#include <cmath>

#include "adalora/core/host_device.hpp"

namespace adalora::detail {

ADALORA_HOST_DEVICE inline float abs_f(float x) noexcept {
#if defined(__CUDA_ARCH__)
  return fabsf(x);
#else
  return std::fabs(x);
#endif
}

ADALORA_HOST_DEVICE inline bool is_finite_f(float x) noexcept {
#if defined(__CUDA_ARCH__)
  return isfinite(x);
#else
  return std::isfinite(x);
#endif
}

ADALORA_HOST_DEVICE inline float sqrt_f(float x) noexcept {
#if defined(__CUDA_ARCH__)
  return sqrtf(x);
#else
  return std::sqrt(x);
#endif
}

}  // namespace adalora::detail
