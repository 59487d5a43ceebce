// The CUDA backend (nvcc only): thrust_backend on Thrust's CUDA system and a caller's stream, cuBLAS, CUB.
#pragma once

#if !defined(__CUDACC__)
#error "adalora/backends/cuda/cuda_backend.cuh needs nvcc: link adalora::cuda (configure with -DADALORA_ENABLE_CUDA=ON)"
#endif

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <string>
#include <utility>

#include <thrust/for_each.h>
#include <thrust/iterator/counting_iterator.h>
#include <thrust/system/cuda/error.h>
#include <thrust/system/cuda/execution_policy.h>
#include <thrust/system_error.h>

#include <cub/device/device_radix_sort.cuh>

#include "adalora/backends/backend.hpp"
#include "adalora/backends/block_cache.hpp"
#include "adalora/backends/cuda/cuda_error.cuh"
#include "adalora/backends/cuda/cuda_memory.cuh"
#include "adalora/backends/cuda/tile_lanes_kernel.cuh"
#include "adalora/backends/kth_order.hpp"
#include "adalora/backends/thrust/thrust_backend_generic.hpp"
#include "adalora/core/error.hpp"
#include "adalora/core/memory_space.hpp"

namespace adalora {

namespace detail {

/// Throws cuda_error when a cuBLAS call did not succeed.
inline void cublas_check(cublasStatus_t status, const char* what) {
  if (status == CUBLAS_STATUS_SUCCESS) return;
  (void)cudaGetLastError();
  throw cuda_error(std::string("adalora CUDA backend: ") + what + " failed: " + cublasGetStatusName(status) + " (" +
                       cublasGetStatusString(status) + ")",
                   cudaErrorUnknown);
}

/// One cuBLAS handle, created on first use and shared by the copies of a cuda_system. cuBLAS handles must not be
/// used by two host threads at once: the lock serializes the (asynchronous) calls that go through it.
class cublas_handle {
public:
  cublas_handle() = default;
  cublas_handle(const cublas_handle&) = delete;
  cublas_handle& operator=(const cublas_handle&) = delete;
  ~cublas_handle() {
    if (handle_) (void)cublasDestroy(handle_);
  }

  /// Runs f(handle) with the handle bound to `stream`, under the lock.
  template <class F>
  void with(cudaStream_t stream, F&& f) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!handle_) {
      cublasHandle_t h = nullptr;
      cublas_check(cublasCreate(&h), "cublasCreate");
      handle_ = h;
      // Full float32 GEMMs: no TF32 or other reduced-precision tensor-core paths, even with NVIDIA_TF32_OVERRIDE.
      cublas_check(cublasSetMathMode(handle_, CUBLAS_PEDANTIC_MATH), "cublasSetMathMode");
    }
    cublas_check(cublasSetStream(handle_, stream), "cublasSetStream");
    std::forward<F>(f)(handle_);
  }

private:
  std::mutex mutex_;
  cublasHandle_t handle_ = nullptr;
};

/// What the copies of a cuda_system share: the cuBLAS handle, how device memory is taken (decided at the first
/// allocation, which asks the device whether it has memory pools), the scratch cache that keeps Thrust's temporaries
/// and kth_smallest's buffers across calls, and the count of device allocations.
class cuda_resources {
public:
  cuda_resources(cudaStream_t stream, cuda_allocation allocation) : stream_(stream), allocation_(allocation) {}
  cuda_resources(const cuda_resources&) = delete;
  cuda_resources& operator=(const cuda_resources&) = delete;

  /// The memory every buffer and scratch block of the system comes from (asks the device once).
  cuda_memory memory() {
    std::call_once(resolved_, [&] {
      memory_ = {stream_, allocation_ == cuda_allocation::automatic && memory_pools_supported()};
      scratch_.emplace(memory_);
      ready_ = true;
    });
    return memory_;
  }
  block_cache<cuda_memory>& scratch() {
    (void)memory();
    return *scratch_;
  }
  /// Hands a scratch block back (the cache exists: the block came from it).
  void return_scratch(void* p) noexcept {
    if (ready_) scratch_->deallocate(p);
  }
  /// Blocks the scratch cache has taken from the device so far.
  std::size_t scratch_taken() const { return ready_ ? scratch_->resource_allocations() : 0; }

  cublas_handle blas;
  std::atomic<std::size_t> buffer_allocations{0};

private:
  cudaStream_t stream_;
  cuda_allocation allocation_;
  std::once_flag resolved_;
  cuda_memory memory_{};
  std::optional<block_cache<cuda_memory>> scratch_;
  std::atomic<bool> ready_{false};
};

/// Thrust's temporary storage from the system's scratch cache (an allocator attached to the execution policy): kept
/// across algorithms, so that a count or a sum repeated every step takes no device memory after its first run.
/// A plain pointer, so that Thrust can copy the policy in host+device code: the system that made the policy (its
/// thrust_backend holds both) owns the resources.
struct cuda_scratch_allocator {
  using value_type = char;
  cuda_resources* resources;

