// Included by each CUDA test program: before any test runs, says which GPU it runs on, or stops at once with one clear
// "no CUDA device" line (exit status 2) instead of failing every test case.
#pragma once

// Catch2's listener interface is only declared with CATCH_CONFIG_EXTERNAL_INTERFACES, before its first inclusion.
#if defined(TWOBLUECUBES_SINGLE_INCLUDE_CATCH_HPP_INCLUDED) && !defined(CATCH_CONFIG_EXTERNAL_INTERFACES)
#error "include cuda/cuda_device_check.hpp before catch2/catch.hpp"
#endif
#define CATCH_CONFIG_EXTERNAL_INTERFACES
#include <catch2/catch.hpp>
#include <cuda_runtime_api.h>

#include <cstdio>
#include <cstdlib>

/// The listener (at namespace scope: CATCH_REGISTER_LISTENER pastes its name into an identifier).
struct adalora_cuda_device_check : Catch::TestEventListenerBase {
  using TestEventListenerBase::TestEventListenerBase;

  void testRunStarting(Catch::TestRunInfo const& info) override {
    int devices = 0;
    const cudaError_t e = cudaGetDeviceCount(&devices);
    if (e != cudaSuccess || devices == 0) {
      std::fprintf(stderr, "%s: no CUDA device (%s): the CUDA tests need an NVIDIA GPU and its driver\n",
                   info.name.c_str(), e == cudaSuccess ? "0 devices" : cudaGetErrorString(e));
      std::exit(2);
    }
    int device = 0, pools = 0, driver = 0, runtime = 0;
    cudaDeviceProp prop{};
    if (cudaGetDevice(&device) == cudaSuccess && cudaGetDeviceProperties(&prop, device) == cudaSuccess) {
      (void)cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, device);
      (void)cudaDriverGetVersion(&driver);
      (void)cudaRuntimeGetVersion(&runtime);
      std::printf("%s: device %d of %d, %s (sm_%d%d), %.1f GiB, driver CUDA %d.%d, runtime %d.%d, memory pools %s\n",
                  info.name.c_str(), device, devices, prop.name, prop.major, prop.minor,
                  static_cast<double>(prop.totalGlobalMem) / (1024.0 * 1024.0 * 1024.0), driver / 1000,
                  driver % 1000 / 10, runtime / 1000, runtime % 1000 / 10, pools ? "yes" : "no");
    }
    (void)cudaGetLastError();
  }
};
CATCH_REGISTER_LISTENER(adalora_cuda_device_check)
