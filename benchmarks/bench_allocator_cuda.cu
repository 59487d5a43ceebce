// bench_allocator_cuda: rank_allocator::step on the CUDA backend (DeBERTa / LLaMA-7B sets) next to the GPU's copy
// bandwidth measured in the same run.
//
// Benchmarks (names are what --benchmark_filter matches):
//   bandwidth/copy/cuda             cudaMemcpyAsync device to device of 1 GiB (bytes = read + written)
//   step/update/<set>/cuda/<state>       allocator.step(t) in the warm-up phase (update pass + its checks)
//   step/mask/<set>/cuda/<state>         allocator.step(t) on a mask step (+ triplet scores, CUB selection, masks)
//   step/update/<set>/cuda-bf16/<state>  the same with bfloat16 parameters and gradients
// <state>: the state policy, in_place (the default: 8 B of importance state per parameter), double_buffered (16 B)
// or in_place_bf16 (4 B).
// Counters: bytes = the bytes per second the step must move (θ and g read, both EMA planes read and written);
// launches = backend calls per step, counted by adalora::counting_backend (each is one kernel, library call or copy:
// the fused pass's block launch included); allocs = device allocations per step (buffers and scratch; 0 after the
// first step). Timing is wall time per step, and every step ends synchronized (its count of non-finite inputs is read
// back). The device's default memory pool keeps what it frees (bench_cuda.hpp). state_B = bytes of importance state
// per adapter parameter, state_MB = what the allocator holds (rank_allocator::state_bytes()).
#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "adalora/allocation/rank_allocator.hpp"
#include "adalora/backends/counting_backend.hpp"
#include "adalora/backends/cuda/cuda_backend.cuh"
#include "adalora/core/bfloat16.hpp"
#include "adapter_sets.hpp"
#include "bench_cuda.hpp"
#include "bench_fill.hpp"
#include "bench_report.hpp"

// A named namespace: nvcc warns (#177) about unreferenced members of templates in an unnamed one.
namespace bench_cuda {

using bench::bench_config;
using bench::init_r;

/// cudaMalloc'd memory, freed at the end.
template <class T>
struct device_array {
  T* data = nullptr;
  explicit device_array(std::size_t n) { adalora::detail::cuda_check(cudaMalloc(&data, n * sizeof(T)), "cudaMalloc"); }
  device_array(const device_array&) = delete;
  device_array& operator=(const device_array&) = delete;
  ~device_array() { cudaFree(data); }
};

/// The CUDA backend, counting its calls (the kernel launches and copies of a step).
using counting_cuda_backend = adalora::counting_backend<adalora::cuda_backend>;

/// One adapter set in device memory, in the parameter type T (float or bfloat16).
template <class T>
struct device_set {
  std::vector<bench::adapter_shape> shapes;
  std::vector<std::size_t> offset;
  std::size_t elements = 0;
  std::unique_ptr<device_array<T>> params, grads;

