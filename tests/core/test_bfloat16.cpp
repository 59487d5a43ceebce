// Tests of adalora::bfloat16: exact widening, round-to-nearest-even narrowing against an independent formula, NaN.
#include <catch2/catch.hpp>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <type_traits>

#include "adalora/core/bfloat16.hpp"

using adalora::bfloat16;

namespace {

constexpr float pinf = std::numeric_limits<float>::infinity();

std::uint32_t bits_of(float f) {
  return std::bit_cast<std::uint32_t>(f);
}
float float_of(std::uint32_t u) {
  return std::bit_cast<float>(u);
}

/// The value of a bfloat16 bit pattern, from its fields (sign, 8-bit exponent, 7-bit mantissa), in double.
double reference_value(std::uint16_t b) {
  const double sign = (b & 0x8000u) ? -1.0 : 1.0;
  const int exp = (b >> 7) & 0xff;
  const int mant = b & 0x7f;
  if (exp == 0xff) return mant ? std::numeric_limits<double>::quiet_NaN() : sign * HUGE_VAL;
  if (exp == 0) return sign * std::ldexp(static_cast<double>(mant), -133);  // subnormal: mant × 2^-126 × 2^-7
  return sign * std::ldexp(1.0 + mant / 128.0, exp - 127);
}

/// The bits of the bfloat16 nearest to f, by arithmetic in double rather than bit tricks: count the quanta of f's
/// binade (2^(e-7), or 2^-133 below 2^-126 where bfloat16 is subnormal), round that count half to even, and treat
/// 2^128 and beyond as infinity (IEEE: overflow happens after rounding with an unbounded exponent). NaN → 0x7FC0.
std::uint16_t reference_round(float f) {
  if (std::isnan(f)) return 0x7fc0;
  const double a = std::fabs(static_cast<double>(f));
  double rounded = HUGE_VAL;
  if (std::isfinite(a)) {
    int e = 0;
    std::frexp(a, &e);  // a = m · 2^e with m in [0.5, 1): the leading bit is worth 2^(e-1)
    const int lead = a == 0.0 ? -126 : std::max(e - 1, -126);
    const double quantum = std::ldexp(1.0, lead - 7);
    const double n = a / quantum;  // exact: a power-of-two divisor
    double k = std::floor(n);
    const double frac = n - k;
    if (frac > 0.5 || (frac == 0.5 && std::fmod(k, 2.0) == 1.0)) k += 1.0;
    rounded = k * quantum;
    if (rounded >= std::ldexp(1.0, 128)) rounded = HUGE_VAL;
  }
  const float r = static_cast<float>(std::signbit(f) ? -rounded : rounded);  // exact: at most 8 significant bits
  return static_cast<std::uint16_t>(bits_of(r) >> 16);
}

}  // namespace

// ---- the type ---------------------------------------------------------------------------------------------------

static_assert(std::is_trivially_copyable_v<bfloat16> && sizeof(bfloat16) == 2);
static_assert(std::is_convertible_v<float, bfloat16> && std::is_convertible_v<bfloat16, float>);
static_assert(std::is_same_v<decltype(bfloat16(1.0f) + bfloat16(2.0f)), float>);  // arithmetic widens to float
// constexpr: rounding, widening and bits
static_assert(bfloat16(1.0f).bits() == 0x3f80);
static_assert(bfloat16(-2.0f).bits() == 0xc000);
static_assert(bfloat16(3.14159265f).bits() == 0x4049);
static_assert(static_cast<float>(bfloat16::from_bits(0x4049)) == 3.140625f);
static_assert(bfloat16(std::numeric_limits<float>::quiet_NaN()).bits() == 0x7fc0);
static_assert(bfloat16(std::numeric_limits<float>::max()).bits() == 0x7f80);
static_assert(bfloat16{}.bits() == 0 && static_cast<bfloat16>(0.0f).bits() == 0);
static_assert(bfloat16::round_to_nearest_even(1.0f + 0x1p-8f) == 0x3f80);  // a tie: to the even 0x3f80

