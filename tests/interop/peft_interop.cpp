// The C++ half of the PEFT round trip (peft_roundtrip.py): writes a tiny model with SVD adapters, checks PEFT's save.
//
//   peft_interop write DIR                  base weights, inputs, C++ outputs and the exported adapter folders
//   peft_interop check DIR ADAPTER [OUT]    imports ADAPTER (e.g. PEFT's save_pretrained of DIR/adalora), checks its
//                                           tensors and ranks against DIR/adalora and its outputs against the C++
//                                           outputs (and against OUT, outputs PEFT computed, when given)
//   peft_interop compare DIR ADAPTER OUT    imports ADAPTER (any AdaLoRA adapter of the model, e.g. one PEFT trained)
//                                           and checks its outputs on DIR's inputs against OUT
//
// The model, the same as peft_roundtrip.py's torch.nn model (module paths match, so PEFT finds the adapters):
//   x (batch, 12) → for i in 0, 1: x = x + layers.i.down(tanh(layers.i.up(x))) → head(x) (batch, 5)
// with up: Linear(12, 24), down: Linear(24, 12), head: Linear(12, 5), an AdaLoRA adapter on each of the five.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <map>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "adalora/backends/eigen/eigen_backend.hpp"
#include "adalora/io/peft_adapter.hpp"

namespace {

using namespace adalora;
namespace fs = std::filesystem;
using adapter = svd_adapter<eigen_backend>;

constexpr std::size_t batch = 8, width = 12, hidden = 24, classes = 5;
constexpr double tolerance = 1e-5;  // max |difference| of outputs accepted

struct linear_spec {
  std::string name;
  std::size_t in, out;
  std::vector<bool> keep;  // the rank pattern, init_r entries
};

adalora_config config() {
  adalora_config c;
  c.init_r = 6;
  c.target_r = 3;
  c.tinit = 5;
  c.tfinal = 10;
  c.deltaT = 2;
  c.total_step = 60;
  c.lora_alpha = 12;
  return c;
}

/// Every kind of rank: partly kept, fully kept, none (rank 0), one component.
std::vector<linear_spec> layers() {
  return {{"layers.0.up", width, hidden, {true, false, true, true, false, true}},
          {"layers.0.down", hidden, width, {true, true, true, true, true, true}},
          {"layers.1.up", width, hidden, {false, false, false, false, false, false}},
          {"layers.1.down", hidden, width, {false, true, false, false, false, false}},
          {"head", width, classes, {true, true, false, false, true, false}}};
}

std::vector<float> normal(std::size_t n, std::mt19937& rng, float scale) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

struct base_linear {
  std::vector<float> W, b;  // (out, in), (out)
};

/// The frozen base weights, as torch.nn.Linear would be initialized (U(−1/√in, 1/√in)), from a fixed seed.
std::map<std::string, base_linear> base_weights() {
  std::mt19937 rng(2023);
  std::map<std::string, base_linear> w;
  for (const auto& l : layers()) {
    const float bound = 1.0f / std::sqrt(static_cast<float>(l.in));
    std::uniform_real_distribution<float> u(-bound, bound);
    base_linear& bl = w[l.name];
    bl.W.resize(l.out * l.in);
    bl.b.resize(l.out);
    for (auto& x : bl.W) x = u(rng);
    for (auto& x : bl.b) x = u(rng);
  }
  return w;
}

/// y = x Wᵀ + b (accumulated in double), then the adapter's s·((x Qᵀ) ⊙ λ) Pᵀ added by the library.
std::vector<float> apply(const linear_spec& l, const base_linear& bl, adapter& a, const std::vector<float>& x) {
  std::vector<float> y(batch * l.out);
  for (std::size_t n = 0; n < batch; ++n)
    for (std::size_t o = 0; o < l.out; ++o) {
      double acc = bl.b[o];
      for (std::size_t i = 0; i < l.in; ++i) acc += double(x[n * l.in + i]) * bl.W[o * l.in + i];
      y[n * l.out + o] = static_cast<float>(acc);
    }
  a.forward(make_matrix_view(static_cast<const float*>(x.data()), batch, l.in), make_matrix_view(y.data(), batch, l.out));
  return y;
}

std::vector<float> model_forward(std::map<std::string, adapter>& adapters, const std::vector<float>& x0) {
  const auto base = base_weights();
  const auto specs = layers();
  auto at = [&](const std::string& name) -> const linear_spec& {
    for (const auto& s : specs)
      if (s.name == name) return s;
    throw std::runtime_error("no layer " + name);
  };
  auto run = [&](const std::string& name, const std::vector<float>& x) {
    const auto it = adapters.find(name);
    if (it == adapters.end()) throw std::runtime_error("no adapter for " + name);
    it->second.train(false);
    return apply(at(name), base.at(name), it->second, x);
  };
  std::vector<float> x = x0;
  for (int i = 0; i < 2; ++i) {
    const std::string p = "layers." + std::to_string(i);
    auto h = run(p + ".up", x);
    for (auto& v : h) v = std::tanh(v);
    const auto d = run(p + ".down", h);
    for (std::size_t k = 0; k < x.size(); ++k) x[k] += d[k];
  }
  return run("head", x);
}

std::vector<float> inputs() {
  std::mt19937 rng(7);
  return normal(batch * width, rng, 1.0f);
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) throw std::runtime_error("output sizes differ");
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(double(a[i]) - double(b[i])));
  return m;
}

