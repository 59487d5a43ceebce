// The generic rank_allocator tests (held against the plain-loop reference) on the CUDA backend (nvcc, needs a GPU).
// Built with ADALORA_TEST_CUDA_ONLY, so that support/backends_under_test.hpp holds just adalora::cuda_backend.
#include "allocation/test_rank_allocator.cpp"
#include "allocation/test_allocator_errors.cpp"
