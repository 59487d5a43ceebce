// The CUDA backend (nvcc only): thrust_backend on Thrust's CUDA system and a caller's stream, cuBLAS, CUB.
#pragma once

#if !defined(__CUDACC__)
#error "adalora/backends/cuda/cuda_backend.cuh needs nvcc: link adalora::cuda (configure with -DADALORA_ENABLE_CUDA=ON)"
#endif

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <utility>

#include <thrust/system/cuda/error.h>
#include <thrust/system/cuda/execution_policy.h>
#include <thrust/system_error.h>

#include <cub/device/device_radix_sort.cuh>

#include "adalora/backends/backend.hpp"
#include "adalora/backends/cuda/cuda_error.cuh"
#include "adalora/backends/cuda/tile_lanes_kernel.cuh"
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

/// An owning array of n values of T in device memory, allocated, zeroed and freed in the order of one stream
/// (cudaMallocAsync / cudaMemsetAsync / cudaFreeAsync), so it never waits for the device. The stream must outlive
/// the buffer. Moves keep the data where it is and never throw; copies are deep (device to device, same stream).
template <class T>
class cuda_buffer {
public:
  using value_type = T;

  cuda_buffer() noexcept = default;
  /// n zeros (or n uninitialized values when `zero` is false) on `stream`.
  cuda_buffer(std::size_t n, cudaStream_t stream, bool zero = true) : stream_(stream) {
    if (n == 0) return;
    if (n > std::numeric_limits<std::size_t>::max() / sizeof(T))
      throw cuda_error("adalora CUDA backend: a buffer of " + std::to_string(n) + " elements of " +
                           std::to_string(sizeof(T)) + " bytes does not fit in memory",
                       cudaErrorMemoryAllocation);
    void* p = nullptr;
    cuda_check(cudaMallocAsync(&p, n * sizeof(T), stream), "cudaMallocAsync");
    data_ = static_cast<T*>(p);
    size_ = n;
    if (zero) {
      const cudaError_t code = cudaMemsetAsync(data_, 0, n * sizeof(T), stream);
      if (code != cudaSuccess) {
        release();
        cuda_check(code, "cudaMemsetAsync");
      }
    }
  }
  cuda_buffer(const cuda_buffer& other) : cuda_buffer(other.size_, other.stream_, false) {
    if (size_ == 0) return;
    const cudaError_t code = cudaMemcpyAsync(data_, other.data_, size_ * sizeof(T), cudaMemcpyDeviceToDevice, stream_);
    if (code != cudaSuccess) {
      release();
      cuda_check(code, "cudaMemcpyAsync (device to device)");
    }
  }
  cuda_buffer(cuda_buffer&& other) noexcept { swap(other); }
  cuda_buffer& operator=(const cuda_buffer& other) {
    if (this != &other) {
      cuda_buffer copy(other);
      swap(copy);
    }
    return *this;
  }
  cuda_buffer& operator=(cuda_buffer&& other) noexcept {
    cuda_buffer old(std::move(*this));
    swap(other);
    return *this;
  }
  ~cuda_buffer() { release(); }

  T* data() noexcept { return data_; }
  const T* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }
  cudaStream_t stream() const noexcept { return stream_; }

  void swap(cuda_buffer& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(size_, other.size_);
    std::swap(stream_, other.stream_);
  }

private:
  // Destructors cannot report errors: a failed free (the context is already broken) is dropped, and the runtime's
  // last-error slot cleared so that the next checked call does not pick it up.
  void release() noexcept {
    if (data_ && cudaFreeAsync(data_, stream_) != cudaSuccess) (void)cudaGetLastError();
    data_ = nullptr;
    size_ = 0;
  }

  T* data_ = nullptr;
  std::size_t size_ = 0;
  cudaStream_t stream_ = nullptr;
};

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
/// the host; device code never throws. Copies of the system share its stream and its cuBLAS handle.
class cuda_system {
public:
  using thrust_system_concept = thrust_system_tag;
  using memory_space = cuda_device_space;
  static constexpr const char* name = "cuda";
  template <class T>
  using buffer = detail::cuda_buffer<T>;

  /// On the legacy default stream.
  cuda_system() : cuda_system(cudaStream_t{}) {}
  /// On the caller's stream, which must outlive the system, its copies and every buffer they allocate.
  cuda_system(cudaStream_t stream) : stream_(stream), blas_(std::make_shared<detail::cublas_handle>()) {}

  cudaStream_t stream() const noexcept { return stream_; }

  /// Thrust's CUDA policy on the stream, without the synchronization Thrust adds after each algorithm by default.
  auto policy() const noexcept { return thrust::cuda::par_nosync.on(stream_); }

  template <class T>
  buffer<T> allocate(std::size_t n) const {
    return buffer<T>(n, stream_);
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
    blas_->with(stream_, [&](cublasHandle_t h) {
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

  /// The k-th smallest of n floats (k in [1, n]): a CUB radix sort of a copy (temporary storage sized first, then
  /// allocated on the stream), then one value copied back. -0 and +0 sort as equal, which the mask cannot tell apart.
  float kth_smallest(const float* v, std::size_t n, std::size_t k) const {
    std::size_t temp_bytes = 0;
    detail::cuda_check(cub::DeviceRadixSort::SortKeys(nullptr, temp_bytes, v, static_cast<float*>(nullptr), n, 0,
                                                      static_cast<int>(sizeof(float) * 8), stream_),
                       "cub::DeviceRadixSort::SortKeys (temporary storage size)");
    buffer<float> sorted(n, stream_, false);
    buffer<std::uint8_t> temp(temp_bytes, stream_, false);
    detail::cuda_check(cub::DeviceRadixSort::SortKeys(temp.data(), temp_bytes, v, sorted.data(), n, 0,
                                                      static_cast<int>(sizeof(float) * 8), stream_),
                       "cub::DeviceRadixSort::SortKeys");
    float result = 0.0f;
    copy_to_host(sorted.data() + (k - 1), 1, &result);
    return result;
  }

private:
  cudaStream_t stream_ = nullptr;
  std::shared_ptr<detail::cublas_handle> blas_;
};

static_assert(ThrustSystem<cuda_system>);

/// The CUDA backend (name "cuda", memory space cuda_device_space): `cuda_backend{}` runs on the legacy default
/// stream, `cuda_backend{stream}` on the caller's.
using cuda_backend = thrust_backend<cuda_system>;

static_assert(Backend<cuda_backend>);
static_assert(std::same_as<cuda_backend::memory_space, cuda_device_space>);

}  // namespace adalora
