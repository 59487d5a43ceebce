// backend_check: holds a fast backend against the Eigen reference with the validate/ API, as a trainer would.
//
// The fast backend is Thrust's OMP system when the build has adalora::thrust, else xtensor, else Eigen itself (a
// trivial check). With adalora::cuda, the same code with cuda_backend checks the GPU path: see
// tools/adalora_validate_cuda.cu. A trainer hands both allocators the same parameters and gradients after each
// optimizer step (here: random ones shaped like three layers' q and v adapters), then reads the report: the largest
// absolute and relative difference of every quantity, and whether budgets and masks agree exactly.
// Exit status 0 when they agree within the tolerance, 1 when not.
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "adalora/adalora.hpp"
#include "adalora/validate/backend_comparison.hpp"
#if ADALORA_EXAMPLE_HAS_THRUST
#include "adalora/backends/thrust/thrust_backend.hpp"
using fast_backend = adalora::thrust_omp_backend;
#elif ADALORA_EXAMPLE_HAS_XTENSOR
#include "adalora/backends/xtensor/xtensor_backend.hpp"
using fast_backend = adalora::xtensor_backend;
#else
using fast_backend = adalora::eigen_backend;
#endif

namespace {

std::vector<float> random_values(std::size_t n, std::mt19937& rng, float scale) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

struct adapter_shape {
  std::string name;
  std::size_t r, in, out;
};

}  // namespace

int main() {
  adalora::adalora_config cfg;
  cfg.init_r = 8;
  cfg.target_r = 4;
  cfg.tinit = 10;
  cfg.tfinal = 10;
  cfg.total_step = 60;
  cfg.deltaT = 5;
  const double rtol = 1e-5;

  // The reference first, the backend under test second.
  adalora::validate::allocator_comparison<adalora::eigen_backend, fast_backend> check(cfg);
  std::vector<adapter_shape> adapters;
  for (int layer = 0; layer < 3; ++layer)
    for (const char* m : {"q_proj", "v_proj"})
      adapters.push_back({"layers." + std::to_string(layer) + "." + m, 8, 64, 64});
  for (const auto& a : adapters) check.add_adapter(a.name, a.r, a.in, a.out);

  std::mt19937 rng(2023);
  for (std::int64_t t = 0; t < cfg.total_step; ++t) {
    // after the optimizer step: every adapter's lora_A, lora_E, lora_B and their gradients, in PEFT's layout
    for (const auto& a : adapters)
      check.set_inputs(a.name, random_values(a.r * a.in, rng, 0.02f), random_values(a.r, rng, 0.1f),
                       random_values(a.out * a.r, rng, 0.02f), random_values(a.r * a.in, rng, 1e-3f),
                       random_values(a.r, rng, 1e-3f), random_values(a.out * a.r, rng, 1e-3f));
    check.step(t);  // both allocators, then scores, λ, budgets and masks compared
  }
  std::printf("allocator, %s against eigen, %lld steps:\n%s", fast_backend::name,
              static_cast<long long>(cfg.total_step), check.report().to_string().c_str());

  // One adapter's forward and backward on both backends from the same inputs: y, ∂A, ∂λ, ∂B, ∂x.
  const std::size_t in = 64, out = 48, r = 8, batch = 16;
  const auto passes = adalora::validate::compare_adapter_passes<adalora::eigen_backend, fast_backend>(
      in, out, r, 16.0f, random_values(r * in, rng, 0.02f), random_values(r, rng, 0.1f),
      random_values(out * r, rng, 0.02f), random_values(batch * in, rng, 1.0f), random_values(batch * out, rng, 1.0f));
  std::printf("\nadapter forward + backward, %s against eigen:\n%s", fast_backend::name, passes.to_string().c_str());

  const bool ok = check.report().within(rtol) && passes.within(rtol);
  std::printf("\n%s agrees with eigen within %g: %s\n", fast_backend::name, rtol, ok ? "yes" : "NO");
  return ok ? 0 : 1;
}