int write(const fs::path& dir) {
  fs::create_directories(dir);
  const adalora_config cfg = config();
  std::mt19937 rng(11);
  std::map<std::string, adapter> shrunk;
  std::vector<io::peft_svd_module> modules;
  for (const auto& l : layers()) {
    adapter a = adapter::from_config(l.in, l.out, cfg, 1);
    const std::size_t r = static_cast<std::size_t>(cfg.init_r);
    // trained-looking values: λ of order 1, P and Q of order 1/√dim
    a.load(normal(r * l.in, rng, 0.3f), normal(r, rng, 1.0f), normal(l.out * r, rng, 0.3f));
    modules.push_back(io::to_peft_module(l.name, a, l.keep));
    shrunk.emplace(l.name, a.shrink(l.keep));
  }

  io::safetensors_writer base;
  base.add_metadata("format", "pt");
  const auto weights = base_weights();
  for (const auto& l : layers()) {
    const auto& bw = weights.at(l.name);
    base.add(l.name + ".weight", {l.out, l.in}, bw.W);
    base.add(l.name + ".bias", {l.out}, bw.b);
  }
  base.write(dir / "base.safetensors");

  const auto x = inputs();
  const auto y = model_forward(shrunk, x);
  io::safetensors_writer io_file;
  io_file.add("x", {batch, width}, x);
  io_file.add("y", {batch, classes}, y);
  io_file.write(dir / "io.safetensors");

  io::write_peft_adalora(dir / "adalora", modules, cfg);
  io::write_peft_lora(dir / "lora", modules, cfg);
  io::peft_lora_export_options uniform;
  uniform.uniform_rank = true;
  io::write_peft_lora(dir / "lora_uniform", modules, cfg, uniform);

  // The export imports back to the same outputs (the C++ side of the round trip).
  std::map<std::string, adapter> back;
  for (auto& [name, a] : io::import_peft_adalora<eigen_backend>(dir / "adalora")) back.emplace(name, std::move(a));
  const double d = max_abs_diff(model_forward(back, x), y);
  std::printf("write: exported %zu modules to %s; C++ re-import max |diff| = %.3g\n", modules.size(),
              dir.string().c_str(), d);
  return d <= tolerance ? 0 : 1;
}

