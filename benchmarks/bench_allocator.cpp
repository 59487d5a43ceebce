// bench_allocator: rank_allocator::step per backend on DeBERTa-v3-base- and LLaMA-7B-shaped adapter sets, in bytes/s
// next to the machine's copy bandwidth measured in the same run.
//
// Benchmarks (names are what --benchmark_filter matches):
//   bandwidth/copy/threads:N            memcpy of 256 MiB (bytes = read + written)
//   bandwidth/update_pattern/threads:N  read 2 streams, read+write 2 streams: the importance update's pattern
//   step/update/<set>/<backend>/<state>  allocator.step(t) in the warm-up phase: the fused update pass + its check
//   step/mask/<set>/<backend>/<state>    allocator.step(t) on a mask step: + score sums, triplets, threshold, mask
//                                       <state>: the state policy, in_place (the default), double_buffered or
//                                       in_place_bf16
//   fused/update|mask/<set>/threads:N   a hand-written, in-place single pass (update + finiteness count [+ triplet
//                                       sums]) per adapter, to show what the memory system allows; not the library
// <set> is deberta (72 adapters, 2.0 M elements per plane) or llama (224 adapters, 30 M elements per plane,
// ~1.2 GB in all). Quick run: --benchmark_filter=deberta. The LLaMA set is built only when one of its benchmarks runs.
//
// Counters: bytes = bytes per second the step must move at least (θ and g read, both EMA planes read and written,
// 24 B per element; + the b0 triplet scores and λ on mask steps); moved = bytes per second the implementation's
// passes move as written (see moved_bytes()); threads = threads the work ran on; state_B = bytes of importance state
// per adapter parameter.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "adalora/adalora.hpp"
#include "adalora/allocation/allocator_kernels.hpp"
#include "adapter_sets.hpp"
#include "bench_common.hpp"

namespace {

using bench::adapter_shape;
using bench::bench_config;
using bench::deberta_shapes;
using bench::init_r;
using bench::llama_shapes;

/// The trainer's tensors of one adapter set: every adapter's A (r × in), E (r), B (out × r) back to back in one
/// host array, and the gradients likewise. Built once per program run, shared by every backend (all host memory).
struct adapter_set {
  std::string name;
  std::vector<adapter_shape> shapes;
  std::vector<std::size_t> offset;  // of adapter k's A in params/grads
  std::vector<float> params, grads;
  std::size_t elements = 0;

  adapter_set(std::string n, std::vector<adapter_shape> s) : name(std::move(n)), shapes(std::move(s)) {
    for (const auto& a : shapes) {
      offset.push_back(elements);
      elements += init_r * (a.in + 1 + a.out);
    }
    params.resize(elements);
    grads.resize(elements);
    for (std::size_t k = 0; k < shapes.size(); ++k) {
      const auto& a = shapes[k];
      float* p = params.data() + offset[k];
      bench::fill_uniform(p, init_r * a.in, -0.035f, 0.035f, 3 * k + 1);       // Q ~ PEFT's N(0, 0.02²)
      bench::fill_uniform(p + init_r * a.in, init_r, -0.1f, 0.1f, 3 * k + 2);  // λ, already trained
      bench::fill_uniform(p + init_r * (a.in + 1), a.out * init_r, -0.035f, 0.035f, 3 * k + 3);  // P
    }
    bench::fill_uniform(grads.data(), elements, -1e-3f, 1e-3f, 99);
  }

  std::size_t adapters() const { return shapes.size(); }
  std::size_t b0() const { return init_r * shapes.size(); }

  adalora::svd_adapter_views<float> views(std::size_t k) {
    const auto& a = shapes[k];
    float* p = params.data() + offset[k];
    const float* g = grads.data() + offset[k];
    return {adalora::make_matrix_view(p, init_r, a.in),
            adalora::make_vector_view(p + init_r * a.in, init_r),
            adalora::make_matrix_view(p + init_r * (a.in + 1), a.out, init_r),
            adalora::make_matrix_view(g, init_r, a.in),
            adalora::make_vector_view(g + init_r * a.in, init_r),
            adalora::make_matrix_view(g + init_r * (a.in + 1), a.out, init_r)};
  }

