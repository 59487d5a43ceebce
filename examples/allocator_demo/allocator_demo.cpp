// allocator_demo: drives the AdaLoRA rank allocator over synthetic gradients and prints how the budget moves.
//
// Six adapters (think q, v of three layers) start at rank 8. The synthetic "task" makes a few singular directions
// matter: each adapter's gradients are scaled by a per-adapter, per-direction strength, so the allocator should
// keep many ranks where the strength is high and prune the rest. The trainer owns every tensor; the allocator
// only sees views of them, and runs after each (pretend) optimizer step.
//
//   allocator_demo [CHECKPOINT]   with a path, also saves the allocator's final state there (io/allocator_checkpoint.hpp;
//                                 `adalora-inspect CHECKPOINT` prints it, rank_allocator::restore_state resumes from it)
#include <cstdio>
#include <exception>
#include <random>
#include <string>
#include <vector>

#include "adalora/adalora.hpp"
#include "adalora/io/allocator_checkpoint.hpp"

namespace {

struct adapter_tensors {
  std::string name;
  std::size_t r, in, out;
  std::vector<float> A, E, B, gA, gE, gB;  // PEFT's lora_A (r × in), lora_E (r), lora_B (out × r), and gradients
  std::vector<float> strength;             // how much each singular direction matters to the synthetic task
};

}  // namespace

int main(int argc, char** argv) try {
  adalora::adalora_config cfg;
  cfg.init_r = 8;
  cfg.target_r = 3;
  cfg.tinit = 20;
  cfg.tfinal = 30;
  cfg.total_step = 200;
  cfg.deltaT = 10;

  std::mt19937 rng(42);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const char* names[] = {"layer0.q", "layer0.v", "layer1.q", "layer1.v", "layer2.q", "layer2.v"};
  const float layer_weight[] = {0.2f, 0.3f, 1.0f, 2.5f, 0.1f, 4.0f};  // layer1.v and layer2.v matter most

  std::vector<adapter_tensors> adapters;
  for (int k = 0; k < 6; ++k) {
    adapter_tensors a{names[k], 8, 64, 64, {}, {}, {}, {}, {}, {}, {}};
    a.A.resize(a.r * a.in);
    a.B.resize(a.out * a.r);
    a.E.assign(a.r, 0.0f);
    a.gA.resize(a.A.size());
    a.gB.resize(a.B.size());
    a.gE.resize(a.r);
    for (auto& x : a.A) x = 0.02f * normal(rng);
    for (auto& x : a.B) x = 0.02f * normal(rng);
    for (std::size_t i = 0; i < a.r; ++i) a.strength.push_back(layer_weight[k] / static_cast<float>(1 + i));
    adapters.push_back(std::move(a));
  }

  // Register views of the trainer's tensors (row-major, as in PyTorch).
  adalora::rank_allocator<adalora::eigen_backend> allocator(cfg);
  for (auto& a : adapters) {
    using adalora::make_matrix_view;
    using adalora::make_vector_view;
    allocator.add_adapter(a.name, {make_matrix_view(a.A.data(), a.r, a.in), make_vector_view(a.E.data(), a.r),
                                   make_matrix_view(a.B.data(), a.out, a.r),
                                   make_matrix_view(static_cast<const float*>(a.gA.data()), a.r, a.in),
                                   make_vector_view(static_cast<const float*>(a.gE.data()), a.r),
                                   make_matrix_view(static_cast<const float*>(a.gB.data()), a.out, a.r)});
  }

  std::printf("AdaLoRA allocator demo: %zu adapters, init_r %lld -> target_r %lld, total_step %lld\n",
              adapters.size(), static_cast<long long>(cfg.init_r), static_cast<long long>(cfg.target_r),
              static_cast<long long>(cfg.total_step));
  std::printf("%5s %-13s %6s  ranks:", "step", "phase", "budget");
  for (const auto& a : adapters) std::printf(" %9s", a.name.c_str());
  std::printf("\n");

  const float lr = 0.01f;
  for (std::int64_t t = 0; t < cfg.total_step; ++t) {
    // Synthetic backward pass: noisy gradients whose size follows each direction's strength.
    for (auto& a : adapters) {
      for (std::size_t i = 0; i < a.r; ++i) {
        const float s = a.strength[i] * (1.0f + 0.5f * normal(rng));
        a.gE[i] = -s + 0.1f * normal(rng);
        for (std::size_t j = 0; j < a.in; ++j) a.gA[i * a.in + j] = s * 0.1f * normal(rng);
        for (std::size_t j = 0; j < a.out; ++j) a.gB[j * a.r + i] = s * 0.1f * normal(rng);
      }
      // Plain SGD as the trainer's optimizer step.
      for (std::size_t i = 0; i < a.A.size(); ++i) a.A[i] -= lr * a.gA[i];
      for (std::size_t i = 0; i < a.B.size(); ++i) a.B[i] -= lr * a.gB[i];
      for (std::size_t i = 0; i < a.r; ++i) a.E[i] -= lr * a.gE[i];
    }
    // The allocator runs after the optimizer step and before the gradients are zeroed.
    const adalora::step_report rep = allocator.step(t);
    if (rep.masked && (rep.phase != adalora::allocation_phase::final_pattern || t == cfg.total_step - 1)) {
      std::printf("%5lld %-13s %6lld        ", static_cast<long long>(t), adalora::phase_name(rep.phase),
                  static_cast<long long>(rep.budget));
      for (auto r : allocator.ranks()) std::printf(" %9lld", static_cast<long long>(r));
      std::printf("\n");
    }
  }

  std::printf("\nfinal rank pattern (1 = kept singular direction):\n");
  for (const auto& a : adapters) {
    std::printf("  %-9s ", a.name.c_str());
    for (bool keep : allocator.rank_pattern(a.name)) std::printf("%d", keep ? 1 : 0);
    std::printf("\n");
  }
  if (argc > 1) {
    adalora::io::save_checkpoint(allocator, argv[1]);
    std::printf("\nallocator state saved to %s\n", argv[1]);
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "allocator_demo: %s\n", e.what());
  return 1;
}