  char* allocate(std::ptrdiff_t bytes) const {
    return static_cast<char*>(resources->scratch().allocate(static_cast<std::size_t>(bytes)));
  }
  void deallocate(char* p, std::size_t) const noexcept { resources->return_scratch(p); }
};

inline cublasOperation_t cublas_op(transpose t) noexcept {
  return t == transpose::yes ? CUBLAS_OP_T : CUBLAS_OP_N;
}

inline int cublas_int(std::size_t v, const char* what) {
  if (v > static_cast<std::size_t>(std::numeric_limits<int>::max()))
    throw usage_error(std::string("gemm: ") + what + " = " + std::to_string(v) +
                      " exceeds cuBLAS's 32-bit int; split the product into smaller blocks");
  return static_cast<int>(v);
}

}  // namespace detail

/// Thrust's CUDA system on a caller's stream, as a ThrustSystem for thrust_backend.
///
/// Every kernel, copy, allocation and library call of the backend is queued on `stream()` (the legacy default
/// stream when none is given); work that hands a value to the host (count_if, transform_sum, kth_smallest,
/// copy_to_host) waits for the stream, copy_from_host waits too (the host memory may be reused as soon as it
/// returns), everything else only queues. Errors of the CUDA runtime, Thrust, CUB and cuBLAS become cuda_error on
/// the host; device code never throws. Copies of the system share its stream, its cuBLAS handle and its scratch.
///
/// Device memory (cuda_allocation): buffers and scratch are stream-ordered (cudaMallocAsync from the device's default
/// memory pool) where the device supports memory pools, else, or with cuda_allocation::synchronous, cudaMalloc /
/// cudaFree. Scratch (Thrust's temporary storage, kth_smallest's sort buffers) is kept in a cache across calls and
/// freed with the last copy of the system (or by release_scratch()), so that repeated work with the same sizes, such
/// as the allocator's step, takes no device memory after its first run (device_allocations() counts what it takes).
class cuda_system {
public:
  using thrust_system_concept = thrust_system_tag;
  using memory_space = cuda_device_space;
  static constexpr const char* name = "cuda";
  template <class T>
  using buffer = detail::cuda_buffer<T>;

  /// On the legacy default stream.
  cuda_system() : cuda_system(cudaStream_t{}) {}
  /// On the caller's stream, which must outlive the system, its copies and every buffer they allocate. Nothing is
  /// asked of the device before the first allocation.
  cuda_system(cudaStream_t stream, cuda_allocation allocation = cuda_allocation::automatic)
      : stream_(stream), shared_(std::make_shared<detail::cuda_resources>(stream, allocation)) {}

  cudaStream_t stream() const noexcept { return stream_; }

  /// Whether device memory is stream-ordered (cudaMallocAsync) rather than cudaMalloc'd; asks the device the first
  /// time (cuda_error when there is none).
  bool stream_ordered_memory() const { return shared_->memory().pooled; }

  /// Device allocations made so far by this system and its copies: buffers, and scratch blocks taken from the device
  /// (not those the scratch cache handed out again).
  std::size_t device_allocations() const {
    return shared_->buffer_allocations.load() + shared_->scratch_taken();
  }

  /// Gives the scratch blocks not in use back to the device (the next call that needs scratch takes memory again).
  void release_scratch() const { shared_->scratch().release(); }

  /// Thrust's CUDA policy on the stream, without the synchronization Thrust adds after each algorithm by default, and
  /// with the scratch cache for Thrust's temporary storage: valid while this system or a copy of it lives.
  auto policy() const noexcept {
    return thrust::cuda::par_nosync(detail::cuda_scratch_allocator{shared_.get()}).on(stream_);
  }

  template <class T>
  buffer<T> allocate(std::size_t n) const {
    buffer<T> b(n, shared_->memory());
    if (n) ++shared_->buffer_allocations;
    return b;
  }

