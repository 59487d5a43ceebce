// Host+device float helpers (absolute value, square root, finiteness, rounded arithmetic) with the same results on
// CPU and GPU.
#pragma once

#include <cmath>
#include <cstdint>

#include "adalora/core/host_device.hpp"

namespace adalora::detail {

ADALORA_HOST_DEVICE inline float abs_f(float x) noexcept {
#if defined(__CUDA_ARCH__)
  return fabsf(x);
#else
  return std::fabs(x);
#endif
}

/// Whether x is finite, tested on its exponent bits: the same test on CPU and GPU, and no comparison that a compiler
/// might keep as a branch (the allocator's host loops stay vectorized).
ADALORA_HOST_DEVICE inline bool is_finite_f(float x) noexcept {
  return (__builtin_bit_cast(std::uint32_t, x) & 0x7f800000u) != 0x7f800000u;
}

ADALORA_HOST_DEVICE inline float sqrt_f(float x) noexcept {
#if defined(__CUDA_ARCH__)
  return sqrtf(x);
#else
  return std::sqrt(x);
#endif
}

/// Products, sums, differences and quotients rounded to the nearest value of their type, each on its own: in device
/// code the explicitly rounded intrinsics (__fmul_rn, __fadd_rn, ...), which nvcc never contracts into a fused
/// multiply-add, whatever -fmad says; on the host the plain operators (host compilers contract only where
/// -ffp-contract allows it: adalora::adalora adds -ffp-contract=off). Arithmetic whose bits must agree between the CPU
/// and the GPU (the importance update, the triplet scores, the score sums) is written with these.
ADALORA_HOST_DEVICE inline float mul_rn(float a, float b) noexcept {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
ADALORA_HOST_DEVICE inline float add_rn(float a, float b) noexcept {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
ADALORA_HOST_DEVICE inline float sub_rn(float a, float b) noexcept {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
ADALORA_HOST_DEVICE inline float div_rn(float a, float b) noexcept {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}
ADALORA_HOST_DEVICE inline double add_rn(double a, double b) noexcept {
#if defined(__CUDA_ARCH__)
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}

}  // namespace adalora::detail
