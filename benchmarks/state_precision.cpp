// state_precision: what bfloat16 importance state (in_place_bf16_state) changes in the allocator's selections, against
// float32 state (in_place_state, which reproduces PEFT exactly), on the PEFT reference traces.
//
//   state_precision FILE...        e.g. build-bench/benchmarks/state_precision tests/data/traces/alloc-*.safetensors
//
// Each allocation trace (format adalora-trace/alloc/1, docs/traces.md) is replayed twice on the Eigen backend, each
// run fed the trace's recorded parameters and gradients at every step (PEFT's inputs: a run's own masks do not feed
// back into the next step's λ, so both runs see the same inputs throughout). Per trace it prints:
//   selections   steps that chose a pattern (a threshold below which singular values were pruned)
//   differ       those whose kept set differs between the two runs
//   flips        singular values kept by one run and pruned by the other, over all selections, of all selected
//   max score    the largest relative difference of a triplet score between the runs
//   final        singular values whose final (frozen) pattern differs, of b0
//   f32 = PEFT   whether the float32 run's λ matched the trace at every step (it must)
// Exit status 0, or 1 if a file could not be replayed (or float32 did not reproduce PEFT).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <string>
#include <vector>

#include "adalora/allocation/rank_allocator.hpp"
#include "adalora/backends/eigen/eigen_backend.hpp"
#include "adalora/io/safetensors.hpp"
#include "adalora/validate/alloc_trace.hpp"

