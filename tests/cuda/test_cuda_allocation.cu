// The generic rank_allocator tests (held against the plain-loop reference, with the library's and a user-defined
// host+device metric), its error handling (bad input throws and changes nothing), the fused pass's block launch
// against its tile form and the host, bit for bit, and a step's launches and device allocations (none after the
// first step), on the CUDA backend (nvcc, needs a GPU). Built with
// ADALORA_TEST_CUDA_ONLY, so that support/backends_under_test.hpp holds just adalora::cuda_backend.
#include "cuda/cuda_device_check.hpp"
#include "allocation/test_rank_allocator.cpp"
#include "allocation/test_allocator_errors.cpp"
#include "allocation/test_tile_lanes.cpp"
#include "allocation/test_step_calls.cpp"