int check(const fs::path& dir, const fs::path& adapter_dir, const fs::path* peft_outputs) {
  int failures = 0;
  const auto ours = io::read_peft_adalora(dir / "adalora");
  const auto theirs = io::read_peft_adalora(adapter_dir);
  if (ours.modules.size() != theirs.modules.size()) {
    std::printf("FAIL: %zu modules in %s, %zu in ours\n", theirs.modules.size(), adapter_dir.string().c_str(),
                ours.modules.size());
    return 1;
  }
  if (theirs.config.init_r != ours.config.init_r || theirs.config.lora_alpha != ours.config.lora_alpha ||
      theirs.config.total_step != ours.config.total_step || theirs.config.target_r != ours.config.target_r) {
    std::printf("FAIL: the config differs (init_r, lora_alpha, total_step or target_r)\n");
    ++failures;
  }
  for (std::size_t k = 0; k < ours.modules.size(); ++k) {
    const auto &a = ours.modules[k], &b = theirs.modules[k];
    const bool same = a.name == b.name && a.rank() == b.rank() && a.A == b.A && a.E == b.E && a.B == b.B &&
                      a.rank_pattern == b.rank_pattern && a.scaling == b.scaling;
    std::printf("  %-14s rank %zu of %lld  %s\n", b.name.c_str(), b.rank(), static_cast<long long>(ours.config.init_r),
                same ? "tensors, rank pattern and scaling identical" : "DIFFERENT");
    if (!same) ++failures;
  }

  std::map<std::string, adapter> imported;
  for (auto& [name, a] : io::import_peft_adalora<eigen_backend>(adapter_dir)) imported.emplace(name, std::move(a));
  const auto f = io::safetensors_file::open(dir / "io.safetensors");
  const auto x = f.read_f32("x"), expected = f.read_f32("y");
  const auto y = model_forward(imported, x);
  const double d = max_abs_diff(y, expected);
  std::printf("check: outputs of the imported adapters vs the C++ outputs: max |diff| = %.3g\n", d);
  if (!(d <= tolerance)) ++failures;
  if (peft_outputs != nullptr) {
    const auto g = io::safetensors_file::open(*peft_outputs);
    const double dp = max_abs_diff(y, g.read_f32("y"));
    std::printf("check: outputs of the imported adapters vs PEFT's outputs: max |diff| = %.3g\n", dp);
    if (!(dp <= tolerance)) ++failures;
  }
  std::printf("check: %s\n", failures ? "FAILED" : "ok");
  return failures ? 1 : 0;
}

int compare(const fs::path& dir, const fs::path& adapter_dir, const fs::path& outputs) {
  const auto ck = io::read_peft_adalora(adapter_dir);
  std::size_t total = 0;
  for (const auto& m : ck.modules) {
    std::printf("  %-14s rank %zu of %lld\n", m.name.c_str(), m.rank(), static_cast<long long>(ck.config.init_r));
    total += m.rank();
  }
  std::map<std::string, adapter> imported;
  for (auto& [name, a] : io::import_peft_adalora<eigen_backend>(adapter_dir)) imported.emplace(name, std::move(a));
  const auto x = io::safetensors_file::open(dir / "io.safetensors").read_f32("x");
  const auto expected = io::safetensors_file::open(outputs).read_f32("y");
  const double d = max_abs_diff(model_forward(imported, x), expected);
  std::printf("compare: %zu components kept in all; outputs of the imported adapters vs %s: max |diff| = %.3g (%s)\n",
              total, outputs.filename().string().c_str(), d, d <= tolerance ? "ok" : "FAILED");
  return d <= tolerance ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::string mode = argc > 1 ? argv[1] : "";
    if (mode == "write" && argc == 3) return write(argv[2]);
    if (mode == "check" && (argc == 4 || argc == 5)) {
      const fs::path out = argc == 5 ? fs::path(argv[4]) : fs::path();
      return check(argv[2], argv[3], argc == 5 ? &out : nullptr);
    }
    if (mode == "compare" && argc == 5) return compare(argv[2], argv[3], argv[4]);
    std::fprintf(stderr,
                 "usage: peft_interop write DIR | check DIR ADAPTER_DIR [PEFT_OUTPUTS] | compare DIR ADAPTER_DIR "
                 "OUTPUTS\n");
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "peft_interop: %s\n", e.what());
    return 1;
  }
}