  explicit device_set(std::vector<bench::adapter_shape> s) : shapes(std::move(s)) {
    for (const auto& a : shapes) {
      offset.push_back(elements);
      elements += init_r * (a.in + 1 + a.out);
    }
    std::vector<float> p(elements), g(elements);
    bench::fill_uniform(p.data(), elements, -0.035f, 0.035f, 1);
    bench::fill_uniform(g.data(), elements, -1e-3f, 1e-3f, 99);
    params = std::make_unique<device_array<T>>(elements);
    grads = std::make_unique<device_array<T>>(elements);
    upload(p, params->data);
    upload(g, grads->data);
  }
  static void upload(const std::vector<float>& h, T* d) {
    std::vector<T> t(h.begin(), h.end());
    adalora::detail::cuda_check(cudaMemcpy(d, t.data(), t.size() * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy");
  }

  adalora::svd_adapter_views<T, adalora::cuda_device_space> views(std::size_t k) const {
    const auto& a = shapes[k];
    T* p = params->data + offset[k];
    const T* g = grads->data + offset[k];
    using adalora::make_matrix_view;
    using adalora::make_vector_view;
    return {make_matrix_view<adalora::cuda_device_space>(p, init_r, a.in),
            make_vector_view<adalora::cuda_device_space>(p + init_r * a.in, init_r),
            make_matrix_view<adalora::cuda_device_space>(p + init_r * (a.in + 1), a.out, init_r),
            make_matrix_view<adalora::cuda_device_space>(g, init_r, a.in),
            make_vector_view<adalora::cuda_device_space>(g + init_r * a.in, init_r),
            make_matrix_view<adalora::cuda_device_space>(g + init_r * (a.in + 1), a.out, init_r)};
  }
};

std::vector<bench::adapter_shape> shapes_of(const std::string& set) {
  return set == "llama" ? bench::llama_shapes() : bench::deberta_shapes();
}

template <class T, adalora::StatePolicy P>
void bm_step(benchmark::State& st, std::string set, bool mask) {
  device_set<T> s(shapes_of(set));
  std::int64_t t = 0;
  counting_cuda_backend backend;
  using allocator =
      adalora::rank_allocator<counting_cuda_backend, adalora::sensitivity_uncertainty, adalora::cubic_schedule, T,
                              adalora::self_communicator, P>;
  allocator alloc(bench_config(mask, t), backend);
  for (std::size_t k = 0; k < s.shapes.size(); ++k) alloc.add_adapter(s.shapes[k].name, s.views(k));
  alloc.step(t++);  // allocates the plan and the importance state; not timed
  const std::size_t before = alloc.backend().counts().calls;
  const std::size_t allocs_before = alloc.backend().system().device_allocations();
  std::size_t steps = 0;
  for (auto _ : st) {
    const auto rep = alloc.step(t++);
    benchmark::DoNotOptimize(rep);
    if (mask && !rep.masked) st.SkipWithError("expected a mask step");
    ++steps;
  }
  alloc.backend().synchronize();
  using benchmark::Counter;
  // θ and g read, both float32 EMA planes read and written (bench_allocator's required_bytes for float: 24 B)
  const double bytes = (2.0 * sizeof(T) + 16.0) * static_cast<double>(s.elements);
  st.counters["bytes"] = Counter(bytes, Counter::kIsIterationInvariantRate, Counter::OneK::kIs1000);
  const auto per_step = [&](std::size_t n) { return steps ? static_cast<double>(n) / static_cast<double>(steps) : 0.0; };
  st.counters["launches"] = per_step(alloc.backend().counts().calls - before);
  st.counters["allocs"] = per_step(alloc.backend().system().device_allocations() - allocs_before);
  st.counters["adapters"] = static_cast<double>(s.shapes.size());
  st.counters["state_B"] = static_cast<double>(allocator::state_bytes_per_parameter);
  st.counters["state_MB"] = static_cast<double>(alloc.state_bytes()) / 1e6;
}

template <class T, adalora::StatePolicy P>
void register_step(const std::string& set, const char* params, bool mask) {
  benchmark::RegisterBenchmark(
      ("step/" + std::string(mask ? "mask/" : "update/") + set + "/" + params + "/" + P::name).c_str(),
      [set, mask](benchmark::State& st) { bm_step<T, P>(st, set, mask); })
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
}

void bm_copy(benchmark::State& st) {
  const std::size_t bytes = std::size_t{1} << 30;
  device_array<std::uint8_t> a(bytes), b(bytes);
  adalora::detail::cuda_check(cudaMemset(a.data, 1, bytes), "cudaMemset");
  for (auto _ : st) {
    adalora::detail::cuda_check(cudaMemcpyAsync(b.data, a.data, bytes, cudaMemcpyDeviceToDevice), "cudaMemcpyAsync");
    adalora::detail::cuda_check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  }
  st.counters["bytes"] =
      benchmark::Counter(2.0 * static_cast<double>(bytes), benchmark::Counter::kIsIterationInvariantRate,
                         benchmark::Counter::OneK::kIs1000);
}

void summary(const std::map<std::string, bench::result>& r) {
  const auto copy = r.find("bandwidth/copy/cuda");
  const double copy_bytes = copy == r.end() ? -1.0 : copy->second.counters.at("bytes");
  std::printf("\nSummary: bytes/s the step must move, as a share of this run's device-to-device copy bandwidth\n");
  std::printf("%-40s %10s %9s %8s %9s %7s %9s %8s %9s\n", "benchmark", "ms/step", "GB/s", "% copy", "launches",
              "allocs", "adapters", "B/param", "state MB");
  for (const auto& [name, res] : r) {
    if (name.rfind("bandwidth/", 0) == 0) continue;
    const double bytes = res.counters.count("bytes") ? res.counters.at("bytes") : 0.0;
    char share[32] = "-";
    if (copy_bytes > 0) std::snprintf(share, sizeof share, "%.0f%%", 100.0 * bytes / copy_bytes);
    const auto counter = [&](const char* c) { return res.counters.count(c) ? res.counters.at(c) : 0.0; };
    std::printf("%-40s %10.3f %9.1f %8s %9.0f %7.0f %9.0f %8.0f %9.1f\n", name.c_str(), res.seconds * 1e3, bytes / 1e9,
                share, counter("launches"), counter("allocs"), counter("adapters"), counter("state_B"),
                counter("state_MB"));
  }
  if (copy_bytes > 0)
    std::printf("%-40s %10.3f %9.1f GB/s\n", "bandwidth/copy/cuda", copy->second.seconds * 1e3, copy_bytes / 1e9);
}

}  // namespace bench_cuda

int main(int argc, char** argv) {
  using namespace bench_cuda;
  if (!bench::prepare_cuda_device("bench_allocator_cuda")) return 1;
  benchmark::RegisterBenchmark("bandwidth/copy/cuda", bm_copy)->UseRealTime()->Unit(benchmark::kMillisecond);
  for (const std::string set : {"deberta", "llama"}) {
    for (bool mask : {false, true}) {
      register_step<float, adalora::in_place_state>(set, "cuda", mask);
      register_step<float, adalora::double_buffered_state>(set, "cuda", mask);
      register_step<float, adalora::in_place_bf16_state>(set, "cuda", mask);
    }
    register_step<adalora::bfloat16, adalora::in_place_state>(set, "cuda-bf16", false);
    register_step<adalora::bfloat16, adalora::double_buffered_state>(set, "cuda-bf16", false);
    register_step<adalora::bfloat16, adalora::in_place_bf16_state>(set, "cuda-bf16", false);
  }
  return bench::run_main(argc, argv, summary);
}
