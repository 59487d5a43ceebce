// adalora-validate-cuda: the CUDA backend against the Eigen reference on a large random LLaMA-like model (nvcc; needs
// a GPU). Run by scripts/gpu-check.
//
//   adalora-validate-cuda [--layers N] [--hidden H] [--intermediate I] [--r R] [--steps T] [--batch B] [--seed S]
//                         [--rtol X]
//
// Registers 7 adapters per layer (q k v o gate up down; k and v project to hidden/2, as with grouped-query
// attention), feeds both allocators the same random parameters and gradients for T steps (through the final mask),
// then runs one SVD adapter's forward and backward per distinct shape on both backends. Prints the largest absolute
// and relative difference of every quantity and whether budgets and masks agree.
// Exit status: 0 when the masks agree and every relative difference is within --rtol, 1 when not, 2 on a usage error
// or when there is no CUDA device.
#include <cuda_runtime_api.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <iostream>
#include <iterator>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "adalora/backends/cuda/cuda_backend.cuh"
#include "adalora/backends/cuda/cuda_error.cuh"
#include "adalora/backends/eigen/eigen_backend.hpp"
#include "adalora/validate/backend_comparison.hpp"

namespace {

struct options {
  std::size_t layers = 16;
  std::size_t hidden = 2048;
  std::size_t intermediate = 4096;
  std::size_t r = 12;
  std::size_t steps = 14;
  std::size_t batch = 128;
  std::size_t seed = 2023;
  double rtol = 1e-4;
};

void usage(std::ostream& os) {
  const options d;
  os << "usage: adalora-validate-cuda [--layers N] [--hidden H] [--intermediate I] [--r R] [--steps T] [--batch B]\n"
        "                             [--seed S] [--rtol X]\n"
        "The CUDA backend against Eigen: 7 adapters per layer (LLaMA's q k v o gate up down), T allocator steps, then\n"
        "one forward and backward per adapter shape. Defaults: --layers "
     << d.layers << " --hidden " << d.hidden << " --intermediate " << d.intermediate << " --r " << d.r << " --steps "
     << d.steps << " --batch " << d.batch << " --seed " << d.seed << " --rtol " << d.rtol << "\n";
}

/// splitmix64: a fast, seeded source of uniform floats in [-scale, scale).
struct uniform_source {
  std::uint64_t state;
  float next(float scale) {
    std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return scale * (static_cast<float>(z >> 40) * (2.0f / 16777216.0f) - 1.0f);
  }
  std::vector<float> fill(std::size_t n, float scale) {
    std::vector<float> v(n);
    for (auto& x : v) x = next(scale);
    return v;
  }
};

struct module_shape {
  const char* name;
  std::size_t in, out;
};

struct adapter_spec {
  std::string name;
  std::size_t in, out;
  float grad_scale;  // adapters differ in importance, so that the budget goes somewhere in particular
};

/// The report's lines, indented under a title.
bool print_report(const std::string& title, const adalora::validate::comparison_report& rep, double rtol) {
  const bool ok = rep.within(rtol);
  std::cout << title << ": " << (ok ? "agree" : "DISAGREE") << " (rtol " << rtol << ")\n";
  std::istringstream lines(rep.to_string());
  for (std::string line; std::getline(lines, line);) std::cout << "  " << line << "\n";
  return ok;
}

bool parse(int argc, char** argv, options& o) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      usage(std::cout);
      std::exit(0);
    }
    if (i + 1 >= argc) return false;
    const char* v = argv[++i];
    char* end = nullptr;
    if (a == "--rtol") {
      o.rtol = std::strtod(v, &end);
    } else {
      const unsigned long long n = std::strtoull(v, &end, 10);
      const std::pair<const char*, std::size_t*> fields[] = {
          {"--layers", &o.layers}, {"--hidden", &o.hidden}, {"--intermediate", &o.intermediate},
          {"--r", &o.r},           {"--steps", &o.steps},   {"--batch", &o.batch},
          {"--seed", &o.seed}};
      bool known = false;
      for (const auto& [flag, field] : fields) {
        if (a != flag) continue;
        *field = static_cast<std::size_t>(n);
        known = true;
      }
      if (!known) return false;
    }
    if (end == v || *end != '\0') return false;
  }
  return o.layers > 0 && o.hidden > 1 && o.intermediate > 0 && o.r > 1 && o.steps > 0 && o.batch > 0 && o.rtol > 0;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace adalora;
  options opt;
  if (!parse(argc, argv, opt)) {
    std::cerr << "adalora-validate-cuda: bad arguments\n";
    usage(std::cerr);
    return 2;
  }
  int devices = 0;
  if (const cudaError_t e = cudaGetDeviceCount(&devices); e != cudaSuccess || devices == 0) {
    std::cerr << "adalora-validate-cuda: no CUDA device ("
              << (e == cudaSuccess ? std::string("0 devices") : detail::cuda_error_text(e)) << ")\n";
    return 2;
  }
  try {
    // inside the try: a device that cannot be queried is reported, not std::terminate
    int device = 0;
    cudaDeviceProp prop{};
    detail::cuda_check(cudaGetDevice(&device), "cudaGetDevice");
    detail::cuda_check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
    const std::size_t h = opt.hidden, kv = opt.hidden / 2, im = opt.intermediate, r = opt.r;
    uniform_source rng{opt.seed};
    std::vector<adapter_spec> specs;
    for (std::size_t l = 0; l < opt.layers; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      const module_shape mods[] = {{"self_attn.q_proj", h, h}, {"self_attn.k_proj", h, kv}, {"self_attn.v_proj", h, kv},
                                   {"self_attn.o_proj", h, h}, {"mlp.gate_proj", h, im},    {"mlp.up_proj", h, im},
                                   {"mlp.down_proj", im, h}};
      for (const auto& m : mods) specs.push_back({p + m.name, m.in, m.out, 1e-3f * (1.5f + rng.next(1.0f))});
    }

    adalora_config cfg;
    cfg.init_r = r;
    cfg.target_r = r * 2 / 3;
    cfg.tinit = 2;
    cfg.tfinal = 3;
    cfg.deltaT = 2;
    cfg.total_step = static_cast<std::int64_t>(opt.steps);
    if (cfg.total_step <= cfg.tinit + cfg.tfinal) cfg.total_step = cfg.tinit + cfg.tfinal + 1;

    std::size_t params = 0;
    for (const auto& s : specs) params += r * (s.in + s.out + 1);
    std::cout << "adalora-validate-cuda: CUDA on " << prop.name << " against Eigen; " << specs.size() << " adapters ("
              << opt.layers << " layers x q k v o gate up down, hidden " << h << ", intermediate " << im << "), r " << r
              << ", " << params << " adapter parameters, " << cfg.total_step << " steps (tinit " << cfg.tinit
              << ", tfinal " << cfg.tfinal << ", deltaT " << cfg.deltaT << ", target_r " << cfg.target_r << ")\n";

    // ---- the allocator, step by step ---------------------------------------------------------------------------
    validate::allocator_comparison<eigen_backend, cuda_backend> cmp(cfg);
    for (const auto& s : specs) cmp.add_adapter(s.name, r, s.in, s.out);
    for (std::int64_t t = 0; t < cfg.total_step; ++t) {
      for (const auto& s : specs) {
        const auto A = rng.fill(r * s.in, 0.05f), E = rng.fill(r, 0.5f), B = rng.fill(s.out * r, 0.05f);
        const auto gA = rng.fill(r * s.in, s.grad_scale), gE = rng.fill(r, s.grad_scale),
                   gB = rng.fill(s.out * r, s.grad_scale);
        cmp.set_inputs(s.name, A, E, B, gA, gE, gB);
      }
      cmp.step(t);
    }
    bool ok = print_report("allocator, " + std::to_string(cfg.total_step) + " steps", cmp.report(), opt.rtol);
    const auto* scores = cmp.report().find("triplet scores");
    if (!scores || scores->compared == 0) {
      std::cout << "  no triplet scores were compared: the configuration never selected\n";
      ok = false;
    }

    // ---- one forward and backward per distinct adapter shape ----------------------------------------------------
    const module_shape shapes[] = {
        {"q_proj / o_proj", h, h}, {"k_proj / v_proj", h, kv}, {"gate_proj / up_proj", h, im}, {"down_proj", im, h}};
    for (const auto& [label, in, out] : shapes) {
      const auto rep = validate::compare_adapter_passes<eigen_backend, cuda_backend>(
          in, out, r, 32.0f, rng.fill(r * in, 0.05f), rng.fill(r, 0.5f), rng.fill(out * r, 0.05f),
          rng.fill(opt.batch * in, 1.0f), rng.fill(opt.batch * out, 1.0f));
      ok = print_report(std::string("adapter forward + backward, ") + label + " (" + std::to_string(in) + " -> " +
                            std::to_string(out) + ", batch " + std::to_string(opt.batch) + ")",
                        rep, opt.rtol) &&
           ok;
    }
    std::cout << (ok ? "PASS" : "FAIL") << ": CUDA " << (ok ? "agrees" : "does not agree")
              << " with Eigen (masks and budgets exactly, values within rtol " << opt.rtol << ")\n";
    return ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::cerr << "adalora-validate-cuda: " << e.what() << "\n";
    return 1;
  }
}
