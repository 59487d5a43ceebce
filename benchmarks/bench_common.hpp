// Shared pieces of the CPU benchmark programs: the backends built in and the memory-bandwidth probes.
#pragma once

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "adalora/backends/eigen/eigen_backend.hpp"
#if ADALORA_BENCH_HAS_XTENSOR
#include "adalora/backends/xtensor/xtensor_backend.hpp"
#endif
#if ADALORA_BENCH_HAS_THRUST
#include "adalora/backends/thrust/thrust_backend.hpp"
#endif

#include "bench_fill.hpp"
#include "bench_report.hpp"

namespace bench {

/// Threads an OpenMP region gets (1 without OpenMP).
inline int omp_threads() {
#if defined(_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}

/// Threads a backend runs its element-wise work on: the OpenMP threads for Thrust's OMP system, else 1.
template <class B>
int backend_threads() {
  const std::string n = B::name;
  return n == "thrust-omp" ? omp_threads() : 1;
}

/// Calls f.template operator()<Backend>() for every backend built into this program.
template <class F>
void for_each_backend(F&& f) {
  f.template operator()<adalora::eigen_backend>();
#if ADALORA_BENCH_HAS_XTENSOR
  f.template operator()<adalora::xtensor_backend>();
#endif
#if ADALORA_BENCH_HAS_THRUST
  f.template operator()<adalora::thrust_cpp_backend>();
  f.template operator()<adalora::thrust_omp_backend>();
#endif
}

// ---- memory bandwidth, measured in the same run as the kernels it is compared with ---------------------------

/// Buffers far larger than any cache (2 × 256 MiB for a copy), allocated and touched once per program.
struct bandwidth_buffers {
  static constexpr std::size_t floats = std::size_t{64} << 20;  // 256 MiB each
  std::vector<float> a, b, c, d;
  static bandwidth_buffers& get() {
    static bandwidth_buffers buf;
    return buf;
  }

private:
  bandwidth_buffers() : a(floats, 1.0f), b(floats, 2.0f), c(floats, 0.5f), d(floats, 0.25f) {}
};

/// Copy bandwidth: memcpy of 256 MiB, on `threads` threads (each copies a contiguous slice). Counts the bytes read
/// plus the bytes written (2 × 256 MiB per copy), as STREAM's "Copy" does.
inline void copy_bandwidth(benchmark::State& state, int threads) {
  auto& buf = bandwidth_buffers::get();
  const std::size_t n = bandwidth_buffers::floats;
  for (auto _ : state) {
#if defined(_OPENMP)
#pragma omp parallel for num_threads(threads) schedule(static)
#endif
    for (int t = 0; t < threads; ++t) {
      const std::size_t lo = n * static_cast<std::size_t>(t) / static_cast<std::size_t>(threads);
      const std::size_t hi = n * static_cast<std::size_t>(t + 1) / static_cast<std::size_t>(threads);
      std::memcpy(buf.b.data() + lo, buf.a.data() + lo, (hi - lo) * sizeof(float));
    }
    benchmark::DoNotOptimize(buf.b.data());
    benchmark::ClobberMemory();
  }
  state.counters["bytes"] =
      benchmark::Counter(static_cast<double>(2 * n * sizeof(float)), benchmark::Counter::kIsIterationInvariantRate,
                         benchmark::Counter::OneK::kIs1000);
  state.counters["threads"] = threads;
}

/// The importance update's access pattern with trivial arithmetic: read two streams (θ, g), read and write two
/// more in place (the two EMAs): 24 bytes per element, the least any importance update can move. Its rate is what
/// this machine can reach for that pattern.
inline void update_pattern_bandwidth(benchmark::State& state, int threads) {
  auto& buf = bandwidth_buffers::get();
  const std::size_t n = bandwidth_buffers::floats;
  const float* x = buf.a.data();
  const float* y = buf.b.data();
  float* u = buf.c.data();
  float* w = buf.d.data();
  for (auto _ : state) {
#if defined(_OPENMP)
#pragma omp parallel for num_threads(threads) schedule(static)
#endif
    for (std::size_t i = 0; i < n; ++i) {
      const float p = x[i] * y[i];
      u[i] = 0.5f * u[i] + p;
      w[i] = 0.5f * w[i] + u[i];
    }
    benchmark::ClobberMemory();
  }
  // keep the values bounded for the next iterations: u, w converge (0.5 factors)
  state.counters["bytes"] =
      benchmark::Counter(static_cast<double>(n * 6 * sizeof(float)), benchmark::Counter::kIsIterationInvariantRate,
                         benchmark::Counter::OneK::kIs1000);
  state.counters["threads"] = threads;
}

/// Registers the bandwidth probes: copy and update pattern, on 1 thread and on all OpenMP threads.
inline void register_bandwidth_benchmarks() {
  std::vector<int> counts{1};
  if (omp_threads() > 1) counts.push_back(omp_threads());
  for (int t : counts) {
    benchmark::RegisterBenchmark(("bandwidth/copy/threads:" + std::to_string(t)).c_str(),
                                 [t](benchmark::State& s) { copy_bandwidth(s, t); })
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("bandwidth/update_pattern/threads:" + std::to_string(t)).c_str(),
                                 [t](benchmark::State& s) { update_pattern_bandwidth(s, t); })
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
  }
}

}  // namespace bench
