// bench_distributed: the distributed allocator over MPI (Google Benchmark on every rank, rank 0 reports). Run it with
//   mpirun -np N build/benchmarks/bench_distributed [--benchmark_filter=...]      (N = 1, 2, 4, ...)
//
// Benchmarks (names are what --benchmark_filter matches; <layout> is how the LLaMA-7B set, 224 adapters at init_r 12,
// is held by the N ranks):
//   exchange/status/ranks:N     the status all-gather that every step before the final pattern makes (32 B per rank)
//   exchange/<layout>/ranks:N   the mask step's all-gather of score sums alone (mpi_communicator::all_gather of the
//                               segment the allocator sends); counters: bytes_per_rank, gathered (bytes every rank
//                               receives per mask step)
//   step/update/<layout>/ranks:N  allocator.step(t) in the warm-up phase on every rank (each rank's own part)
//   step/mask/<layout>/ranks:N    allocator.step(t) on a mask step (importance, exchange, threshold, masks)
//   step/mask/single/ranks:1      (N = 1 only) the single-process allocator (self_communicator) on the whole set
// <layout>: disjoint (pipeline: adapter k on rank k mod N, whole), sharded-exact and sharded-per_triplet (tensor
// parallel: q, k, v, gate, up split by the rows of lora_B; o, down by the columns of lora_A; λ counted on one
// rank; shard_sums::exact or ::per_triplet), and with N = 1 the whole set on one rank of the distributed allocator.
// Every rank runs the same iterations (fixed counts, so that the collectives match); before each timed step the
// ranks meet at a barrier (not timed), and rank 0's time includes its waits for the slowest rank. Backend: Eigen
// (one thread per rank).
#include <mpi.h>

#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "adalora/adalora.hpp"
#include "adalora/distributed/mpi/mpi_communicator.hpp"
#include "adapter_sets.hpp"
#include "bench_fill.hpp"

namespace {

using bench::init_r;
using adalora::eigen_backend;
using adalora::mpi_communicator;
using dist_allocator = adalora::rank_allocator<eigen_backend, adalora::sensitivity_uncertainty,
                                               adalora::cubic_schedule, float, mpi_communicator>;

int world_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}
int world_size() {
  int s = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &s);
  return s;
}

/// This rank's part of one adapter of the LLaMA set.
struct part {
  std::size_t adapter;
  std::size_t in_offset, in_count, out_offset, out_count;
  bool counts_lambda, whole;
};

/// What rank `rank` of `size` holds of the LLaMA set under `layout`.
std::vector<part> parts_of(const std::vector<bench::adapter_shape>& shapes, const std::string& layout, int rank,
                           int size) {
  std::vector<part> parts;
  const auto n = static_cast<std::size_t>(size), k0 = static_cast<std::size_t>(rank);
  for (std::size_t k = 0; k < shapes.size(); ++k) {
    const auto& a = shapes[k];
    if (layout == "whole" || (layout == "disjoint" && k % n == k0)) {
      parts.push_back({k, 0, a.in, 0, a.out, true, true});
    } else if (layout.rfind("sharded", 0) == 0) {
      // o_proj and down_proj are row-parallel (their input is split: lora_A's columns), the others column-parallel
      const bool row_parallel = a.name.find("o_proj") != std::string::npos || a.name.find("down_proj") != std::string::npos;
      const std::size_t dim = row_parallel ? a.in : a.out;
      const std::size_t lo = dim * k0 / n, hi = dim * (k0 + 1) / n;
      const bool owner = k % n == k0;  // holds (and counts) the replicated factor and λ
      if (row_parallel)
        parts.push_back({k, lo, hi - lo, 0, owner ? a.out : 0, owner, false});
      else
        parts.push_back({k, 0, owner ? a.in : 0, lo, hi - lo, owner, false});
    }
  }
  return parts;
}

/// One rank's tensors (parameters and gradients back to back) for its parts, filled once.
struct rank_set {
  std::vector<bench::adapter_shape> shapes = bench::llama_shapes();
  std::vector<part> parts;
  std::vector<std::size_t> offset;
  std::vector<float> params, grads;

  rank_set(const std::string& layout, int rank, int size) : parts(parts_of(shapes, layout, rank, size)) {
    std::size_t n = 0;
    for (const auto& p : parts) {
      offset.push_back(n);
      n += init_r * (p.in_count + 1 + p.out_count);
    }
    params.resize(n);
    grads.resize(n);
    bench::fill_uniform(params.data(), n, -0.035f, 0.035f, 1 + static_cast<std::uint64_t>(rank));
    bench::fill_uniform(grads.data(), n, -1e-3f, 1e-3f, 99 + static_cast<std::uint64_t>(rank));
  }

  template <class Allocator>
  void register_with(Allocator& alloc) {
    for (std::size_t i = 0; i < parts.size(); ++i) {
      const auto& p = parts[i];
      const auto& a = shapes[p.adapter];
      float* x = params.data() + offset[i];
      const float* g = grads.data() + offset[i];
      const adalora::svd_adapter_views<float> v{
          adalora::make_matrix_view(x, init_r, p.in_count),
          adalora::make_vector_view(x + init_r * p.in_count, init_r),
          adalora::make_matrix_view(x + init_r * (p.in_count + 1), p.out_count, init_r),
          adalora::make_matrix_view(g, init_r, p.in_count),
          adalora::make_vector_view(g + init_r * p.in_count, init_r),
          adalora::make_matrix_view(g + init_r * (p.in_count + 1), p.out_count, init_r)};
      if constexpr (Allocator::distributed) {
        if (!p.whole) {
          alloc.add_adapter(a.name, v, adalora::adapter_shard{a.in, a.out, p.in_offset, p.out_offset, p.counts_lambda});
          continue;
        }
      }
      alloc.add_adapter(a.name, v);
    }
  }
};

