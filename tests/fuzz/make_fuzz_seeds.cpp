// make_fuzz_seeds: writes the fuzz targets' seed corpora and the hostile inputs of issue 17 (their regressions).
//
//   make_fuzz_seeds FUZZ_DIR [LAYER_TRACE]
//
// Seeds are small valid inputs of every kind, made with the library itself (so that the replays pass and the fuzzers
// start deep in each reader): allocator checkpoints at each phase, an allocation trace recorded from the allocator,
// PEFT AdaLoRA and LoRA folders, configs. LAYER_TRACE (a PEFT layer trace such as layer-basic.safetensors) gives the
// layer-trace seed: its first case alone. The regressions are the crafted inputs that crashed a reader or a tool
// before issue 17 was fixed. The files are committed; run this again only to change them (tests/fuzz/README.md).
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "adalora/allocation/rank_allocator.hpp"
#include "adalora/backends/eigen/eigen_backend.hpp"
#include "adalora/io/allocator_checkpoint.hpp"
#include "adalora/io/peft_adapter.hpp"
#include "adalora/io/safetensors.hpp"

namespace {

namespace fs = std::filesystem;
using namespace adalora;
using json = nlohmann::json;

fs::path root;

void put(const std::string& kind, const std::string& target, const std::string& name, const std::string& bytes) {
  const fs::path dir = root / kind / target;
  fs::create_directories(dir);
  std::ofstream(dir / name, std::ios::binary | std::ios::trunc) << bytes;
  std::cout << (dir / name).string() << ": " << bytes.size() << " bytes\n";
}
void put(const std::string& kind, const std::string& target, const std::string& name,
         const std::vector<std::byte>& bytes) {
  put(kind, target, name, std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
}
std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}
/// A PEFT folder as one peft_folder input: the config, a NUL byte, the weights file.
std::string folder_input(const fs::path& dir) {
  return read_file(dir / io::peft_config_file) + std::string(1, '\0') + read_file(dir / io::peft_weights_file);
}

/// Two tiny adapters (r 2: in 3, out 2; in 2, out 3) with deterministic values that change each step.
struct tiny_model {
  std::vector<float> A0 = std::vector<float>(6), E0 = std::vector<float>(2), B0 = std::vector<float>(4);
  std::vector<float> A1 = std::vector<float>(4), E1 = std::vector<float>(2), B1 = std::vector<float>(6);
  std::vector<float> gA0 = A0, gE0 = E0, gB0 = B0, gA1 = A1, gE1 = E1, gB1 = B1;
  void step(int t) {
    int k = 0;
    for (auto* v : {&A0, &E0, &B0, &A1, &E1, &B1, &gA0, &gE0, &gB0, &gA1, &gE1, &gB1})
      for (float& x : *v) x = static_cast<float>(((k++ * 37 + t * 11) % 23) - 11) / 8.0f;
  }
  template <class Alloc>
  void add_to(Alloc& a) {
    a.add_adapter("layers.0.q", {make_matrix_view(A0.data(), 2, 3), make_vector_view(E0.data(), 2),
                                 make_matrix_view(B0.data(), 2, 2), make_matrix_view<host_space, const float>(gA0.data(), 2, 3),
                                 make_vector_view<host_space, const float>(gE0.data(), 2),
                                 make_matrix_view<host_space, const float>(gB0.data(), 2, 2)});
    a.add_adapter("layers.0.v", {make_matrix_view(A1.data(), 2, 2), make_vector_view(E1.data(), 2),
                                 make_matrix_view(B1.data(), 3, 2), make_matrix_view<host_space, const float>(gA1.data(), 2, 2),
                                 make_vector_view<host_space, const float>(gE1.data(), 2),
                                 make_matrix_view<host_space, const float>(gB1.data(), 3, 2)});
  }
};

adalora_config tiny_config() {
  adalora_config c;
  c.init_r = 2;
  c.target_r = 1;
  c.tinit = 0;
  c.tfinal = 1;
  c.total_step = 5;
  return c;
}

void checkpoints() {
  tiny_model m;
  rank_allocator<eigen_backend> a(tiny_config());
  m.add_to(a);
  put("corpus", "checkpoint", "before-first-step.safetensors", io::allocator_checkpoint_bytes(a.save_state()));
  for (int t = 0; t < 6; ++t) {
    m.step(t);
    a.step(t);
    if (t == 2) put("corpus", "checkpoint", "budgeting.safetensors", io::allocator_checkpoint_bytes(a.save_state()));
  }
  const allocator_state frozen = a.save_state();
  put("corpus", "checkpoint", "frozen.safetensors", io::allocator_checkpoint_bytes(frozen));

  // issue 17: metadata claiming an adapter rank of 1e8 (adalora-inspect read the pattern out of bounds: SIGSEGV)
  allocator_state huge = frozen;
  huge.adapters[1].r = 100'000'000;
  put("regressions", "checkpoint", "adapter-rank-1e8.safetensors", io::allocator_checkpoint_bytes(huge));
  // issue 17: an importance edited to NaN (restored, then every adapter pruned to rank 0)
  rank_allocator<eigen_backend> b(tiny_config());
  tiny_model m2;
  m2.add_to(b);
  for (int t = 0; t < 3; ++t) {
    m2.step(t);
    b.step(t);
  }
  allocator_state nan = b.save_state();
  nan.importance[1] = std::numeric_limits<float>::quiet_NaN();
  put("regressions", "checkpoint", "nan-importance.safetensors", io::allocator_checkpoint_bytes(nan));
  // and sizes that overflow: an adapter out of 2^64 − 1
  allocator_state wide = frozen;
  wide.adapters[0].out = std::numeric_limits<std::size_t>::max();
  put("regressions", "checkpoint", "adapter-out-size-max.safetensors", io::allocator_checkpoint_bytes(wide));
}

/// An allocation trace in FORMAT.md's layout, recorded from the allocator on the tiny model.
void alloc_trace() {
  tiny_model m;
  const adalora_config c = tiny_config();
  rank_allocator<eigen_backend> a(c);
  m.add_to(a);
  io::safetensors_writer w;
  json steps = json::array();
  for (int t = 0; t < 6; ++t) {
    m.step(t);
    const std::string p0 = std::to_string(t) + "/layers.0.q/", p1 = std::to_string(t) + "/layers.0.v/";
    auto record = [&](const std::string& p, const std::vector<float>& A, const std::vector<float>& E,
                      const std::vector<float>& B, const std::vector<float>& gA, const std::vector<float>& gE,
                      const std::vector<float>& gB, std::size_t in, std::size_t out) {
      w.add(p + "lora_A", {2, in}, A);
      w.add(p + "lora_E", {2, 1}, E);
      w.add(p + "lora_B", {out, 2}, B);
      w.add(p + "grad/lora_A", {2, in}, gA);
      w.add(p + "grad/lora_E", {2, 1}, gE);
      w.add(p + "grad/lora_B", {out, 2}, gB);
    };
    record(p0, m.A0, m.E0, m.B0, m.gA0, m.gE0, m.gB0, 3, 2);
    record(p1, m.A1, m.E1, m.B1, m.gA1, m.gE1, m.gB1, 2, 3);
    const step_report r = a.step(t);
    w.add(p0 + "out/lora_E", {2, 1}, m.E0);
    w.add(p1 + "out/lora_E", {2, 1}, m.E1);
    if (r.threshold) {
      w.add(p0 + "score", {2}, a.triplet_scores("layers.0.q"));
      w.add(p1 + "score", {2}, a.triplet_scores("layers.0.v"));
    }
    steps.push_back({{"t", t},
                     {"budget", r.budget},
                     {"masked", r.masked},
                     {"threshold", r.threshold ? json(*r.threshold) : json(nullptr)},
                     {"phase", trace_phase_name(r.phase)}});
  }
  w.add_metadata("format", "adalora-trace/alloc/1");
  w.add_metadata("config", json{{"init_r", c.init_r}, {"target_r", c.target_r}, {"tinit", c.tinit}, {"tfinal", c.tfinal},
                                {"total_step", c.total_step}, {"deltaT", c.deltaT}, {"beta1", c.beta1},
                                {"beta2", c.beta2}}
                               .dump());
  w.add_metadata("adapters", json{"layers.0.q", "layers.0.v"}.dump());
  w.add_metadata("steps", steps.dump());
  put("corpus", "alloc_trace", "tiny.safetensors", w.to_bytes());
}

/// Case 0 of a PEFT layer trace, alone; and the crafted case of issue 17.
void layer_trace(const fs::path& trace) {
  if (!trace.empty()) {
    const auto f = io::safetensors_file::open(trace);
    const json cases = json::parse(f.metadata().at("cases"));
    io::safetensors_writer w;
    w.add_metadata("format", "adalora-trace/layer/1");
    w.add_metadata("cases", json::array({cases.at(0)}).dump());
    for (const auto& t : f.tensors())
      if (t.name.starts_with("0/")) w.add(t.name, t.shape, f.read_f32(t.name));
    put("corpus", "layer_trace", "case0.safetensors", w.to_bytes());
  }
  // issue 17: d_in = d_out = batch = 2^32, r = 0 (adalora-trace died with SIGSEGV)
  io::safetensors_writer w;
  const std::uint64_t big = std::uint64_t{1} << 32;
  w.add_metadata("format", "adalora-trace/layer/1");
  w.add_metadata("cases",
                 json::array({{{"case", 0}, {"d_in", big}, {"d_out", big}, {"r", 0}, {"batch", big}, {"alpha", 1.0}}})
                     .dump());
  for (const char* k : {"W", "A", "E", "B", "x", "dy", "y", "grad/A", "grad/E", "grad/B", "grad/x", "orth/R",
                        "orth/grad/A", "orth/grad/B"})
    w.add(std::string("0/") + k, {0}, std::vector<float>{});
  const auto bytes = w.to_bytes();
  put("regressions", "layer_trace", "sizes-2pow32.safetensors", bytes);
  put("regressions", "safetensors", "layer-trace-sizes-2pow32.safetensors", bytes);
}

void peft() {
  const fs::path tmp = fs::temp_directory_path() / "adalora-make-fuzz-seeds";
  fs::remove_all(tmp);
  adalora_config c;
  c.init_r = 3;
  c.target_r = 1;
  c.total_step = 10;
  c.lora_alpha = 6;
  std::vector<io::peft_svd_module> modules(2);
  modules[0].name = "layers.0.q";
  modules[0].in_features = 4;
  modules[0].out_features = 3;
  modules[0].A = {0.5f, -0.25f, 1.0f, 0.125f, 0.75f, -1.0f, 0.25f, 0.5f, -0.5f, 0.375f, 0.0f, 1.5f};
  modules[0].E = {1.0f, 0.0f, -2.0f};
  modules[0].B = {0.5f, 0.25f, -0.75f, 1.0f, 0.0f, 0.5f, -0.25f, 0.125f, 2.0f};
  modules[0].rank_pattern = std::vector<bool>{true, false, true};
  modules[1].name = "head";
  modules[1].in_features = 2;
  modules[1].out_features = 2;
  modules[1].A = {0.5f, 1.0f, -0.5f, 0.25f, 0.75f, -1.0f};
  modules[1].E = {0.5f, 1.5f, -1.0f};
  modules[1].B = {1.0f, -0.5f, 0.25f, 0.5f, 0.75f, -1.0f};
  io::write_peft_adalora(tmp / "adalora", modules, c);
  io::write_peft_lora(tmp / "lora", modules, c);
  put("corpus", "peft_folder", "adalora.bin", folder_input(tmp / "adalora"));
  put("corpus", "peft_folder", "lora.bin", folder_input(tmp / "lora"));
  put("corpus", "peft_config", "with-rank-pattern.json", read_file(tmp / "adalora" / io::peft_config_file));
  put("corpus", "peft_config", "lora.json", read_file(tmp / "lora" / io::peft_config_file));
  put("corpus", "safetensors", "peft-adalora.safetensors", read_file(tmp / "adalora" / io::peft_weights_file));

  // issue 17: 100,000 nested '[' (a stack overflow in the reader's error path, and in adalora-inspect)
  const std::string deep = std::string(100'000, '[') + std::string(100'000, ']');
  put("regressions", "peft_config", "target-modules-deep.json",
      R"({"peft_type": "ADALORA", "init_r": 2, "target_modules": )" + deep + "}");
  put("regressions", "peft_config", "peft-type-deep.json", R"({"peft_type": )" + deep + "}");
  put("regressions", "peft_config", "lora-alpha-1e300.json", R"({"peft_type": "ADALORA", "init_r": 2, "lora_alpha": 1e300})");
  put("regressions", "peft_config", "peft-type-array.json", R"({"peft_type": ["ADALORA"], "init_r": 2})");
  put("regressions", "peft_config", "nul-then-garbage.json",
      std::string(R"({"peft_type": "ADALORA", "init_r": 2})") + std::string(1, '\0') + "{{{");
  std::string lora_deep = read_file(tmp / "lora" / io::peft_config_file);
  lora_deep.insert(1, R"("rank_pattern": )" + deep + ",");
  put("regressions", "peft_folder", "lora-rank-pattern-deep.bin",
      lora_deep + std::string(1, '\0') + read_file(tmp / "lora" / io::peft_weights_file));
  fs::remove_all(tmp);
}

void safetensors() {
  // issue 17: "{}" then bytes no tensor covers, behind a NUL inside the header
  std::string nul("\x08\0\0\0\0\0\0\0{}\0\0\0\0\0\0", 16);
  put("regressions", "safetensors", "nul-in-header.safetensors", nul);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || argc > 3) {
    std::cerr << "usage: make_fuzz_seeds FUZZ_DIR [LAYER_TRACE]\n";
    return 2;
  }
  root = argv[1];
  checkpoints();
  alloc_trace();
  layer_trace(argc > 2 ? fs::path(argv[2]) : fs::path());
  peft();
  safetensors();
  return 0;
}
