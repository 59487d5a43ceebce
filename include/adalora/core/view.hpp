// Non-owning strided views (pointer, extents, strides, memory space) of tensors that the trainer owns.
#pragma once

#include <array>
#include <cstddef>
#include <limits>
#include <string>
#include <type_traits>

#include "adalora/core/checked_size.hpp"
#include "adalora/core/host_device.hpp"
#include "adalora/core/memory_space.hpp"

namespace adalora {

/// A non-owning view of a rank-`Rank` tensor of `T` in memory space `Space`.
/// Strides are in elements (not bytes), as in PyTorch; a default-constructed view is empty (null data).
template <class T, std::size_t Rank, MemorySpace Space = host_space>
struct strided_view {
  using element_type = T;
  using value_type = std::remove_cv_t<T>;
  using memory_space = Space;
  static constexpr std::size_t rank = Rank;

  T* data = nullptr;
  std::array<std::size_t, Rank> extents{};
  std::array<std::ptrdiff_t, Rank> strides{};

  /// Number of elements.
  ADALORA_HOST_DEVICE constexpr std::size_t size() const noexcept {
    std::size_t n = 1;
    for (std::size_t d = 0; d < Rank; ++d) n *= extents[d];
    return n;
  }
  ADALORA_HOST_DEVICE constexpr std::size_t extent(std::size_t d) const noexcept { return extents[d]; }
  ADALORA_HOST_DEVICE constexpr bool empty() const noexcept { return size() == 0; }

  /// True when the elements are densely packed in row-major order.
  ADALORA_HOST_DEVICE constexpr bool is_contiguous() const noexcept {
    std::ptrdiff_t expected = 1;
    for (std::size_t d = Rank; d-- > 0;) {
      if (extents[d] != 1 && strides[d] != expected) return false;
      expected *= static_cast<std::ptrdiff_t>(extents[d]);
    }
    return true;
  }

  /// Offset (in elements) of the `flat`-th element in row-major order.
  ADALORA_HOST_DEVICE constexpr std::ptrdiff_t offset_of_flat(std::size_t flat) const noexcept {
    std::ptrdiff_t off = 0;
    for (std::size_t d = Rank; d-- > 0;) {
      const std::size_t e = extents[d];
      off += static_cast<std::ptrdiff_t>(flat % e) * strides[d];
      flat /= e;
    }
    return off;
  }
  /// The `flat`-th element in row-major order.
  ADALORA_HOST_DEVICE constexpr T& flat(std::size_t i) const noexcept { return data[offset_of_flat(i)]; }

  ADALORA_HOST_DEVICE constexpr T& operator()(std::size_t i) const noexcept requires(Rank == 1) {
    return data[static_cast<std::ptrdiff_t>(i) * strides[0]];
  }
  ADALORA_HOST_DEVICE constexpr T& operator()(std::size_t i, std::size_t j) const noexcept requires(Rank == 2) {
    return data[static_cast<std::ptrdiff_t>(i) * strides[0] + static_cast<std::ptrdiff_t>(j) * strides[1]];
  }

  /// The same view, read-only.
  constexpr operator strided_view<const T, Rank, Space>() const noexcept requires(!std::is_const_v<T>) {
    return {data, extents, strides};
  }
};

template <class T, MemorySpace Space = host_space>
using vector_view = strided_view<T, 1, Space>;
template <class T, MemorySpace Space = host_space>
using matrix_view = strided_view<T, 2, Space>;

/// A contiguous vector view of `n` elements.
template <MemorySpace Space = host_space, class T>
constexpr vector_view<T, Space> make_vector_view(T* data, std::size_t n) noexcept {
  return {data, {n}, {1}};
}

/// A row-major contiguous matrix view (rows × cols), PyTorch's default layout.
template <MemorySpace Space = host_space, class T>
constexpr matrix_view<T, Space> make_matrix_view(T* data, std::size_t rows, std::size_t cols) noexcept {
  return {data, {rows, cols}, {static_cast<std::ptrdiff_t>(cols), 1}};
}

/// A matrix view with explicit strides (in elements), e.g. a transposed or column-major tensor.
template <MemorySpace Space = host_space, class T>
constexpr matrix_view<T, Space> make_matrix_view(T* data, std::size_t rows, std::size_t cols, std::ptrdiff_t row_stride,
                                                 std::ptrdiff_t col_stride) noexcept {
  return {data, {rows, cols}, {row_stride, col_stride}};
}

/// "3, 4"-style text of a view's strides, for error messages.
template <class View>
std::string strides_string(const View& v) {
  std::string s;
  for (std::size_t d = 0; d < View::rank; ++d) {
    if (d) s += ", ";
    s += std::to_string(v.strides[d]);
  }
  return s;
}

/// "(3, 4)"-style text of a view's extents, for error messages.
template <class View>
std::string extents_string(const View& v) {
  std::string s = "(";
  for (std::size_t d = 0; d < View::rank; ++d) {
    if (d) s += ", ";
    s += std::to_string(v.extents[d]);
  }
  return s + ")";
}

/// Empty when a view describes memory that can exist: every extent and the element count are at most
/// max_elements_of<T>, and the offset of every element (Σ (extent − 1) · |stride|) fits in ptrdiff_t; otherwise what
/// overflows. In an empty view (a zero extent) no element is addressed, so only the extents themselves are checked.
template <class T, std::size_t Rank, MemorySpace Space>
std::string extents_problem(const strided_view<T, Rank, Space>& v) {
  constexpr std::size_t most = max_elements_of<std::remove_cv_t<T>>;
  std::size_t n = 1;
  bool empty = false, overflow = false;
  for (std::size_t d = 0; d < Rank; ++d) {
    if (v.extents[d] > most)  // even in an empty view: a size computed from a negative number, say
      return "extent " + std::to_string(v.extents[d]) + " (dimension " + std::to_string(d) + " of " +
             extents_string(v) + ") is more elements than one object can hold (at most " + std::to_string(most) + ")";
    if (v.extents[d] == 0) empty = true;
    const auto m = checked_mul(n, v.extents[d]);
    overflow = overflow || !m;
    n = m ? *m : n;
  }
  if (empty) return {};
  if (overflow || n > most)
    return "extents " + extents_string(v) + " hold more elements than one object can (at most " +
           std::to_string(most) + ")";
  std::size_t reach = 0;  // the largest |offset| of an element
  for (std::size_t d = 0; d < Rank; ++d) {
    const std::ptrdiff_t s = v.strides[d];
    const std::size_t magnitude = s < 0 ? static_cast<std::size_t>(-(s + 1)) + 1 : static_cast<std::size_t>(s);
    const auto step = checked_mul(v.extents[d] - 1, magnitude);
    const auto sum = step ? checked_add(reach, *step) : std::nullopt;
    if (!sum || *sum > static_cast<std::size_t>(std::numeric_limits<std::ptrdiff_t>::max()))
      return "extents " + extents_string(v) + " with strides (" + strides_string(v) +
             ") reach offsets beyond the range of ptrdiff_t";
    reach = *sum;
  }
  return {};
}

}  // namespace adalora
