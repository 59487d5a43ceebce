// A Backend that counts what another backend is asked to do: calls (kernel launches and transfers on a device) and
// buffer allocations. For benchmarks and tests of how many launches and allocations an algorithm makes.
#pragma once

#include <concepts>
#include <cstddef>
#include <memory>
#include <utility>

#include "adalora/backends/backend.hpp"

namespace adalora {

/// What a counting_backend has counted so far.
struct backend_counts {
  /// Calls that are one kernel launch, one library call or one transfer on a device: for_each,
  /// for_each_tile_lanes, count_if, transform_sum, col_sums, kth_smallest, gemm, copy_to_host, copy_from_host.
  std::size_t calls = 0;
  /// Buffers allocated (allocate<T>(n) calls).
  std::size_t allocations = 0;
};

/// `Base` with every call counted (see backend_counts); the work itself is Base's. Copies share the counts, so that
/// an algorithm's copy of the backend counts into the caller's. Not thread-safe (count one thread's work).
/// The block form of tiled passes (for_each_tile_lanes) is forwarded where Base has it, and counted.
template <Backend Base>
class counting_backend : public Base {
public:
  static constexpr const char* name = Base::name;

  counting_backend() requires std::default_initializable<Base> = default;
  explicit counting_backend(Base base) : Base(std::move(base)) {}

  /// The counts of this backend and its copies.
  const backend_counts& counts() const noexcept { return *counts_; }
  void reset_counts() const noexcept { *counts_ = {}; }

  template <class T>
  auto allocate(std::size_t n) const {
    ++counts_->allocations;
    return Base::template allocate<T>(n);
  }
  template <class F>
  void for_each(std::size_t n, F f) const {
    ++counts_->calls;
    Base::for_each(n, std::move(f));
  }
  template <class F>
  requires requires(const Base& b, const F& f, std::size_t n) { b.for_each_tile_lanes(n, f); }
  void for_each_tile_lanes(std::size_t tiles, const F& f) const {
    ++counts_->calls;
    Base::for_each_tile_lanes(tiles, f);
  }
  template <class P>
  std::size_t count_if(std::size_t n, P p) const {
    ++counts_->calls;
    return Base::count_if(n, std::move(p));
  }
  template <class F>
  double transform_sum(std::size_t n, F f) const {
    ++counts_->calls;
    return Base::transform_sum(n, std::move(f));
  }
  void col_sums(const float* m, std::size_t rows, std::size_t cols, float* out) const {
    ++counts_->calls;
    Base::col_sums(m, rows, cols, out);
  }
  float kth_smallest(const float* v, std::size_t n, std::size_t k) const {
    ++counts_->calls;
    return Base::kth_smallest(v, n, k);
  }
  void gemm(transpose op_a, transpose op_b, std::size_t m, std::size_t n, std::size_t k, float alpha, const float* a,
            std::size_t lda, const float* b, std::size_t ldb, float beta, float* c, std::size_t ldc) const {
    ++counts_->calls;
    Base::gemm(op_a, op_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  }
  template <class T>
  void copy_to_host(const T* src, std::size_t n, T* dst) const {
    ++counts_->calls;
    Base::copy_to_host(src, n, dst);
  }
  template <class T>
  void copy_from_host(const T* src, std::size_t n, T* dst) const {
    ++counts_->calls;
    Base::copy_from_host(src, n, dst);
  }

private:
  std::shared_ptr<backend_counts> counts_ = std::make_shared<backend_counts>();
};

}  // namespace adalora