  static adapter_set& get(const std::string& which) {
    // at most one set alive: the LLaMA set is large, and a filtered run never builds the other
    static std::unique_ptr<adapter_set> current;
    if (!current || current->name != which)
      current.reset(),
          current = std::make_unique<adapter_set>(which, which == "llama" ? llama_shapes() : deberta_shapes());
    return *current;
  }
};

/// The least a step must move: θ and g read, the two EMA planes read and written (24 B per element); a mask step
/// also writes the b0 triplet scores and reads/writes λ.
double required_bytes(const adapter_set& s, bool mask) {
  double b = 24.0 * static_cast<double>(s.elements);
  if (mask) b += 12.0 * static_cast<double>(s.b0());
  return b;
}

/// What rank_allocator::step moves as written under state policy P (per element of the arena, ignoring the b0-sized
/// work). Double-buffered: one pass reads θ, g and both EMA planes from one arena and writes both planes to the other
/// (24 B; on a CPU, writing the other arena also reads it first, write-allocate: 8 B more that this does not count).
/// In place: a read-only check of θ and g (8 B), then the pass that reads θ, g and the EMA planes and writes the
/// planes back (8 + 2 × 2 × sizeof(value_type): 24 B for float32, 16 B for bfloat16). The finiteness count and, on
/// mask steps, the score sums ride along in registers and cache-resident partials.
template <adalora::StatePolicy P>
double moved_bytes(const adapter_set& s, bool /*mask*/) {
  const double state = 2.0 * 2.0 * sizeof(typename P::value_type);  // two planes, read and written
  const double check = P::buffers == 1 ? 8.0 : 0.0;
  return (check + 8.0 + state) * static_cast<double>(s.elements);
}

void set_byte_counters(benchmark::State& st, double required, double moved, int threads) {
  using benchmark::Counter;
  st.counters["bytes"] = Counter(required, Counter::kIsIterationInvariantRate, Counter::OneK::kIs1000);
  if (moved > 0) st.counters["moved"] = Counter(moved, Counter::kIsIterationInvariantRate, Counter::OneK::kIs1000);
  st.counters["threads"] = threads;
}

template <class B, adalora::StatePolicy P>
void bm_step(benchmark::State& st, std::string set_name, bool mask) {
  auto& s = adapter_set::get(set_name);
  std::int64_t t = 0;
  const auto cfg = bench_config(mask, t);
  using allocator = adalora::rank_allocator<B, adalora::sensitivity_uncertainty, adalora::cubic_schedule, float,
                                            adalora::self_communicator, P>;
  allocator alloc(cfg);
  for (std::size_t k = 0; k < s.adapters(); ++k) alloc.add_adapter(s.shapes[k].name, s.views(k));
  alloc.step(t++);  // the first step allocates the importance state; not timed
  for (auto _ : st) {
    const auto rep = alloc.step(t++);
    benchmark::DoNotOptimize(rep);
    if (mask && !rep.masked) st.SkipWithError("expected a mask step");
  }
  set_byte_counters(st, required_bytes(s, mask), moved_bytes<P>(s, mask), bench::backend_threads<B>());
  st.counters["state_B"] = static_cast<double>(allocator::state_bytes_per_parameter);
}

// ---- a fused single pass, to show what the memory system allows ----------------------------------------------

/// The importance update of n contiguous elements (same float operations and order as sensitivity_uncertainty),
/// writing each element's score Ī·Ū to `score` (a small, cache-resident buffer) and counting non-finite θ or g.
inline std::size_t fused_chunk(const float* __restrict theta, const float* __restrict grad, float* __restrict ema,
                               float* __restrict unc, float* __restrict score, std::size_t n) {
  const float b1 = 0.85f, omb1 = static_cast<float>(1.0 - 0.85), b2 = 0.85f, omb2 = static_cast<float>(1.0 - 0.85);
  std::uint32_t bad = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const float th = theta[i], g = grad[i];
    std::uint32_t tb, gb;
    std::memcpy(&tb, &th, 4);
    std::memcpy(&gb, &g, 4);
    bad += static_cast<std::uint32_t>((tb & 0x7f800000u) == 0x7f800000u) |
           static_cast<std::uint32_t>((gb & 0x7f800000u) == 0x7f800000u);
    const float ipt = std::fabs(th * g);
    const float sm = b1 * ema[i] + omb1 * ipt;
    const float un = b2 * unc[i] + omb2 * std::fabs(ipt - sm);
    ema[i] = sm;
    unc[i] = un;
    score[i] = sm * un;
  }
  return bad;
}

