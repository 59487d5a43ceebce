// The element-wise and copy primitives every host backend shares: plain loops over indices, std::vector buffers.
#pragma once

#include <cstddef>
#include <cstring>
#include <vector>

namespace adalora::detail {

/// Base of the host backends (Eigen, xtensor): allocation, for_each, count_if, transform_sum, host copies.
/// Each backend adds its own reductions, selection and GEMM.
struct host_loop_primitives {
  template <class T>
  std::vector<T> allocate(std::size_t n) const {
    return std::vector<T>(n, T{});
  }

  template <class F>
  void for_each(std::size_t n, F f) const {
    for (std::size_t i = 0; i < n; ++i) f(i);
  }

  template <class P>
  std::size_t count_if(std::size_t n, P p) const {
    std::size_t c = 0;
    for (std::size_t i = 0; i < n; ++i) c += p(i) ? 1u : 0u;
    return c;
  }

  template <class F>
  double transform_sum(std::size_t n, F f) const {
    double s = 0.0;
    for (std::size_t i = 0; i < n; ++i) s += static_cast<double>(f(i));
    return s;
  }

  template <class T>
  void copy_to_host(const T* src, std::size_t n, T* dst) const {
    if (n) std::memcpy(dst, src, n * sizeof(T));
  }
  template <class T>
  void copy_from_host(const T* src, std::size_t n, T* dst) const {
    if (n) std::memcpy(dst, src, n * sizeof(T));
  }
  void synchronize() const noexcept {}
};

}  // namespace adalora::detail
