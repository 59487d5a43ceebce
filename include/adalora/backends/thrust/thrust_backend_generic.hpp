// The Thrust backend template: every Backend primitive as a Thrust algorithm run with a system's execution policy.
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

#include <thrust/copy.h>
#include <thrust/count.h>
#include <thrust/for_each.h>
#include <thrust/functional.h>
#include <thrust/iterator/counting_iterator.h>
#include <thrust/iterator/discard_iterator.h>
#include <thrust/iterator/transform_iterator.h>
#include <thrust/iterator/transform_output_iterator.h>
#include <thrust/memory.h>
#include <thrust/reduce.h>
#include <thrust/transform_reduce.h>

#include "adalora/backends/backend.hpp"
#include "adalora/backends/kth_order.hpp"
#include "adalora/backends/thrust/thrust_gemm.hpp"
#include "adalora/core/error.hpp"
#include "adalora/core/host_device.hpp"
#include "adalora/core/memory_space.hpp"

namespace adalora {

/// Tag that a Thrust system descriptor names as its `thrust_system_concept` to join ThrustSystem on purpose.
struct thrust_system_tag {};

namespace detail {
/// A probe task used only to state the ThrustSystem requirements.
struct thrust_probe_task {
  void operator()() const noexcept {}
};
}  // namespace detail

/// A Thrust system descriptor: where a `thrust_backend` runs and how it reaches that memory.
///  1. names `thrust_system_tag` as its `thrust_system_concept`, a `MemorySpace` as its `memory_space`, and has a
///     `static constexpr const char* name` (the backend's name);
///  2. `s.policy()` returns the Thrust execution policy every algorithm runs with (copyable, stored by the backend,
///     valid while the system or a copy of it lives);
///  3. `s.template allocate<T>(n)` returns an owning buffer (`data()` → `T*`, `size()`) of n zeros in that memory
///     space, for T = float, std::uint8_t and std::size_t; the buffer is default-constructible, and moving it never
///     throws and keeps `data()` (views of a buffer survive the buffer moving, e.g. inside a std::vector);
///  4. `s.copy_to_host(src, n, dst)` / `s.copy_from_host(src, n, dst)` move n values of those types, and have
///     finished when they return; `s.synchronize()` waits for all work queued with the policy;
///  5. `s.guarded(f)` runs `f()` and turns the system's own errors into `adalora::error`s (device code never throws).
/// Optionally, `s.gemm(...)` (the Backend signature, called with m, n, k ≥ 1) and `s.kth_smallest(v, n, k)` (k already
/// checked) replace the generic Thrust formulations with a tuned library (cuBLAS, CUB), `s.reserve_kth_smallest(n)`
/// takes ahead of time the scratch memory such a selection over n floats needs; `s.for_each_tile_lanes(n, f)`
/// launches tiled passes in block form (a GPU's thread blocks); and a host system may set
/// `static constexpr bool reduce_in_tiles = true` to reduce with thrust::for_each alone (see thrust_backend).
template <class S>
concept ThrustSystem = std::same_as<typename S::thrust_system_concept, thrust_system_tag> &&
    MemorySpace<typename S::memory_space> && std::copy_constructible<S> &&
    std::is_nothrow_move_constructible_v<decltype(std::declval<const S&>().template allocate<float>(std::size_t{}))> &&
    requires(const S& s, const float* cf, float* f, const std::uint8_t* cu, std::uint8_t* u, const std::size_t* cz,
             std::size_t* z, std::size_t n) {
  { S::name } -> std::convertible_to<const char*>;
  s.policy();
  { s.template allocate<float>(n) } -> BufferOf<float>;
  { s.template allocate<std::uint8_t>(n) } -> BufferOf<std::uint8_t>;
  { s.template allocate<std::size_t>(n) } -> BufferOf<std::size_t>;
  s.copy_to_host(cf, n, f);
  s.copy_from_host(cf, n, f);
  s.copy_to_host(cu, n, u);
  s.copy_from_host(cu, n, u);
  s.copy_to_host(cz, n, z);
  s.copy_from_host(cz, n, z);
  s.synchronize();
  s.guarded(detail::thrust_probe_task{});
};

namespace detail {

/// Whether a system brings its own GEMM (e.g. cuBLAS) instead of the generic work items (thrust_gemm.hpp).
template <class S>
concept thrust_system_with_gemm = requires(const S& s, const float* a, float* c, std::size_t n, float x) {
  s.gemm(transpose::no, transpose::no, n, n, n, x, a, n, a, n, x, c, n);
};

/// Whether a system brings its own selection (e.g. a CUB radix sort) instead of the generic counting radix select.
template <class S>
concept thrust_system_with_kth_smallest = requires(const S& s, const float* v, std::size_t n) {
  { s.kth_smallest(v, n, n) } -> std::convertible_to<float>;
};

/// Whether a system launches tiled passes in block form (the CUDA system: detail::TileLanePass,
/// allocation/tile_lanes.hpp).
template <class S, class F>
concept thrust_system_with_tile_lanes = requires(const S& s, const F& f, std::size_t n) {
  s.for_each_tile_lanes(n, f);
};

/// Whether a (host) system reduces with thrust::for_each over fixed tiles instead of Thrust's reductions.
template <class S>
concept thrust_system_reduces_in_tiles = requires {
  requires S::reduce_in_tiles;
  requires std::same_as<typename S::memory_space, host_space>;
};

/// An owning, zero-filled buffer over one of Thrust's vectors, handing out raw pointers.
template <class Vector>
class thrust_vector_buffer {
public:
  using value_type = typename Vector::value_type;

