// What the GPU benchmarks do before they register anything: find the device (or say clearly that there is none) and
// keep the memory its default pool frees mapped, so that no benchmark books the re-mapping of freed memory.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <cstdio>

namespace bench {

/// Prints the device the benchmarks run on and sets its default memory pool's release threshold to "never"
/// (cudaMemPoolAttrReleaseThreshold = UINT64_MAX; the default, 0, hands freed memory back to the driver at every
/// synchronization, and the next cudaMallocAsync maps it again). False, with one "no CUDA device" line, when there is
/// no device.
inline bool prepare_cuda_device(const char* program) {
  int devices = 0;
  const cudaError_t e = cudaGetDeviceCount(&devices);
  if (e != cudaSuccess || devices == 0) {
    std::fprintf(stderr, "%s: no CUDA device (%s)\n", program, e == cudaSuccess ? "0 devices" : cudaGetErrorString(e));
    return false;
  }
  int device = 0, pools = 0;
  cudaDeviceProp prop{};
  if (cudaGetDevice(&device) != cudaSuccess || cudaGetDeviceProperties(&prop, device) != cudaSuccess) {
    std::fprintf(stderr, "%s: cannot query the CUDA device (%s)\n", program, cudaGetErrorString(cudaGetLastError()));
    return false;
  }
  (void)cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, device);
  if (pools) {
    cudaMemPool_t pool = nullptr;
    std::uint64_t never = UINT64_MAX;
    if (cudaDeviceGetDefaultMemPool(&pool, device) != cudaSuccess ||
        cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &never) != cudaSuccess)
      std::fprintf(stderr, "%s: could not set the memory pool's release threshold (%s); continuing\n", program,
                   cudaGetErrorString(cudaGetLastError()));
  }
  std::printf("%s: %s (sm_%d%d, %d multiprocessors, %.1f GiB), memory pools %s\n", program, prop.name, prop.major,
              prop.minor, prop.multiProcessorCount, static_cast<double>(prop.totalGlobalMem) / (1 << 30),
              pools ? "yes (release threshold: never)" : "no (cudaMalloc)");
  return true;
}

}  // namespace bench
