// adalora-trace --backend cuda: the replays on adalora::cuda_backend (compiled by nvcc; needs a GPU to run).
#include <cuda_runtime_api.h>

#include "adalora/backends/cuda/cuda_backend.cuh"
#include "adalora/backends/cuda/cuda_error.cuh"
#include "trace_backends.hpp"

namespace adalora::tools {

validate::trace_result replay_cuda(const io::safetensors_file& file, trace_kind kind, trace_state state) {
  int devices = 0;
  if (const cudaError_t e = cudaGetDeviceCount(&devices); e != cudaSuccess || devices == 0) {
    (void)cudaGetLastError();
    throw usage_error("--backend cuda needs a CUDA device, and there is none here (" +
                      (e == cudaSuccess ? std::string("0 devices") : detail::cuda_error_text(e)) + ")");
  }
  return replay_on<cuda_backend>(file, kind, state);
}

}  // namespace adalora::tools
