// Overflow-checked size arithmetic: every product or sum of extents that comes from outside goes through these.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <optional>
#include <string>
#include <string_view>

namespace adalora {

/// The largest number of elements of type T that one object can hold: an extent product beyond it describes memory
/// that cannot exist (e.g. a negative int passed as a size), whatever the platform.
template <class T>
inline constexpr std::size_t max_elements_of =
    static_cast<std::size_t>(std::numeric_limits<std::ptrdiff_t>::max()) / sizeof(T);

/// a · b, or nullopt when it does not fit in size_t.
constexpr std::optional<std::size_t> checked_mul(std::size_t a, std::size_t b) noexcept {
  if (a != 0 && b > std::numeric_limits<std::size_t>::max() / a) return std::nullopt;
  return a * b;
}

/// a + b, or nullopt when it does not fit in size_t.
constexpr std::optional<std::size_t> checked_add(std::size_t a, std::size_t b) noexcept {
  if (b > std::numeric_limits<std::size_t>::max() - a) return std::nullopt;
  return a + b;
}

/// The product of `factors`, or nullopt when it does not fit in size_t (a zero factor makes it 0, always).
constexpr std::optional<std::size_t> checked_product(std::initializer_list<std::size_t> factors) noexcept {
  for (std::size_t f : factors)
    if (f == 0) return std::size_t{0};
  std::size_t n = 1;
  for (std::size_t f : factors) {
    const auto m = checked_mul(n, f);
    if (!m) return std::nullopt;
    n = *m;
  }
  return n;
}

/// a · b for int64 quantities (budgets, ranks), or nullopt on overflow.
constexpr std::optional<std::int64_t> checked_mul_i64(std::int64_t a, std::int64_t b) noexcept {
  std::int64_t r = 0;
  if (__builtin_mul_overflow(a, b, &r)) return std::nullopt;
  return r;
}

/// a + b for int64 quantities, or nullopt on overflow.
constexpr std::optional<std::int64_t> checked_add_i64(std::int64_t a, std::int64_t b) noexcept {
  std::int64_t r = 0;
  if (__builtin_add_overflow(a, b, &r)) return std::nullopt;
  return r;
}

/// The value of `v`, or throws `Error` saying that `what` (e.g. "r × in of lora_A") does not fit: for sizes
/// computed with the checked_* functions above.
template <class Error, class V>
V size_or_throw(const std::optional<V>& v, std::string_view what) {
  if (!v) throw Error(std::string(what) + " overflows: the extents are too large to describe memory that exists");
  return *v;
}

}  // namespace adalora
