// bfloat16: a 16-bit storage type for adapter parameters on host and device, rounding exactly as PyTorch does.
#pragma once

#include <cstdint>
#include <type_traits>

#include "adalora/core/host_device.hpp"

namespace adalora {

namespace detail {

// __builtin_bit_cast rather than std::bit_cast: it is constexpr on the host and callable from device code without
// --expt-relaxed-constexpr (g++ ≥ 11, clang, nvcc and MSVC ≥ 19.25 all have it).
ADALORA_HOST_DEVICE constexpr std::uint32_t float_to_bits(float f) noexcept {
  return __builtin_bit_cast(std::uint32_t, f);
}
ADALORA_HOST_DEVICE constexpr float bits_to_float(std::uint32_t u) noexcept {
  return __builtin_bit_cast(float, u);
}

}  // namespace detail

/// The brain floating-point format: 1 sign, 8 exponent and 7 mantissa bits, the upper half of an IEEE float32.
///
/// A storage type for adapter parameters and gradients (the allocator keeps its importance state in float32).
/// It does no arithmetic of its own: it converts implicitly from and to float, as PyTorch's c10::BFloat16 and
/// CUDA's __nv_bfloat16 do, so `x + y` or `x < y` compute in float (IEEE comparisons: NaN is unordered, -0 == +0);
/// compare `bits()` for identity.
///  - float → bfloat16 rounds to nearest, ties to even (c10::BFloat16's round_to_nearest_even, bit for bit):
///    subnormals round like any other value, values from 0x1.ffp127 up become ±inf, and every NaN becomes the
///    quiet NaN 0x7FC0 (sign and payload are not kept, as in PyTorch);
///  - bfloat16 → float is exact (the bits, shifted up; NaNs keep their payload).
/// Trivially copyable and 2 bytes, with no invariant on its bits: a tensor of PyTorch bfloat16 values (or of
/// __nv_bfloat16) has the same bytes as an array of adalora::bfloat16.
class bfloat16 {
public:
  /// Uninitialized, like float (value-initialization, `bfloat16{}`, gives +0).
  bfloat16() = default;

  /// The nearest bfloat16 to f, ties to even; NaN gives 0x7FC0.
  ADALORA_HOST_DEVICE constexpr bfloat16(float f) noexcept : bits_(round_to_nearest_even(f)) {}

  /// The bfloat16 with these bits, taken as they are (no rounding, NaN payloads kept).
  ADALORA_HOST_DEVICE static constexpr bfloat16 from_bits(std::uint16_t bits) noexcept {
    bfloat16 b{};
    b.bits_ = bits;
    return b;
  }

  /// The stored bits.
  ADALORA_HOST_DEVICE constexpr std::uint16_t bits() const noexcept { return bits_; }

  /// The float with the same value (exact).
  ADALORA_HOST_DEVICE constexpr operator float() const noexcept {
    return detail::bits_to_float(static_cast<std::uint32_t>(bits_) << 16);
  }

  /// The bits of the bfloat16 nearest to f, ties to even; every NaN gives 0x7FC0 (PyTorch's c10 formula).
  ADALORA_HOST_DEVICE static constexpr std::uint16_t round_to_nearest_even(float f) noexcept {
    const std::uint32_t u = detail::float_to_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0u;
    // Adding 0x7fff plus the lowest kept bit carries into the kept half exactly when the dropped half is above
    // one half, or equal to it with the kept half odd. A carry out of the mantissa bumps the exponent (up to inf).
    return static_cast<std::uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
  }

private:
  std::uint16_t bits_;
};

static_assert(std::is_trivially_copyable_v<bfloat16>);
static_assert(std::is_trivially_default_constructible_v<bfloat16>);
static_assert(std::is_standard_layout_v<bfloat16>);
static_assert(sizeof(bfloat16) == 2 && alignof(bfloat16) == 2);

}  // namespace adalora