TEST_CASE("bfloat16 converts implicitly, compares as float and keeps its bits", "[core][bfloat16]") {
  const bfloat16 a = 0.5f;
  const float f = a;
  REQUIRE(f == 0.5f);
  REQUIRE(a.bits() == 0x3f00);
  REQUIRE(bfloat16::from_bits(0xbf80) == -1.0f);
  REQUIRE(bfloat16(1.0f) < bfloat16(1.5f));
  REQUIRE(bfloat16(1.0f) == bfloat16(1.0f));
  REQUIRE(bfloat16(1.0f) != bfloat16(1.0078125f));           // 1 + 2^-7: the next bfloat16 after 1
  REQUIRE(bfloat16(0.0f) == bfloat16(-0.0f));                // IEEE comparison: -0 == +0 ...
  REQUIRE(bfloat16(0.0f).bits() != bfloat16(-0.0f).bits());  // ... with different bits
  const bfloat16 nan = std::numeric_limits<float>::quiet_NaN();
  REQUIRE_FALSE(nan == nan);  // NaN is unordered
  REQUIRE(nan != nan);
  REQUIRE(bfloat16(2.0f) + bfloat16(0.25f) == 2.25f);  // computed in float
  const double d = bfloat16(0.1f);                     // widening chains on to double
  REQUIRE(d == 0.10009765625);
}

TEST_CASE("bfloat16 agrees with PyTorch on known values", "[core][bfloat16]") {
  // torch.tensor(x, dtype=torch.float32).to(torch.bfloat16), as bits: c10::BFloat16's round_to_nearest_even.
  REQUIRE(bfloat16(0.1f).bits() == 0x3dcd);                     // 0.10009765625
  REQUIRE(bfloat16(1.0f / 3.0f).bits() == 0x3eab);              // 0.333984375
  REQUIRE(bfloat16(3.14159265f).bits() == 0x4049);              // 3.140625
  REQUIRE(bfloat16(-1000.7f).bits() == 0xc47a);                 // -1000
  REQUIRE(bfloat16(65504.0f).bits() == 0x4780);                 // 65536: float16's max is not a bfloat16
  REQUIRE(bfloat16(1e-3f).bits() == 0x3a83);                    // 0.0010004043579101562
  REQUIRE(bfloat16(3.3895313892515355e38f).bits() == 0x7f7f);   // torch.finfo(torch.bfloat16).max
  REQUIRE(bfloat16(1.1754943508222875e-38f).bits() == 0x0080);  // torch.finfo(torch.bfloat16).tiny
  // The c10 formula itself, on a few thousand random floats.
  std::mt19937 gen(17);
  for (int i = 0; i < 4096; ++i) {
    const std::uint32_t u = gen();
    const float x = float_of(u);
    const auto c10 =
        std::isnan(x) ? std::uint16_t{0x7fc0} : static_cast<std::uint16_t>((u + ((u >> 16) & 1u) + 0x7fffu) >> 16);
    INFO("float bits 0x" << std::hex << u);
    REQUIRE(bfloat16(x).bits() == c10);
  }
}

TEST_CASE("every bfloat16 pattern widens exactly and narrows back to itself", "[core][bfloat16]") {
  std::uint32_t bad = 0, first_bad = 0;
  for (std::uint32_t i = 0; i <= 0xffff; ++i) {
    const auto b = bfloat16::from_bits(static_cast<std::uint16_t>(i));
    const float f = b;
    const double expect = reference_value(b.bits());
    bool ok = bits_of(f) == i << 16;  // exact, NaN payloads and -0 included
    if (std::isnan(expect))
      ok = ok && std::isnan(f) && bfloat16(f).bits() == 0x7fc0;  // every NaN narrows to PyTorch's quiet NaN
    else
      ok = ok && static_cast<double>(f) == expect && bfloat16(f).bits() == i;
    if (!ok && bad++ == 0) first_bad = i;
  }
  INFO(bad << " patterns fail; the first is 0x" << std::hex << first_bad);
  REQUIRE(bad == 0);
}

TEST_CASE("float to bfloat16 rounds to nearest even like the independent formula, at every boundary",
          "[core][bfloat16]") {
  // For every bfloat16 pattern p, the floats whose upper half is p with the lower half at the edges and around the
  // midpoint: exact, just above, just below the tie, the tie, just above it, just below the next pattern.
  std::uint64_t checked = 0, bad = 0;
  std::uint32_t first_bad = 0;
  auto check = [&](std::uint32_t u) {
    ++checked;
    const float x = float_of(u);
    if (bfloat16(x).bits() != reference_round(x) && bad++ == 0) first_bad = u;
  };
  for (std::uint32_t p = 0; p <= 0xffff; ++p)
    for (std::uint32_t low : {0x0000u, 0x0001u, 0x7fffu, 0x8000u, 0x8001u, 0xffffu}) check((p << 16) | low);
  // And a million random floats (every exponent, NaNs and infinities included).
  std::mt19937 gen(2024);
  for (int i = 0; i < 1'000'000; ++i) check(gen());
  INFO(bad << " of " << checked << " floats round differently; the first is 0x" << std::hex << first_bad << " ("
           << float_of(first_bad) << "): got 0x" << bfloat16(float_of(first_bad)).bits() << ", expected 0x"
           << reference_round(float_of(first_bad)));
  REQUIRE(bad == 0);
  REQUIRE(checked > 1'300'000);
}

