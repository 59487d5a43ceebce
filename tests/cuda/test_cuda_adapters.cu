// The generic adapter tests (SVD and LoRA forward, backward, dropout, merge, shrink, orthogonal regularizer, misuse,
// all held against reference/) and AdamW against PyTorch's rule, on the CUDA backend (nvcc, needs a GPU). Built with
// ADALORA_TEST_CUDA_ONLY, so that support/backends_under_test.hpp holds just adalora::cuda_backend.
#include "cuda/cuda_device_check.hpp"
#include "adapters/test_adapters.cpp"
#include "optim/test_adamw.cpp"