  thrust_vector_buffer() = default;
  explicit thrust_vector_buffer(std::size_t n) : vector_(n, value_type{}) {}
  thrust_vector_buffer(const thrust_vector_buffer&) = default;
  // Moves keep the data where it is (views of it stay valid) and never throw, so containers of buffers move them.
  thrust_vector_buffer(thrust_vector_buffer&& other) noexcept { vector_.swap(other.vector_); }
  thrust_vector_buffer& operator=(const thrust_vector_buffer&) = default;
  thrust_vector_buffer& operator=(thrust_vector_buffer&& other) noexcept {
    Vector old;
    old.swap(vector_);
    vector_.swap(other.vector_);
    return *this;
  }
  ~thrust_vector_buffer() = default;

  value_type* data() noexcept { return thrust::raw_pointer_cast(vector_.data()); }
  const value_type* data() const noexcept { return thrust::raw_pointer_cast(vector_.data()); }
  std::size_t size() const noexcept { return static_cast<std::size_t>(vector_.size()); }

private:
  Vector vector_;
};

/// f(i) widened to double, for transform_sum.
template <class F>
struct thrust_as_double_fn {
  F f;
  ADALORA_HOST_DEVICE double operator()(std::size_t i) const { return static_cast<double>(f(i)); }
};

/// The elements of a tiled reduction over [0, n) that one call sums: fixed, so results do not depend on threads.
inline constexpr std::size_t thrust_reduction_tile = 4096;

/// partial[t] = Σ f(i) over tile t, in double, left to right.
template <class F>
struct thrust_tile_sum_fn {
  F f;
  std::size_t n;
  double* partial;
  ADALORA_HOST_DEVICE void operator()(std::size_t t) const {
    const std::size_t begin = t * thrust_reduction_tile;
    const std::size_t end = n - begin < thrust_reduction_tile ? n : begin + thrust_reduction_tile;
    double sum = 0.0;
    for (std::size_t i = begin; i < end; ++i) sum += static_cast<double>(f(i));
    partial[t] = sum;
  }
};
/// partial[t] = #{i in tile t : p(i)}.
template <class P>
struct thrust_tile_count_fn {
  P p;
  std::size_t n;
  std::size_t* partial;
  ADALORA_HOST_DEVICE void operator()(std::size_t t) const {
    const std::size_t begin = t * thrust_reduction_tile;
    const std::size_t end = n - begin < thrust_reduction_tile ? n : begin + thrust_reduction_tile;
    std::size_t count = 0;
    for (std::size_t i = begin; i < end; ++i) count += p(i) ? 1u : 0u;
    partial[t] = count;
  }
};
/// out[j] = the sum of column j of a row-major rows × cols matrix, in double, rounded once to float.
struct thrust_column_sum_fn {
  const float* m;
  std::size_t rows;
  std::size_t cols;
  float* out;
  ADALORA_HOST_DEVICE void operator()(std::size_t j) const noexcept {
    double sum = 0.0;
    for (std::size_t r = 0; r < rows; ++r) sum += static_cast<double>(m[r * cols + j]);
    out[j] = static_cast<float>(sum);
  }
};

/// Key of index i in a segmented reduction over consecutive runs of `length` indices: its run.
struct thrust_run_key_fn {
  std::size_t length;
  ADALORA_HOST_DEVICE std::size_t operator()(std::size_t i) const noexcept { return i / length; }
};
/// Element i of a row-major matrix, read in column-major order (i = j·rows + r), as double.
struct thrust_col_value_fn {
  const float* m;
  std::size_t rows;
  std::size_t cols;
  ADALORA_HOST_DEVICE double operator()(std::size_t i) const noexcept {
    return static_cast<double>(m[(i % rows) * cols + i / rows]);
  }
};
/// A sum accumulated in double, rounded once to float.
struct thrust_round_to_float_fn {
  ADALORA_HOST_DEVICE float operator()(double sum) const noexcept { return static_cast<float>(sum); }
};
/// True where v[i]'s key in kth_smallest's order (backends/kth_order.hpp) is at most `bound`.
struct thrust_key_at_most_fn {
  const float* v;
  std::uint32_t bound;
  ADALORA_HOST_DEVICE bool operator()(std::size_t i) const noexcept { return kth_order_key(v[i]) <= bound; }
};

/// out[i] = value.
struct thrust_fill_fn {
  float* out;
  float value;
  ADALORA_HOST_DEVICE void operator()(std::size_t i) const noexcept { out[i] = value; }
};

}  // namespace detail

/// The Backend primitives written once with Thrust algorithms, for any Thrust system descriptor: Thrust's CPP and
/// OMP systems on the host (thrust_backend.hpp), CUDA on a caller's stream (backends/cuda/cuda_backend.cuh).
///
/// Reductions accumulate in double and round once to float, as the Eigen reference does, so results agree with it
/// to about one ulp; k-th smallest is exact (a radix select by counting: 32 count_if passes, no sort, no temporary).
/// The backend is a cheap value: copies share the system's resources.
///
/// Reductions run as thrust::count_if, thrust::transform_reduce and thrust::reduce_by_key, except on a system that
/// sets `reduce_in_tiles` (the OMP system): there every reduction is a thrust::for_each, over fixed tiles of 4096
/// elements (their partial results combined on the host, in order) or over rows and columns. The results then do
/// not depend on the number of threads, and Thrust's OMP reductions, whose temporaries dispatch through null system
/// references that UBSan reports, are not used.
template <ThrustSystem System>
class thrust_backend {
public:
  using backend_concept = backend_tag;
  using system_type = System;
  using memory_space = typename System::memory_space;
  using policy_type = std::remove_cvref_t<decltype(std::declval<const System&>().policy())>;
  static constexpr const char* name = System::name;

