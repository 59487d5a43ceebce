// CUDA errors as exceptions: adalora::cuda_error and the checks that raise it at the host boundary (nvcc only).
#pragma once

#if !defined(__CUDACC__)
#error "adalora/backends/cuda/cuda_error.cuh needs nvcc: link adalora::cuda (configure with -DADALORA_ENABLE_CUDA=ON)"
#endif

#include <cuda_runtime_api.h>

#include <string>

#include "adalora/core/error.hpp"

namespace adalora {

/// A CUDA runtime, cuBLAS, CUB or Thrust call failed on the host side of the CUDA backend. `code()` is the CUDA
/// runtime's error code (cudaErrorUnknown where the failing library has codes of its own; its name is in `what()`).
class cuda_error : public error {
public:
  cuda_error(const std::string& what, cudaError_t code) : error(what), code_(code) {}
  cudaError_t code() const noexcept { return code_; }

private:
  cudaError_t code_;
};

namespace detail {

/// "cudaErrorMemoryAllocation (out of memory)".
inline std::string cuda_error_text(cudaError_t code) {
  const char* name = cudaGetErrorName(code);
  const char* text = cudaGetErrorString(code);
  return std::string(name ? name : "unknown CUDA error") + " (" + (text ? text : "no description") + ")";
}

/// Throws cuda_error when `code` is not cudaSuccess; `what` names the call that failed. The runtime's last-error
/// slot is cleared first, so that a later, unrelated check does not report this error a second time.
inline void cuda_check(cudaError_t code, const char* what) {
  if (code == cudaSuccess) return;
  (void)cudaGetLastError();
  throw cuda_error(std::string("adalora CUDA backend: ") + what + " failed: " + cuda_error_text(code), code);
}

}  // namespace detail

}  // namespace adalora