namespace {

using adalora::eigen_backend;

/// One adapter's tensors as a run holds them (host memory: Eigen).
struct tensors {
  std::vector<float> A, E, B, gA, gE, gB;
  adalora::svd_adapter_views<float> views(std::size_t r, std::size_t in, std::size_t out) {
    return {adalora::make_matrix_view(A.data(), r, in),
            adalora::make_vector_view(E.data(), r),
            adalora::make_matrix_view(B.data(), out, r),
            adalora::make_matrix_view(static_cast<const float*>(gA.data()), r, in),
            adalora::make_vector_view(static_cast<const float*>(gE.data()), r),
            adalora::make_matrix_view(static_cast<const float*>(gB.data()), out, r)};
  }
};

struct effect {
  std::size_t steps = 0, selections = 0, differ = 0, flips = 0, selected = 0, final_differ = 0, b0 = 0;
  double max_score_rel = 0.0;
  bool f32_matches_peft = true;
};

template <adalora::StatePolicy P>
using allocator = adalora::rank_allocator<eigen_backend, adalora::sensitivity_uncertainty, adalora::cubic_schedule,
                                          float, adalora::self_communicator, P>;

effect compare(const adalora::io::safetensors_file& file) {
  using namespace adalora::validate::detail;
  const adalora::adalora_config cfg = trace_config(file);
  const auto names = parse_metadata_json(file, "adapters");
  const auto steps = parse_metadata_json(file, "steps");
  const std::int64_t t0 = steps.at(0).at("t").get<std::int64_t>();
  struct adapter {
    std::string name;
    std::size_t r = 0, in = 0, out = 0;
    tensors f32, bf16;
  };
  std::vector<adapter> adapters;
  allocator<adalora::in_place_state> a(cfg);
  allocator<adalora::in_place_bf16_state> b(cfg);
  for (const auto& n : names) {
    adapter x;
    x.name = n.get<std::string>();
    const std::string p = std::to_string(t0) + "/" + x.name + "/";
    x.r = shape_of(file, p + "lora_A").at(0);
    x.in = shape_of(file, p + "lora_A").at(1);
    x.out = shape_of(file, p + "lora_B").at(0);
    adapters.push_back(std::move(x));
  }
  effect e;
  for (auto& x : adapters) {
    for (tensors* t : {&x.f32, &x.bf16}) {
      t->A.resize(x.r * x.in);
      t->gA.resize(x.r * x.in);
      t->E.resize(x.r);
      t->gE.resize(x.r);
      t->B.resize(x.out * x.r);
      t->gB.resize(x.out * x.r);
    }
    a.add_adapter(x.name, x.f32.views(x.r, x.in, x.out));
    b.add_adapter(x.name, x.bf16.views(x.r, x.in, x.out));
    e.b0 += x.r;
  }
  for (const auto& s : steps) {
    const std::int64_t t = s.at("t").get<std::int64_t>();
    for (auto& x : adapters) {
      const std::string p = std::to_string(t) + "/" + x.name + "/";
      for (tensors* h : {&x.f32, &x.bf16}) {
        file.read_f32_into(p + "lora_A", h->A);
        file.read_f32_into(p + "lora_E", h->E);
        file.read_f32_into(p + "lora_B", h->B);
        file.read_f32_into(p + "grad/lora_A", h->gA);
        file.read_f32_into(p + "grad/lora_E", h->gE);
        file.read_f32_into(p + "grad/lora_B", h->gB);
      }
    }
    const auto ra = a.step(t);
    const auto rb = b.step(t);
    ++e.steps;
    if (ra.threshold || rb.threshold) {
      ++e.selections;
      bool differs = false;
      for (const auto& x : adapters) {
        const auto pa = a.rank_pattern(x.name), pb = b.rank_pattern(x.name);
        const auto sa = a.triplet_scores(x.name), sb = b.triplet_scores(x.name);
        for (std::size_t i = 0; i < pa.size(); ++i) {
          e.flips += pa[i] != pb[i] ? 1u : 0u;
          differs = differs || pa[i] != pb[i];
          if (i < sa.size() && i < sb.size() && sa[i] != 0.0f)
            e.max_score_rel = std::max(e.max_score_rel, std::fabs(double(sb[i]) - sa[i]) / std::fabs(double(sa[i])));
        }
        e.selected += pa.size();
      }
      e.differ += differs ? 1u : 0u;
    }
    for (const auto& x : adapters) {  // float32 state reproduces PEFT's λ exactly
      const auto expected = file.read_f32(std::to_string(t) + "/" + x.name + "/out/lora_E");
      if (expected.size() != x.f32.E.size() ||
          std::memcmp(expected.data(), x.f32.E.data(), expected.size() * sizeof(float)) != 0)
        e.f32_matches_peft = false;
    }
  }
  for (const auto& x : adapters) {
    const auto pa = a.rank_pattern(x.name), pb = b.rank_pattern(x.name);
    for (std::size_t i = 0; i < pa.size(); ++i) e.final_differ += pa[i] != pb[i] ? 1u : 0u;
  }
  return e;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: state_precision TRACE.safetensors...\n");
    return 2;
  }
  std::printf("%-30s %6s %10s %7s %14s %10s %9s %9s\n", "trace", "steps", "selections", "differ", "flips",
              "max score", "final", "f32=PEFT");
  int failures = 0;
  effect all;
  for (int i = 1; i < argc; ++i) {
    const std::string shown = std::filesystem::path(argv[i]).filename().string();
    try {
      const auto file = adalora::io::safetensors_file::open(argv[i]);
      const effect e = compare(file);
      char flips[32], final_s[32];
      std::snprintf(flips, sizeof flips, "%zu / %zu", e.flips, e.selected);
      std::snprintf(final_s, sizeof final_s, "%zu / %zu", e.final_differ, e.b0);
      std::printf("%-30s %6zu %10zu %7zu %14s %9.2e %9s %9s\n", shown.c_str(), e.steps, e.selections, e.differ, flips,
                  e.max_score_rel, final_s, e.f32_matches_peft ? "yes" : "NO");
      if (!e.f32_matches_peft) ++failures;
      all.steps += e.steps;
      all.selections += e.selections;
      all.differ += e.differ;
      all.flips += e.flips;
      all.selected += e.selected;
      all.final_differ += e.final_differ;
      all.b0 += e.b0;
      all.max_score_rel = std::max(all.max_score_rel, e.max_score_rel);
    } catch (const std::exception& ex) {
      std::printf("%-30s FAILED: %s\n", shown.c_str(), ex.what());
      ++failures;
    }
  }
  std::printf("%-30s %6zu %10zu %7zu %7zu / %-6zu %9.2e %4zu / %-4zu\n", "all", all.steps, all.selections, all.differ,
              all.flips, all.selected, all.max_score_rel, all.final_differ, all.b0);
  return failures ? 1 : 0;
}
