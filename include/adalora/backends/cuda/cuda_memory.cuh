// Device memory of the CUDA backend (nvcc only): stream-ordered where the device has memory pools, else cudaMalloc.
#pragma once

#if !defined(__CUDACC__)
#error "adalora/backends/cuda/cuda_memory.cuh needs nvcc: link adalora::cuda (configure with -DADALORA_ENABLE_CUDA=ON)"
#endif

#include <cuda_runtime_api.h>

#include <cstddef>
#include <limits>
#include <string>
#include <utility>

#include "adalora/backends/cuda/cuda_error.cuh"

namespace adalora {

/// How the CUDA backend takes device memory.
enum class cuda_allocation {
  /// In the order of the backend's stream (cudaMallocAsync / cudaFreeAsync, from the device's default memory pool)
  /// where the device supports memory pools; cudaMalloc / cudaFree where it does not
  /// (cudaDevAttrMemoryPoolsSupported is 0, as on some virtualized or sandboxed GPUs).
  automatic,
  /// Always cudaMalloc / cudaFree (cudaFree waits for the device).
  synchronous,
};

namespace detail {

/// Whether the current device supports cudaMallocAsync and memory pools (cudaDevAttrMemoryPoolsSupported).
inline bool memory_pools_supported() {
  int device = 0, supported = 0;
  cuda_check(cudaGetDevice(&device), "cudaGetDevice");
  cuda_check(cudaDeviceGetAttribute(&supported, cudaDevAttrMemoryPoolsSupported, device),
             "cudaDeviceGetAttribute (cudaDevAttrMemoryPoolsSupported)");
  return supported != 0;
}

/// Raw device memory on one stream: stream-ordered (`pooled`) or with cudaMalloc / cudaFree. The ScratchResource of
/// the backend's scratch cache (backends/block_cache.hpp), and what cuda_buffer allocates with.
struct cuda_memory {
  cudaStream_t stream = nullptr;
  bool pooled = true;

  void* allocate(std::size_t bytes) const {
    void* p = nullptr;
    if (pooled)
      cuda_check(cudaMallocAsync(&p, bytes, stream), "cudaMallocAsync");
    else
      cuda_check(cudaMalloc(&p, bytes), "cudaMalloc");
    return p;
  }
  // A failed free (the context is already broken) cannot be reported from here: it is dropped, and the runtime's
  // last-error slot cleared so that the next checked call does not pick it up.
  void deallocate(void* p, std::size_t) const noexcept {
    if (!p) return;
    const cudaError_t code = pooled ? cudaFreeAsync(p, stream) : cudaFree(p);
    if (code != cudaSuccess) (void)cudaGetLastError();
  }
};

/// An owning array of n values of T in device memory, allocated, zeroed and freed with a cuda_memory: in the order of
/// its stream, which must outlive the buffer, so that it never waits for the device (where the device has memory
/// pools). Moves keep the data where it is and never throw; copies are deep (device to device, same stream).
template <class T>
class cuda_buffer {
public:
  using value_type = T;

  cuda_buffer() noexcept = default;
  /// n zeros (or n uninitialized values when `zero` is false) from `memory`.
  cuda_buffer(std::size_t n, cuda_memory memory, bool zero = true) : memory_(memory) {
    if (n == 0) return;
    if (n > std::numeric_limits<std::size_t>::max() / sizeof(T))
      throw cuda_error("adalora CUDA backend: a buffer of " + std::to_string(n) + " elements of " +
                           std::to_string(sizeof(T)) + " bytes does not fit in memory",
                       cudaErrorMemoryAllocation);
    data_ = static_cast<T*>(memory_.allocate(n * sizeof(T)));
    size_ = n;
    if (zero) {
      const cudaError_t code = cudaMemsetAsync(data_, 0, n * sizeof(T), memory_.stream);
      if (code != cudaSuccess) {
        release();
        cuda_check(code, "cudaMemsetAsync");
      }
    }
  }
  cuda_buffer(const cuda_buffer& other) : cuda_buffer(other.size_, other.memory_, false) {
    if (size_ == 0) return;
    const cudaError_t code =
        cudaMemcpyAsync(data_, other.data_, size_ * sizeof(T), cudaMemcpyDeviceToDevice, memory_.stream);
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
  cudaStream_t stream() const noexcept { return memory_.stream; }

  void swap(cuda_buffer& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(size_, other.size_);
    std::swap(memory_, other.memory_);
  }

private:
  void release() noexcept {
    memory_.deallocate(data_, size_ * sizeof(T));
    data_ = nullptr;
    size_ = 0;
  }

  T* data_ = nullptr;
  std::size_t size_ = 0;
  cuda_memory memory_{};
};

}  // namespace detail

}  // namespace adalora