/// One adapter's importance update in one pass over its contiguous A (r × in), E (r), B (out × r), in chunks that
/// stay in L1; on mask steps the chunk's scores are then summed per row of A and per column of B in double (A's
/// rows with 4 partial sums: a different order of the double additions than a single running sum) and λ's scores
/// kept, which is all the triplet scores need: no element-score array is written. Returns the non-finite count.
std::size_t fused_adapter(const float* theta, const float* grad, float* ema, float* unc, std::size_t in,
                          std::size_t out, bool mask, double* row_sum, double* lambda_score, double* col_sum) {
  constexpr std::size_t chunk = 1536;  // a multiple of r = 12
  alignas(64) float sc[chunk];
  std::size_t bad = 0, i = 0;
  for (std::size_t row = 0; row < init_r; ++row) {  // A: row means
    double acc[4] = {0, 0, 0, 0};
    for (std::size_t j = 0; j < in; j += chunk) {
      const std::size_t n = std::min(chunk, in - j);
      bad += fused_chunk(theta + i, grad + i, ema + i, unc + i, sc, n);
      i += n;
      if (mask) {
        std::size_t q = 0;
        for (; q + 4 <= n; q += 4)
          for (std::size_t l = 0; l < 4; ++l) acc[l] += static_cast<double>(sc[q + l]);
        for (; q < n; ++q) acc[0] += static_cast<double>(sc[q]);
      }
    }
    if (mask) row_sum[row] = (acc[0] + acc[1]) + (acc[2] + acc[3]);
  }
  bad += fused_chunk(theta + i, grad + i, ema + i, unc + i, sc, init_r);  // E
  i += init_r;
  if (mask)
    for (std::size_t c = 0; c < init_r; ++c) lambda_score[c] = sc[c];
  double acc[init_r] = {};
  for (std::size_t done = 0; done < out * init_r; done += chunk) {  // B: column means
    const std::size_t n = std::min(chunk, out * init_r - done);
    bad += fused_chunk(theta + i, grad + i, ema + i, unc + i, sc, n);
    i += n;
    if (mask)
      for (std::size_t q = 0; q < n; q += init_r)
        for (std::size_t c = 0; c < init_r; ++c) acc[c] += static_cast<double>(sc[q + c]);
  }
  if (mask)
    for (std::size_t c = 0; c < init_r; ++c) col_sum[c] = acc[c];
  return bad;
}

void bm_fused(benchmark::State& st, std::string set_name, bool mask, int threads) {
  auto& s = adapter_set::get(set_name);
  std::vector<float> ema(s.elements), unc(s.elements);
  std::vector<double> row_sum(s.b0()), lambda_score(s.b0()), col_sum(s.b0());
  std::vector<float> scores(s.b0());
  const auto n_adapters = static_cast<std::ptrdiff_t>(s.adapters());
  (void)threads;
  for (auto _ : st) {
    std::size_t bad = 0;
#if defined(_OPENMP)
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1) reduction(+ : bad)
#endif
    for (std::ptrdiff_t k = 0; k < n_adapters; ++k) {
      const auto& a = s.shapes[static_cast<std::size_t>(k)];
      const std::size_t off = s.offset[static_cast<std::size_t>(k)];
      const std::size_t so = static_cast<std::size_t>(k) * init_r;
      bad += fused_adapter(s.params.data() + off, s.grads.data() + off, ema.data() + off, unc.data() + off, a.in, a.out,
                           mask, row_sum.data() + so, lambda_score.data() + so, col_sum.data() + so);
      if (mask)
        for (std::size_t c = 0; c < init_r; ++c)
          scores[so + c] = static_cast<float>(lambda_score[so + c]) +
                           (static_cast<float>(row_sum[so + c]) / static_cast<float>(a.in) +
                            static_cast<float>(col_sum[so + c]) / static_cast<float>(a.out));
    }
    if (mask) {  // threshold and mask as the library does (b0 floats)
      std::vector<float> tmp(scores);
      const std::size_t k = s.b0() / 3;
      std::nth_element(tmp.begin(), tmp.begin() + static_cast<std::ptrdiff_t>(k - 1), tmp.end());
      benchmark::DoNotOptimize(tmp[k - 1]);
    }
    benchmark::DoNotOptimize(bad);
    benchmark::ClobberMemory();
  }
  set_byte_counters(st, required_bytes(s, mask), 0, threads);
}

// ---- registration and the summary ----------------------------------------------------------------------------

