// Shared pieces of the benchmark programs: the backends built in, seeded fills, memory-bandwidth probes, a reporter.
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

/// Fills v with seeded uniform values in [lo, hi) (splitmix64; fast enough for 10⁸ values).
inline void fill_uniform(float* v, std::size_t n, float lo, float hi, std::uint64_t seed) {
  std::uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  for (std::size_t i = 0; i < n; ++i) {
    s += 0x9E3779B97F4A7C15ull;
    std::uint64_t z = s;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    const float u = static_cast<float>(z >> 40) * (1.0f / 16777216.0f);  // [0, 1)
    v[i] = lo + (hi - lo) * u;
  }
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
  state.counters["bytes"] = benchmark::Counter(static_cast<double>(2 * n * sizeof(float)),
                                               benchmark::Counter::kIsIterationInvariantRate,
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
  state.counters["bytes"] = benchmark::Counter(static_cast<double>(n * 6 * sizeof(float)),
                                               benchmark::Counter::kIsIterationInvariantRate,
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

// ---- a console reporter that also keeps every run for a summary at the end ---------------------------------------

/// One benchmark's result: seconds per iteration (real time) and its counters (rates already per second).
struct result {
  double seconds = 0.0;
  std::map<std::string, double> counters;
};

/// Prints what the ConsoleReporter prints, keeps the results by name (the median when repetitions were asked for),
/// and calls `summary` with them once every benchmark has run.
class summary_reporter : public benchmark::ConsoleReporter {
public:
  using summary_fn = std::function<void(const std::map<std::string, result>&)>;
  explicit summary_reporter(summary_fn summary)
      : benchmark::ConsoleReporter(benchmark::ConsoleReporter::OO_Tabular), summary_(std::move(summary)) {}

  void ReportRuns(const std::vector<Run>& runs) override {
    benchmark::ConsoleReporter::ReportRuns(runs);
    for (const auto& r : runs) {
      if (r.error_occurred) continue;
      const bool median = r.run_type == Run::RT_Aggregate && r.aggregate_name == "median";
      if (r.run_type == Run::RT_Aggregate && !median) continue;
      const std::string name = r.run_name.function_name;
      if (!median && medians_.count(name)) continue;
      result res;
      res.seconds = r.GetAdjustedRealTime() / benchmark::GetTimeUnitMultiplier(r.time_unit);
      for (const auto& [k, c] : r.counters) res.counters[k] = c.value;
      results_[name] = res;
      if (median) medians_.insert(name);
    }
  }

  void Finalize() override {
    benchmark::ConsoleReporter::Finalize();
    if (summary_ && !results_.empty()) summary_(results_);
  }

private:
  summary_fn summary_;
  std::map<std::string, result> results_;
  std::set<std::string> medians_;
};

/// Runs the registered benchmarks with the summary reporter; the usual Google Benchmark flags apply.
inline int run_main(int argc, char** argv, summary_reporter::summary_fn summary) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  summary_reporter reporter(std::move(summary));
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return 0;
}

}  // namespace bench
