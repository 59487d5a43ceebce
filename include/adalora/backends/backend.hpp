// The Backend concept: the few primitives (buffers, element-wise map, sums, k-th smallest, GEMM) every algorithm uses.
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <utility>

#include "adalora/core/memory_space.hpp"

namespace adalora {

/// Tag that a backend names as its `backend_concept` to join the Backend concept on purpose.
struct backend_tag {};

namespace detail {
/// A probe functor used only to state the Backend requirements.
struct backend_probe_fn {
  void operator()(std::size_t) const noexcept {}
};
struct backend_probe_pred {
  bool operator()(std::size_t) const noexcept { return false; }
};
struct backend_probe_value {
  float operator()(std::size_t) const noexcept { return 0.0f; }
};
/// A trivially copyable record, standing for the tables algorithms upload (e.g. the allocator's step plan).
struct backend_probe_record {
  const float* pointer;
  std::size_t index;
  std::uint32_t tag;
};
}  // namespace detail

/// Whether a GEMM operand is used as stored or transposed.
enum class transpose { no, yes };

/// An owning, contiguous buffer of `T`: `data()` and `size()`.
template <class B, class T>
concept BufferOf = requires(B& b, const B& cb) {
  { b.data() } -> std::convertible_to<T*>;
  { cb.size() } -> std::convertible_to<std::size_t>;
};

/// A tensor backend: what an algorithm needs from a device or a CPU library.
///  1. names `backend_tag` as its `backend_concept` and a `MemorySpace` as its `memory_space`;
///  2. `b.template allocate<T>(n)` returns an owning buffer of n zero-initialised T in that memory space, for
///     every trivially copyable T (float, double, std::uint8_t, std::uint32_t, std::size_t and the allocator's plan
///     records);
///  3. `b.for_each(n, f)` calls `f(i)` for every i in [0, n), in any order (f is host+device callable);
///  4. `b.count_if(n, p)` counts the i in [0, n) with `p(i)`;
///  5. `b.transform_sum(n, f)` returns Σ f(i) over [0, n), accumulated in double, to the host;
///  6. `b.col_sums(m, rows, cols, out)` reduces a contiguous row-major float matrix to its column sums
///     (accumulated in double, rounded once to float);
///  7. `b.kth_smallest(v, n, k)` returns the k-th smallest (1-indexed) of n floats, to the host, in one total order
///     on every backend (detail::kth_order_key, backends/kth_order.hpp): numbers by value with -0 equal to +0, then
///     every NaN; a zero comes back as +0 and a NaN as the quiet NaN 0x7FC00000. k outside [1, n] is a usage_error;
///  8. `b.gemm(op_a, op_b, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc)`: row-major float GEMM,
///     C (m × n, leading dimension ldc) = alpha · op(A) · op(B) + beta · C, op(A) m × k, op(B) k × n;
///     with beta = 0, C is not read (NaNs in it do not propagate);
///  9. `b.copy_to_host(src, n, dst)` and `b.copy_from_host(src, n, dst)` move n values of any of those types;
/// 10. `b.synchronize()` waits for all work queued by the backend.
template <class B>
concept Backend = std::same_as<typename B::backend_concept, backend_tag> && MemorySpace<typename B::memory_space> &&
    requires(B& b, const float* cf, float* f, const std::uint8_t* cu, std::uint8_t* u, const std::size_t* cz,
             std::size_t* z, std::size_t n) {
  { b.template allocate<float>(n) } -> BufferOf<float>;
  { b.template allocate<std::uint8_t>(n) } -> BufferOf<std::uint8_t>;
  { b.template allocate<std::size_t>(n) } -> BufferOf<std::size_t>;
  { b.template allocate<double>(n) } -> BufferOf<double>;
  { b.template allocate<std::uint32_t>(n) } -> BufferOf<std::uint32_t>;
  { b.template allocate<detail::backend_probe_record>(n) } -> BufferOf<detail::backend_probe_record>;
  b.for_each(n, detail::backend_probe_fn{});
  { b.count_if(n, detail::backend_probe_pred{}) } -> std::convertible_to<std::size_t>;
  { b.transform_sum(n, detail::backend_probe_value{}) } -> std::convertible_to<double>;
  b.col_sums(cf, n, n, f);
  b.gemm(transpose::no, transpose::yes, n, n, n, 1.0f, cf, n, cf, n, 0.0f, f, n);
  { b.kth_smallest(cf, n, n) } -> std::convertible_to<float>;
  b.copy_to_host(cf, n, f);
  b.copy_from_host(cf, n, f);
  b.copy_to_host(cu, n, u);
  b.copy_from_host(cu, n, u);
  b.copy_to_host(cz, n, z);
  b.copy_from_host(cz, n, z);
  b.copy_from_host(static_cast<const detail::backend_probe_record*>(nullptr), n,
                   static_cast<detail::backend_probe_record*>(nullptr));
  b.synchronize();
  { B::name } -> std::convertible_to<const char*>;
};

/// The owning buffer type a backend allocates for `T`.
template <Backend B, class T>
using buffer_t = decltype(std::declval<B&>().template allocate<T>(std::size_t{}));

}  // namespace adalora
