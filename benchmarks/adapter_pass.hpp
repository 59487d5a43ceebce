// One adapter's forward + backward on any backend (bench_adapter, bench_adapter_cuda): shapes, body, summary table.
#pragma once

#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "adalora/adapters/lora_adapter.hpp"
#include "adalora/adapters/svd_adapter.hpp"
#include "adalora/core/view.hpp"
#include "bench_fill.hpp"
#include "bench_report.hpp"

namespace bench {

inline constexpr std::size_t pass_tokens = 512;  ///< rows of x (batch × sequence) in a forward + backward
inline constexpr std::size_t pass_rank = 12;     ///< the adapters' rank (init_r of the allocator benchmarks)

struct layer_shape {
  const char* name;
  std::size_t in, out;
};

/// The distinct layer shapes of the DeBERTa-v3-base and LLaMA-7B adapter sets (adapter_sets.hpp).
inline constexpr layer_shape adapter_layer_shapes[] = {
    {"deberta_attn_768x768", 768, 768},
    {"deberta_intermediate_768x3072", 768, 3072},
    {"deberta_output_3072x768", 3072, 768},
    {"llama_attn_4096x4096", 4096, 4096},
    {"llama_up_4096x11008", 4096, 11008},
    {"llama_down_11008x4096", 11008, 4096},
};

/// n floats uniform in [−scale, scale) in the backend's memory.
template <class B>
auto uploaded_uniform(B& be, std::size_t n, std::uint64_t seed, float scale) {
  auto buf = be.template allocate<float>(n);
  std::vector<float> h(n);
  fill_uniform(h.data(), n, -scale, scale, seed);
  be.copy_from_host(h.data(), n, buf.data());
  return buf;
}

/// An adapter of either kind with trained-looking parameters (λ ≠ 0, LoRA's B ≠ 0), so that nothing is trivially 0.
template <class B, bool Svd>
auto trained_adapter(std::size_t in, std::size_t out, std::uint64_t seed) {
  adalora::adapter_options o;
  o.lora_alpha = 16;
  o.seed = seed;
  std::vector<float> A(pass_rank * in), E(Svd ? pass_rank : 0), Bm(out * pass_rank);
  fill_uniform(A.data(), A.size(), -0.035f, 0.035f, seed + 1);
  fill_uniform(E.data(), E.size(), -0.1f, 0.1f, seed + 2);
  fill_uniform(Bm.data(), Bm.size(), -0.035f, 0.035f, seed + 3);
  if constexpr (Svd) {
    adalora::svd_adapter<B> a(in, out, pass_rank, o);
    a.load(A, E, Bm);
    return a;
  } else {
    adalora::lora_adapter<B> a(in, out, pass_rank, o);
    a.load(A, {}, Bm);
    return a;
  }
}

/// adapter/<svd|lora>/<shape>/<backend>: forward then backward of one adapter on pass_tokens rows, no dropout,
/// synchronized every iteration. Counters: flops (the adapter GEMMs' 6 · tokens · r · (in + out) per iteration) and,
/// when threads > 0, threads (what its GEMMs run on).
template <class B, bool Svd>
void bm_adapter_pass(benchmark::State& st, layer_shape s, int threads) {
  using S = typename B::memory_space;
  B be;
  auto a = trained_adapter<B, Svd>(s.in, s.out, 11);
  auto x = uploaded_uniform(be, pass_tokens * s.in, 1, 1.0f);
  auto y = uploaded_uniform(be, pass_tokens * s.out, 2, 1.0f);
  auto dy = uploaded_uniform(be, pass_tokens * s.out, 3, 1e-3f);
  auto dx = uploaded_uniform(be, pass_tokens * s.in, 4, 1e-3f);
  const auto xv = adalora::make_matrix_view<S>(static_cast<const float*>(x.data()), pass_tokens, s.in);
  const auto yv = adalora::make_matrix_view<S>(y.data(), pass_tokens, s.out);
  const auto dyv = adalora::make_matrix_view<S>(static_cast<const float*>(dy.data()), pass_tokens, s.out);
  const auto dxv = adalora::make_matrix_view<S>(dx.data(), pass_tokens, s.in);
  a.forward(xv, yv);  // untimed: scratch buffers, thread pools, cuBLAS handles
  a.backward(dyv, dxv);
  be.synchronize();
  for (auto _ : st) {
    a.forward(xv, yv);
    a.backward(dyv, dxv);
    be.synchronize();
  }
  st.counters["flops"] =
      benchmark::Counter(6.0 * pass_tokens * pass_rank * static_cast<double>(s.in + s.out),
                         benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::OneK::kIs1000);
  if (threads > 0) st.counters["threads"] = threads;
}

/// Registers adapter/svd/… and adapter/lora/… for every shape on backend B.
template <class B>
void register_adapter_passes(int threads) {
  const std::string b = B::name;
  for (const auto& s : adapter_layer_shapes) {
    benchmark::RegisterBenchmark(("adapter/svd/" + std::string(s.name) + "/" + b).c_str(),
                                 [s, threads](benchmark::State& st) { bm_adapter_pass<B, true>(st, s, threads); })
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("adapter/lora/" + std::string(s.name) + "/" + b).c_str(),
                                 [s, threads](benchmark::State& st) { bm_adapter_pass<B, false>(st, s, threads); })
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
  }
}

/// The table of the adapter/… results: ms per forward + backward, SVD over LoRA, and the SVD adapter's GFLOP/s.
inline void print_adapter_summary(const std::map<std::string, result>& r) {
  bool header = false;
  for (const auto& [name, res] : r) {
    if (name.rfind("adapter/svd/", 0) != 0) continue;
    if (!header) {
      std::printf("\nSummary: one adapter, forward + backward, %zu tokens, r %zu (ms; SVD over LoRA)\n", pass_tokens,
                  pass_rank);
      std::printf("%-44s %10s %10s %9s %10s\n", "shape/backend", "SVD", "LoRA", "SVD/LoRA", "SVD GF/s");
      header = true;
    }
    const std::string rest = name.substr(std::string("adapter/svd/").size());
    const auto lora = r.find("adapter/lora/" + rest);
    const result* l = lora == r.end() ? nullptr : &lora->second;
    std::printf("%-44s %10.3f %10.3f %9.2f %10.2f\n", rest.c_str(), res.seconds * 1e3, l ? l->seconds * 1e3 : 0.0,
                l ? res.seconds / l->seconds : 0.0, res.counters.count("flops") ? res.counters.at("flops") / 1e9 : 0.0);
  }
}

}  // namespace bench