TEST_CASE("bfloat16 rounding: ties to even, overflow, subnormals, zeros, NaN", "[core][bfloat16]") {
  auto round = [](std::uint32_t u) { return bfloat16(float_of(u)).bits(); };
  // ties go to the even pattern, anything past them away
  REQUIRE(round(0x3f808000u) == 0x3f80);  // 1 + 2^-8: between 1 (even) and 1 + 2^-7
  REQUIRE(round(0x3f818000u) == 0x3f82);  // between 0x3f81 (odd) and 0x3f82
  REQUIRE(round(0x3f808001u) == 0x3f81);
  REQUIRE(round(0x3f817fffu) == 0x3f81);
  REQUIRE(round(0xbf808000u) == 0xbf80);  // negative ties too
  REQUIRE(round(0xbf818000u) == 0xbf82);
  // a carry out of the mantissa moves to the next binade
  REQUIRE(round(0x3fffffffu) == 0x4000);  // just below 2 rounds to 2
  // overflow: from the midpoint between the largest bfloat16 and 2^128 on, ±inf
  REQUIRE(round(0x7f7f7fffu) == 0x7f7f);
  REQUIRE(round(0x7f7f8000u) == 0x7f80);  // a tie with an odd largest value: up, to inf
  REQUIRE(bfloat16(std::numeric_limits<float>::max()).bits() == 0x7f80);
  REQUIRE(bfloat16(-std::numeric_limits<float>::max()).bits() == 0xff80);
  REQUIRE(bfloat16(pinf).bits() == 0x7f80);
  REQUIRE(bfloat16(-pinf).bits() == 0xff80);
  REQUIRE(std::isinf(static_cast<float>(bfloat16(3.4e38f))));
  // subnormals (bfloat16 has float's exponent range, with 7 mantissa bits)
  REQUIRE(bfloat16(std::numeric_limits<float>::denorm_min()).bits() == 0x0000);
  REQUIRE(bfloat16(-std::numeric_limits<float>::denorm_min()).bits() == 0x8000);  // -0, not +0
  REQUIRE(round(0x00008000u) == 0x0000);  // a tie between 0 and the smallest subnormal 0x0001: to 0
  REQUIRE(round(0x00008001u) == 0x0001);
  REQUIRE(round(0x00018000u) == 0x0002);  // a tie from odd 0x0001: up
  REQUIRE(round(0x007fffffu) == 0x0080);  // the largest float subnormal rounds up to the smallest normal
  REQUIRE(round(0x007f0000u) == 0x007f);  // the largest bfloat16 subnormal is exact
  REQUIRE(static_cast<float>(bfloat16::from_bits(0x0001)) == std::ldexp(1.0f, -133));
  REQUIRE(bfloat16(std::numeric_limits<float>::min()).bits() == 0x0080);
  // zeros keep their sign
  REQUIRE(bfloat16(0.0f).bits() == 0x0000);
  REQUIRE(bfloat16(-0.0f).bits() == 0x8000);
  REQUIRE(std::signbit(static_cast<float>(bfloat16(-0.0f))));
  // every NaN, quiet or signaling, of either sign, becomes the quiet NaN 0x7FC0 (never infinity)
  for (std::uint32_t u : {0x7fc00000u, 0xffc00000u, 0x7f800001u, 0xff800001u, 0x7f80ffffu, 0x7fffffffu, 0xffffffffu}) {
    INFO("float bits 0x" << std::hex << u);
    const bfloat16 b = float_of(u);
    REQUIRE(b.bits() == 0x7fc0);
    REQUIRE(std::isnan(static_cast<float>(b)));
    REQUIRE((b.bits() & 0x0040u) != 0);  // the quiet bit
  }
  // from_bits keeps any pattern, a signaling NaN included, and widening keeps its payload
  REQUIRE(bfloat16::from_bits(0x7f81).bits() == 0x7f81);
  REQUIRE(bits_of(bfloat16::from_bits(0xff81)) == 0xff810000u);
}