  template <class T>
  void copy_to_host(const T* src, std::size_t n, T* dst) const {
    if (n == 0) return;
    detail::cuda_check(cudaMemcpyAsync(dst, src, n * sizeof(T), cudaMemcpyDeviceToHost, stream_),
                       "cudaMemcpyAsync (device to host)");
    synchronize();
  }
  template <class T>
  void copy_from_host(const T* src, std::size_t n, T* dst) const {
    if (n == 0) return;
    detail::cuda_check(cudaMemcpyAsync(dst, src, n * sizeof(T), cudaMemcpyHostToDevice, stream_),
                       "cudaMemcpyAsync (host to device)");
    synchronize();
  }
  void synchronize() const { detail::cuda_check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize"); }

  /// Runs f, turning Thrust's errors (thrust::system_error, allocation failures) into cuda_error.
  template <class F>
  decltype(auto) guarded(F&& f) const {
    try {
      return std::forward<F>(f)();
    } catch (const thrust::system_error& e) {
      (void)cudaGetLastError();
      const bool cuda_code = e.code().category() == thrust::cuda_category();
      const cudaError_t code = cuda_code ? static_cast<cudaError_t>(e.code().value()) : cudaErrorUnknown;
      throw cuda_error(std::string("adalora CUDA backend: Thrust failed: ") + e.what(), code);
    } catch (const std::bad_alloc& e) {
      (void)cudaGetLastError();
      throw cuda_error(std::string("adalora CUDA backend: out of memory: ") + e.what(), cudaErrorMemoryAllocation);
    }
  }

  /// Row-major C = alpha · op(A) · op(B) + beta · C with cublasSgemm: a row-major matrix is its transpose in
  /// column-major order, so cuBLAS computes Cᵀ = op(B)ᵀ · op(A)ᵀ with the operands swapped. m, n, k ≥ 1.
  void gemm(transpose op_a, transpose op_b, std::size_t m, std::size_t n, std::size_t k, float alpha, const float* a,
            std::size_t lda, const float* b, std::size_t ldb, float beta, float* c, std::size_t ldc) const {
    const int im = detail::cublas_int(m, "m"), in = detail::cublas_int(n, "n"), ik = detail::cublas_int(k, "k");
    const int ilda = detail::cublas_int(lda, "lda"), ildb = detail::cublas_int(ldb, "ldb");
    const int ildc = detail::cublas_int(ldc, "ldc");
    shared_->blas.with(stream_, [&](cublasHandle_t h) {
      // alpha and beta are read from the host before cublasSgemm returns (the default host pointer mode).
      detail::cublas_check(cublasSgemm(h, detail::cublas_op(op_b), detail::cublas_op(op_a), in, im, ik, &alpha, b, ildb,
                                       a, ilda, &beta, c, ildc),
                           "cublasSgemm");
    });
  }

  /// A tiled pass in block form (detail::TileLanePass): one launch, a block of plan_lanes threads per tile.
  template <detail::TileLanePass F>
  void for_each_tile_lanes(std::size_t tiles, const F& f) const {
    detail::launch_tile_lanes(f, tiles, stream_);
  }

  /// The k-th smallest of n floats (k in [1, n]) in the order every backend shares (backends/kth_order.hpp): the
  /// floats' order keys, a CUB radix sort of them (temporary storage sized first), then one key copied back. The keys
  /// and the sort's storage are scratch, kept for the next call.
  float kth_smallest(const float* v, std::size_t n, std::size_t k) const {
    using block = detail::cache_block<detail::cuda_memory>;
    auto& cache = shared_->scratch();
    std::size_t temp_bytes = kth_sort_bytes(n);
    const block keys(cache, n * sizeof(std::uint32_t)), sorted(cache, n * sizeof(std::uint32_t));
    const block temp(cache, temp_bytes);
    thrust::for_each(policy(), thrust::counting_iterator<std::size_t>(0), thrust::counting_iterator<std::size_t>(n),
                     detail::kth_order_key_fn{v, keys.data<std::uint32_t>()});
    detail::cuda_check(cub::DeviceRadixSort::SortKeys(temp.data(), temp_bytes, keys.data<const std::uint32_t>(),
                                                      sorted.data<std::uint32_t>(), n, 0, 32, stream_),
                       "cub::DeviceRadixSort::SortKeys");
    std::uint32_t key = 0;
    copy_to_host(sorted.data<const std::uint32_t>() + (k - 1), 1, &key);
    return detail::kth_order_value(key);
  }

  /// Takes the scratch that kth_smallest over n floats needs now, so that the first selection takes no device memory
  /// (the allocator reserves its selection when it prepares its plan, before the first step).
  void reserve_kth_smallest(std::size_t n) const {
    using block = detail::cache_block<detail::cuda_memory>;
    auto& cache = shared_->scratch();
    const std::size_t temp_bytes = kth_sort_bytes(n);
    const block keys(cache, n * sizeof(std::uint32_t)), sorted(cache, n * sizeof(std::uint32_t));
    const block temp(cache, temp_bytes);
  }

private:
  /// The temporary storage of a CUB radix sort of n 32-bit keys (a size query: no device work).
  std::size_t kth_sort_bytes(std::size_t n) const {
    std::size_t bytes = 0;
    detail::cuda_check(cub::DeviceRadixSort::SortKeys(nullptr, bytes, static_cast<const std::uint32_t*>(nullptr),
                                                      static_cast<std::uint32_t*>(nullptr), n, 0, 32, stream_),
                       "cub::DeviceRadixSort::SortKeys (temporary storage size)");
    return bytes;
  }

  cudaStream_t stream_ = nullptr;
  std::shared_ptr<detail::cuda_resources> shared_;
};

static_assert(ThrustSystem<cuda_system>);

/// The CUDA backend (name "cuda", memory space cuda_device_space): `cuda_backend{}` runs on the legacy default
/// stream, `cuda_backend{stream}` on the caller's.
using cuda_backend = thrust_backend<cuda_system>;

static_assert(Backend<cuda_backend>);
static_assert(std::same_as<cuda_backend::memory_space, cuda_device_space>);

}  // namespace adalora
