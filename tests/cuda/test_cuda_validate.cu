// The validation API with the CUDA backend against the Eigen reference (allocator steps and adapter passes), and the
// allocator checkpoint's bit-identical resume from device memory (nvcc, needs a GPU). Built with
// ADALORA_TEST_CUDA_ONLY, so that support/backends_under_test.hpp holds just adalora::cuda_backend.
#include "cuda/cuda_device_check.hpp"
#include "validate/test_backend_comparison.cpp"
#include "allocation/test_checkpoint.cpp"
