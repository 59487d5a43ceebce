// bench_adapter_cuda: svd_adapter and lora_adapter forward + backward on the CUDA backend (cuBLAS GEMMs), on the
// layer shapes of the DeBERTa-v3-base and LLaMA-7B sets.
//
// Benchmarks (names are what --benchmark_filter matches):
//   adapter/<svd|lora>/<shape>/cuda    forward + backward of one adapter (r 12, 512 tokens), no dropout, each
//                                      iteration synchronized (adapter_pass.hpp)
// Counter: flops = the adapter GEMMs' flop/s (6 · tokens · r · (in + out) per forward + backward).
#include "adalora/backends/cuda/cuda_backend.cuh"
#include "adapter_pass.hpp"
#include "bench_cuda.hpp"
#include "bench_report.hpp"

int main(int argc, char** argv) {
  if (!bench::prepare_cuda_device("bench_adapter_cuda")) return 1;
  bench::register_adapter_passes<adalora::cuda_backend>(0);
  return bench::run_main(argc, argv, bench::print_adapter_summary);
}
