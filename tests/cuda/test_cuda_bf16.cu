// bfloat16 parameters with float32 importance state on the CUDA backend, exactly as the float32 path (nvcc, needs a
// GPU). Built with ADALORA_TEST_CUDA_ONLY, so that support/backends_under_test.hpp holds just adalora::cuda_backend.
#include "cuda/cuda_device_check.hpp"
#include "allocation/test_bf16_allocation.cpp"