adalora::distributed_options options_of(const std::string& layout) {
  adalora::distributed_options o;
  if (layout == "sharded-per_triplet") o.sums = adalora::shard_sums::per_triplet;
  return o;
}

void barrier_untimed(benchmark::State& st) {
  st.PauseTiming();
  MPI_Barrier(MPI_COMM_WORLD);
  st.ResumeTiming();
}

void bm_step(benchmark::State& st, const std::string& layout, bool mask) {
  std::int64_t t = 0;
  const auto cfg = bench::bench_config(mask, t);
  rank_set set(layout, world_rank(), world_size());
  dist_allocator alloc(cfg, mpi_communicator(MPI_COMM_WORLD), adalora::ownership::partitioned, options_of(layout));
  set.register_with(alloc);
  alloc.step(t++);  // the first step: the ranks agree, the plan and the importance state are made; not timed
  for (auto _ : st) {
    barrier_untimed(st);
    const auto rep = alloc.step(t++);
    benchmark::DoNotOptimize(rep);
  }
  st.counters["exchange_bytes_per_rank"] = static_cast<double>(alloc.exchange_bytes_per_rank());
}

void bm_single(benchmark::State& st, bool mask) {
  std::int64_t t = 0;
  const auto cfg = bench::bench_config(mask, t);
  rank_set set("whole", 0, 1);
  adalora::rank_allocator<eigen_backend> alloc(cfg);
  set.register_with(alloc);
  alloc.step(t++);
  for (auto _ : st) {
    const auto rep = alloc.step(t++);
    benchmark::DoNotOptimize(rep);
  }
}

// The mask step's exchange alone: the segment the allocator sends under this layout, all-gathered.
void bm_exchange(benchmark::State& st, const std::string& layout) {
  std::size_t bytes = 0;
  {
    std::int64_t t = 0;
    const auto cfg = bench::bench_config(true, t);
    rank_set set(layout, world_rank(), world_size());
    dist_allocator alloc(cfg, mpi_communicator(MPI_COMM_WORLD), adalora::ownership::partitioned, options_of(layout));
    set.register_with(alloc);
    alloc.step(t);
    bytes = alloc.exchange_bytes_per_rank();
  }
  const mpi_communicator comm(MPI_COMM_WORLD);
  const std::size_t n = bytes / sizeof(double);
  std::vector<double> send(n, 1.0), recv(n * static_cast<std::size_t>(comm.size()));
  for (auto _ : st) {
    barrier_untimed(st);
    comm.all_gather(send.data(), n, recv.data());
    benchmark::DoNotOptimize(recv.data());
  }
  st.counters["bytes_per_rank"] = static_cast<double>(bytes);
  st.counters["gathered"] = static_cast<double>(bytes * static_cast<std::size_t>(comm.size()));
}

// The status all-gather every step before the final pattern makes (4 words per rank).
void bm_status(benchmark::State& st) {
  const mpi_communicator comm(MPI_COMM_WORLD);
  std::uint64_t mine[4] = {1, 0, 0, 0};
  std::vector<std::uint64_t> all(4 * static_cast<std::size_t>(comm.size()));
  for (auto _ : st) {
    barrier_untimed(st);
    comm.all_gather_host(mine, 4, all.data());
    benchmark::DoNotOptimize(all.data());
  }
  st.counters["bytes_per_rank"] = 32;
}

/// Rank 0 reports; the others run the same benchmarks silently.
class silent_reporter : public benchmark::BenchmarkReporter {
public:
  bool ReportContext(const Context&) override { return true; }
  void ReportRuns(const std::vector<Run>&) override {}
};

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  benchmark::Initialize(&argc, argv);
  const int size = world_size();
  const std::string ranks = "/ranks:" + std::to_string(size);
  benchmark::RegisterBenchmark(("exchange/status" + ranks).c_str(), bm_status)
      ->Iterations(200)->Repetitions(5)->ReportAggregatesOnly(true)->Unit(benchmark::kMicrosecond);
  std::vector<std::string> layouts{"disjoint", "sharded-exact", "sharded-per_triplet"};
  if (size == 1) layouts = {"whole"};
  for (const auto& layout : layouts) {
    benchmark::RegisterBenchmark(("exchange/" + layout + ranks).c_str(), bm_exchange, layout)
        ->Iterations(50)->Repetitions(5)->ReportAggregatesOnly(true)->Unit(benchmark::kMicrosecond);
    for (bool mask : {false, true})
      benchmark::RegisterBenchmark(("step/" + std::string(mask ? "mask/" : "update/") + layout + ranks).c_str(),
                                   bm_step, layout, mask)
          ->Iterations(10)->Repetitions(5)->ReportAggregatesOnly(true)->Unit(benchmark::kMillisecond);
  }
  if (size == 1)
    for (bool mask : {false, true})
      benchmark::RegisterBenchmark(("step/" + std::string(mask ? "mask" : "update") + "/single" + ranks).c_str(),
                                   bm_single, mask)
          ->Iterations(10)->Repetitions(5)->ReportAggregatesOnly(true)->Unit(benchmark::kMillisecond);
  if (world_rank() == 0) {
    benchmark::RunSpecifiedBenchmarks();
  } else {
    silent_reporter quiet;
    benchmark::RunSpecifiedBenchmarks(&quiet);
  }
  benchmark::Shutdown();
  MPI_Finalize();
  return 0;
}