  thrust_backend() requires std::default_initializable<System> : thrust_backend(System{}) {}
  explicit thrust_backend(System system) : system_(std::move(system)), policy_(system_.policy()) {}

  const System& system() const noexcept { return system_; }
  const policy_type& policy() const noexcept { return policy_; }

  template <class T>
  auto allocate(std::size_t n) const {
    return system_.guarded([&] { return system_.template allocate<T>(n); });
  }

  template <class F>
  void for_each(std::size_t n, F f) const {
    if (n == 0) return;
    if constexpr (std::same_as<memory_space, host_space>) {
      if (n == 1) return f(std::size_t{0});  // host memory: no parallel region for one item
    }
    system_.guarded([&] { thrust::for_each(policy_, first(), first() + n, f); });
  }

  /// A tiled pass in block form, on a system that launches it (the CUDA system): lane work items, coalesced reads.
  /// The allocator uses it where it exists and for_each over tiles otherwise.
  template <class F>
  requires detail::thrust_system_with_tile_lanes<System, F>
  void for_each_tile_lanes(std::size_t tiles, const F& f) const {
    if (tiles == 0) return;
    system_.guarded([&] { system_.for_each_tile_lanes(tiles, f); });
  }

  template <class P>
  std::size_t count_if(std::size_t n, P p) const {
    if (n == 0) return 0;
    if constexpr (detail::thrust_system_reduces_in_tiles<System>) {
      std::vector<std::size_t> partial(tiles(n));
      for_each(partial.size(), detail::thrust_tile_count_fn<P>{p, n, partial.data()});
      std::size_t count = 0;
      for (std::size_t c : partial) count += c;
      return count;
    } else {
      return system_.guarded(
          [&] { return static_cast<std::size_t>(thrust::count_if(policy_, first(), first() + n, p)); });
    }
  }

  template <class F>
  double transform_sum(std::size_t n, F f) const {
    if (n == 0) return 0.0;
    if constexpr (detail::thrust_system_reduces_in_tiles<System>) {
      std::vector<double> partial(tiles(n));
      for_each(partial.size(), detail::thrust_tile_sum_fn<F>{f, n, partial.data()});
      double sum = 0.0;
      for (double s : partial) sum += s;
      return sum;
    } else {
      return system_.guarded([&] {
        return thrust::transform_reduce(policy_, first(), first() + n, detail::thrust_as_double_fn<F>{f}, 0.0,
                                        thrust::plus<double>());
      });
    }
  }