struct register_backend {
  std::string set;
  template <class B>
  void operator()() const {
    add<B, adalora::in_place_state>();
    add<B, adalora::double_buffered_state>();
    add<B, adalora::in_place_bf16_state>();
  }
  template <class B, adalora::StatePolicy P>
  void add() const {
    const std::string b = B::name;
    for (bool mask : {false, true})
      benchmark::RegisterBenchmark(
          ("step/" + std::string(mask ? "mask/" : "update/") + set + "/" + b + "/" + P::name).c_str(),
          [s = set, mask](benchmark::State& st) { bm_step<B, P>(st, s, mask); })
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
  }
};

void summary(const std::map<std::string, bench::result>& r) {
  auto rate = [&](const std::string& name, const char* counter) {
    const auto it = r.find(name);
    if (it == r.end()) return -1.0;
    const auto c = it->second.counters.find(counter);
    return c == it->second.counters.end() ? -1.0 : c->second;
  };
  std::printf("\nSummary: bytes/s the step must move, as a share of this run's bandwidth on the same thread count;\n"
              "x fused: the step's time over the hand-written in-place kernel's (fused/<kind>/<set>) on as many threads\n");
  std::printf("%-44s %9s %8s %8s %7s %7s %7s %7s %7s\n", "benchmark", "ms/step", "GB/s", "moved", "threads", "B/param",
              "% copy", "% upd.p", "x fused");
  for (const auto& [name, res] : r) {
    if (name.rfind("bandwidth/", 0) == 0) continue;
    const double bytes = rate(name, "bytes"), moved = rate(name, "moved"), state = rate(name, "state_B");
    const int threads = static_cast<int>(rate(name, "threads"));
    const std::string suffix = "/threads:" + std::to_string(threads);
    const double copy = rate("bandwidth/copy" + suffix, "bytes");
    const double pattern = rate("bandwidth/update_pattern" + suffix, "bytes");
    // step/<kind>/<set>/<backend>/<state> against fused/<kind>/<set>/threads:<threads>
    double fused = -1.0;
    if (name.rfind("step/", 0) == 0) {
      const auto kind_set = name.substr(5, name.find('/', name.find('/', 5) + 1) - 5);
      const auto it = r.find("fused/" + kind_set + suffix);
      if (it != r.end()) fused = it->second.seconds;
    }
    char moved_s[32] = "-", copy_s[32] = "-", pat_s[32] = "-", state_s[32] = "-", fused_s[32] = "-";
    if (moved > 0) std::snprintf(moved_s, sizeof moved_s, "%.2f", moved / 1e9);
    if (copy > 0) std::snprintf(copy_s, sizeof copy_s, "%.0f%%", 100.0 * bytes / copy);
    if (pattern > 0) std::snprintf(pat_s, sizeof pat_s, "%.0f%%", 100.0 * bytes / pattern);
    if (state > 0) std::snprintf(state_s, sizeof state_s, "%.0f", state);
    if (fused > 0) std::snprintf(fused_s, sizeof fused_s, "%.2f", res.seconds / fused);
    std::printf("%-44s %9.3f %8.2f %8s %7d %7s %7s %7s %7s\n", name.c_str(), res.seconds * 1e3, bytes / 1e9, moved_s,
                threads, state_s, copy_s, pat_s, fused_s);
  }
  for (const auto& [name, res] : r)
    if (name.rfind("bandwidth/", 0) == 0)
      std::printf("%-34s %10.3f %9.2f GB/s\n", name.c_str(), res.seconds * 1e3, rate(name, "bytes") / 1e9);
}

}  // namespace

int main(int argc, char** argv) {
  bench::register_bandwidth_benchmarks();
  for (const char* set : {"deberta", "llama"}) {
    bench::for_each_backend(register_backend{set});
    std::vector<int> counts{1};
    if (bench::omp_threads() > 1) counts.push_back(bench::omp_threads());
    for (bool mask : {false, true})
      for (int t : counts)
        benchmark::RegisterBenchmark(
            ("fused/" + std::string(mask ? "mask/" : "update/") + set + "/threads:" + std::to_string(t)).c_str(),
            [s = std::string(set), mask, t](benchmark::State& st) { bm_fused(st, s, mask, t); })
            ->UseRealTime()
            ->Unit(benchmark::kMillisecond);
  }
  return bench::run_main(argc, argv, summary);
}
