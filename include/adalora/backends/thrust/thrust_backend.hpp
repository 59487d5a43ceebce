// The Thrust backend on the host: thrust_backend over Thrust's CPP (sequential) and OMP (OpenMP) systems.
#pragma once

#include <algorithm>
#include <concepts>
#include <cstddef>
#include <type_traits>
#include <utility>

#include <thrust/copy.h>
#include <thrust/system/cpp/execution_policy.h>
#include <thrust/system/cpp/vector.h>
#include <thrust/system/omp/execution_policy.h>
#include <thrust/system/omp/vector.h>

#include "adalora/backends/backend.hpp"
#include "adalora/backends/kth_order.hpp"
#include "adalora/backends/thrust/thrust_backend_generic.hpp"
#include "adalora/core/memory_space.hpp"

namespace adalora {

namespace detail {

/// What Thrust's host systems share: host memory, copies with the system's own copy, nothing queued to wait for.
/// `Policy` is the system's parallel policy type, `Vector` its vector template.
template <class Policy, template <class> class Vector>
struct thrust_host_system {
  using thrust_system_concept = thrust_system_tag;
  using memory_space = host_space;

  Policy policy() const noexcept { return Policy{}; }

  template <class T>
  thrust_vector_buffer<Vector<T>> allocate(std::size_t n) const {
    return thrust_vector_buffer<Vector<T>>(n);
  }

  // Both sides are host memory: a plain copy (no parallel region for the small tables and results moved).
  template <class T>
  void copy_to_host(const T* src, std::size_t n, T* dst) const {
    std::copy(src, src + n, dst);
  }
  template <class T>
  void copy_from_host(const T* src, std::size_t n, T* dst) const {
    std::copy(src, src + n, dst);
  }
  void synchronize() const noexcept {}

  /// Host systems report errors as the standard exceptions they already are (e.g. std::bad_alloc).
  template <class F>
  decltype(auto) guarded(F&& f) const {
    return std::forward<F>(f)();
  }
};

template <class T>
using thrust_cpp_vector = thrust::cpp::vector<T>;
template <class T>
using thrust_omp_vector = thrust::omp::vector<T>;

}  // namespace detail

/// Thrust's sequential C++ system (thrust::cpp::par): host memory, one thread.
struct thrust_cpp_system
    : detail::thrust_host_system<std::remove_cvref_t<decltype(thrust::cpp::par)>, detail::thrust_cpp_vector> {
  static constexpr const char* name = "thrust-cpp";
};

/// Thrust's OpenMP system (thrust::omp::par): host memory, the OpenMP threads (sequential without -fopenmp).
/// Reduces in fixed tiles with thrust::for_each (see thrust_backend), so its results do not depend on the threads.
struct thrust_omp_system
    : detail::thrust_host_system<std::remove_cvref_t<decltype(thrust::omp::par)>, detail::thrust_omp_vector> {
  static constexpr const char* name = "thrust-omp";
  static constexpr bool reduce_in_tiles = true;

  /// The selection over the b0 triplet scores (thousands of floats) as one std::nth_element on a copy of their keys
  /// (detail::kth_smallest_on_host): the generic counting radix select would open 32 parallel regions for it.
  /// (thrust-cpp keeps the generic formulation, which its tests cover.)
  float kth_smallest(const float* v, std::size_t n, std::size_t k) const {
    return detail::kth_smallest_on_host(v, n, k);
  }
};

static_assert(ThrustSystem<thrust_cpp_system>);
static_assert(ThrustSystem<thrust_omp_system>);

/// The Thrust backend on Thrust's sequential CPP system (name "thrust-cpp").
using thrust_cpp_backend = thrust_backend<thrust_cpp_system>;
/// The Thrust backend on Thrust's OpenMP system (name "thrust-omp").
using thrust_omp_backend = thrust_backend<thrust_omp_system>;

static_assert(Backend<thrust_cpp_backend>);
static_assert(Backend<thrust_omp_backend>);
static_assert(std::same_as<thrust_cpp_backend::memory_space, host_space>);
static_assert(std::same_as<thrust_omp_backend::memory_space, host_space>);

}  // namespace adalora