  void col_sums(const float* m, std::size_t rows, std::size_t cols, float* out) const {
    if (cols == 0) return;
    if (rows == 0) return fill(out, cols, 0.0f);
    if constexpr (detail::thrust_system_reduces_in_tiles<System>) {
      for_each(cols, detail::thrust_column_sum_fn{m, rows, cols, out});
    } else {
      // Column j of a row-major matrix is the j-th run of `rows` consecutive indices in column-major order. The
      // explicit plus<double> makes the accumulator double: with the default operator Thrust may accumulate in the
      // output's value type (float).
      system_.guarded([&] {
        thrust::reduce_by_key(policy_, thrust::make_transform_iterator(first(), detail::thrust_run_key_fn{rows}),
                              thrust::make_transform_iterator(first() + rows * cols, detail::thrust_run_key_fn{rows}),
                              thrust::make_transform_iterator(first(), detail::thrust_col_value_fn{m, rows, cols}),
                              thrust::make_discard_iterator(),
                              thrust::make_transform_output_iterator(out, detail::thrust_round_to_float_fn{}),
                              thrust::equal_to<std::size_t>(), thrust::plus<double>());
      });
    }
  }

  void gemm(transpose op_a, transpose op_b, std::size_t m, std::size_t n, std::size_t k, float alpha, const float* a,
            std::size_t lda, const float* b, std::size_t ldb, float beta, float* c, std::size_t ldc) const {
    if (m == 0 || n == 0) return;
    if constexpr (detail::thrust_system_with_gemm<System>) {
      if (k != 0)
        return system_.guarded([&] { system_.gemm(op_a, op_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc); });
    }
    const detail::gemm_operands g{a, lda, op_a == transpose::yes, b, ldb, op_b == transpose::yes, m, n, k};
    const detail::thrust_gemm_output out{c, ldc, alpha, beta};
    // host memory: a row × a block of columns per item, reading memory in its order; a device: an element per thread
    if constexpr (std::same_as<memory_space, host_space>)
      for_each(detail::thrust_gemm_block_fn::items(m, n), detail::thrust_gemm_block_fn{g, out});
    else
      for_each(m * n, detail::thrust_gemm_fn{g, out});
  }

  /// In the order every backend shares (backends/kth_order.hpp).
  float kth_smallest(const float* v, std::size_t n, std::size_t k) const {
    detail::check_kth_argument(n, k);
    return system_.guarded([&] {
      if constexpr (detail::thrust_system_with_kth_smallest<System>) {
        return static_cast<float>(system_.kth_smallest(v, n, k));
      } else {
        // A radix select by counting: the k-th smallest has the least order key K with #{i : key(v_i) ≤ K} ≥ k
        // (K is the key of an element). 32 halvings of the key range, each one count_if over v; exact, and without
        // temporary storage.
        std::uint32_t lo = 0, hi = 0xffffffffu;
        while (lo < hi) {
          const std::uint32_t mid = lo + (hi - lo) / 2;
          if (count_if(n, detail::thrust_key_at_most_fn{v, mid}) >= k)
            hi = mid;
          else
            lo = mid + 1;
        }
        return detail::kth_order_value(lo);
      }
    });
  }

  /// Takes the scratch memory kth_smallest over n floats needs ahead of time, on a system whose selection uses some
  /// (the CUDA system): an algorithm that selects over the same n every step then allocates nothing in its steps.
  void reserve_kth_smallest(std::size_t n) const
    requires requires(const System& s, std::size_t m) { s.reserve_kth_smallest(m); }
  {
    if (n) system_.guarded([&] { system_.reserve_kth_smallest(n); });
  }

  template <class T>
  void copy_to_host(const T* src, std::size_t n, T* dst) const {
    if (n) system_.guarded([&] { system_.copy_to_host(src, n, dst); });
  }
  template <class T>
  void copy_from_host(const T* src, std::size_t n, T* dst) const {
    if (n) system_.guarded([&] { system_.copy_from_host(src, n, dst); });
  }
  void synchronize() const {
    system_.guarded([&] { system_.synchronize(); });
  }

private:
  static thrust::counting_iterator<std::size_t> first() noexcept { return thrust::counting_iterator<std::size_t>(0); }
  static std::size_t tiles(std::size_t n) noexcept {
    return (n + detail::thrust_reduction_tile - 1) / detail::thrust_reduction_tile;
  }

  void fill(float* out, std::size_t n, float value) const { for_each(n, detail::thrust_fill_fn{out, value}); }

  System system_;
  policy_type policy_;
};

}  // namespace adalora
