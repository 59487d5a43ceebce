// Tests of the PEFT adapter export and import: round trips on every backend, the plain-LoRA ΔW, malformed folders.
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include <nlohmann/json.hpp>

#include "adalora/backends/eigen/eigen_backend.hpp"
#include "adalora/io/peft_adapter.hpp"
#include "support/backends_under_test.hpp"
#include "support/random_values.hpp"

using namespace adalora;
using adalora::io::peft_svd_module;
using adalora::testing::backends_under_test;
using adalora::testing::normal_values;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

/// Matches an exception whose what() contains a piece of text.
struct what_contains : Catch::MatcherBase<std::exception> {
  std::string needle;
  explicit what_contains(std::string text) : needle(std::move(text)) {}
  bool match(const std::exception& e) const override { return std::string(e.what()).find(needle) != std::string::npos; }
  std::string describe() const override { return "has a message containing \"" + needle + "\""; }
};

/// A fresh folder under the system temp folder, removed at the end of the test.
struct temp_dir {
  fs::path path;
  explicit temp_dir(const std::string& tag) {
    static unsigned counter = 0;
    const auto stamp = std::chrono::steady_clock::now().time_since_epoch().count();
    path = fs::temp_directory_path() /
           ("adalora_test_peft_" + tag + "_" + std::to_string(stamp) + "_" + std::to_string(counter++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
};

json read_json(const fs::path& p) {
  std::ifstream in(p);
  return json::parse(in);
}

void write_text(const fs::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::trunc);
  out << text;
}

/// Worst absolute difference, and the index where it is; the inputs must be non-trivial.
void require_close(const std::vector<float>& got, const std::vector<double>& expect, double rtol, const char* what) {
  REQUIRE(got.size() == expect.size());
  double scale = 0, err = -1;
  std::size_t worst = 0;
  for (double e : expect) scale = std::max(scale, std::fabs(e));
  for (std::size_t i = 0; i < got.size(); ++i)
    if (std::fabs(got[i] - expect[i]) > err) err = std::fabs(got[i] - expect[i]), worst = i;
  INFO(what << ": worst element " << worst << " expected " << expect[worst] << ", got " << got[worst] << " (scale "
            << scale << ")");
  REQUIRE(scale > 0);
  REQUIRE(err <= rtol * scale);
}

adalora_config test_config() {
  adalora_config c;
  c.init_r = 6;
  c.target_r = 3;
  c.tinit = 10;
  c.tfinal = 20;
  c.deltaT = 5;
  c.beta1 = 0.8;
  c.beta2 = 0.9;
  c.orth_reg_weight = 0.3;
  c.total_step = 100;
  c.lora_alpha = 10;
  return c;
}

struct spec {
  std::string name;
  std::size_t in, out;
  std::vector<bool> keep;
};

/// Four modules with init_r = 6: partly kept, fully kept, one component, none (rank 0).
std::vector<spec> test_specs() {
  return {{"layers.0.q", 10, 7, {true, false, true, true, false, true}},
          {"layers.0.v", 10, 7, {true, true, true, true, true, true}},
          {"head", 7, 4, {false, false, true, false, false, false}},
          {"layers.1.q", 7, 7, {false, false, false, false, false, false}}};
}

template <class B>
std::vector<svd_adapter<B>> make_adapters(const std::vector<spec>& specs, const adalora_config& c) {
  std::vector<svd_adapter<B>> out;
  unsigned seed = 100;
  for (const auto& s : specs) {
    auto a = svd_adapter<B>::from_config(s.in, s.out, c, seed);
    const auto r = static_cast<std::size_t>(c.init_r);
    a.load(normal_values(r * s.in, seed + 1, 0.3f), normal_values(r, seed + 2),
           normal_values(s.out * r, seed + 3, 0.3f));
    a.train(false);
    out.push_back(std::move(a));
    seed += 10;
  }
  return out;
}

template <class B>
std::vector<float> run_forward(svd_adapter<B>& a, const std::vector<float>& x, const std::vector<float>& y0,
                               std::size_t batch) {
  B backend{};
  using S = typename B::memory_space;
  auto xd = backend.template allocate<float>(x.size());
  auto yd = backend.template allocate<float>(y0.size());
  backend.copy_from_host(x.data(), x.size(), xd.data());
  backend.copy_from_host(y0.data(), y0.size(), yd.data());
  a.forward(make_matrix_view<S>(static_cast<const float*>(xd.data()), batch, a.in_features()),
            make_matrix_view<S>(yd.data(), batch, a.out_features()));
  std::vector<float> y(y0.size());
  backend.copy_to_host(yd.data(), y.size(), y.data());
  return y;
}

/// A host copy of a tensor of a backend adapter.
template <class B>
std::vector<float> host(const svd_adapter<B>& a, const float* p, std::size_t n) {
  std::vector<float> h(n);
  if (n) a.backend().copy_to_host(p, n, h.data());
  return h;
}

std::vector<double> to_double(const std::vector<float>& v) {
  return {v.begin(), v.end()};
}

}  // namespace

TEMPLATE_LIST_TEST_CASE("AdaLoRA export writes PEFT's files and imports back to the same adapters", "[peft]",
                        backends_under_test) {
  const adalora_config cfg = test_config();
  const auto specs = test_specs();
  auto adapters = make_adapters<TestType>(specs, cfg);
  std::vector<peft_svd_module> modules;
  for (std::size_t k = 0; k < specs.size(); ++k)
    modules.push_back(io::to_peft_module(specs[k].name, adapters[k], specs[k].keep));
  temp_dir dir("roundtrip");
  io::write_peft_adalora(dir.path, modules, cfg);

  SECTION("the safetensors file: PEFT's keys, shrunk float32 tensors, no .weight, no adapter name") {
    const auto f = io::safetensors_file::open(dir.path / "adapter_model.safetensors");
    REQUIRE(f.tensors().size() == 3 * specs.size());
    REQUIRE(f.metadata().at("format") == "pt");
    for (std::size_t k = 0; k < specs.size(); ++k) {
      const auto& s = specs[k];
      const std::size_t rk = static_cast<std::size_t>(std::count(s.keep.begin(), s.keep.end(), true));
      const std::string key = "base_model.model." + s.name;
      REQUIRE(f.info(key + ".lora_A").shape == std::vector<std::size_t>{rk, s.in});
      REQUIRE(f.info(key + ".lora_E").shape == std::vector<std::size_t>{rk, 1});
      REQUIRE(f.info(key + ".lora_B").shape == std::vector<std::size_t>{s.out, rk});
      REQUIRE(f.info(key + ".lora_A").type == io::dtype::f32);
      // the kept rows of A and entries of E, in order
      const auto A = f.read_f32(key + ".lora_A"), E = f.read_f32(key + ".lora_E");
      std::size_t j = 0;
      for (std::size_t i = 0; i < s.keep.size(); ++i) {
        if (!s.keep[i]) continue;
        REQUIRE(E[j] == modules[k].E[i]);
        REQUIRE(std::equal(A.begin() + static_cast<std::ptrdiff_t>(j * s.in),
                           A.begin() + static_cast<std::ptrdiff_t>((j + 1) * s.in),
                           modules[k].A.begin() + static_cast<std::ptrdiff_t>(i * s.in)));
        ++j;
      }
    }
  }

  SECTION("the config: peft_type ADALORA, the AdaLoRA fields, rank_pattern keyed <module>.lora_E") {
    const json j = read_json(dir.path / "adapter_config.json");
    REQUIRE(j.at("peft_type") == "ADALORA");
    REQUIRE(j.at("init_r") == 6);
    REQUIRE(j.at("target_r") == 3);
    REQUIRE(j.at("tinit") == 10);
    REQUIRE(j.at("tfinal") == 20);
    REQUIRE(j.at("deltaT") == 5);
    REQUIRE(j.at("beta1").get<double>() == 0.8);
    REQUIRE(j.at("beta2").get<double>() == 0.9);
    REQUIRE(j.at("orth_reg_weight").get<double>() == 0.3);
    REQUIRE(j.at("total_step") == 100);
    REQUIRE(j.at("lora_alpha").is_number_integer());
    REQUIRE(j.at("lora_alpha") == 10);
    REQUIRE(j.at("lora_dropout").get<double>() == 0.0);
    REQUIRE(j.at("r") == 8);
    REQUIRE(j.at("bias") == "none");
    REQUIRE(j.at("fan_in_fan_out") == false);
    REQUIRE(j.at("inference_mode") == true);
    REQUIRE(j.at("init_lora_weights") == true);
    REQUIRE(j.at("task_type").is_null());
    REQUIRE(j.at("base_model_name_or_path").is_null());
    std::vector<std::string> targets = j.at("target_modules");
    REQUIRE(targets == std::vector<std::string>{"layers.0.q", "layers.0.v", "head", "layers.1.q"});
    const json& rp = j.at("rank_pattern");
    REQUIRE(rp.size() == specs.size());
    for (const auto& s : specs) REQUIRE(rp.at(s.name + ".lora_E").get<std::vector<bool>>() == s.keep);
  }

  SECTION("import: shrunk ranks, init_r and scaling kept, identical outputs") {
    auto imported = io::import_peft_adalora<TestType>(dir.path);
    REQUIRE(imported.size() == specs.size());
    // sorted by name: head, layers.0.q, layers.0.v, layers.1.q
    const std::vector<std::size_t> order{2, 0, 1, 3};
    const std::size_t batch = 5;
    for (std::size_t n = 0; n < order.size(); ++n) {
      const std::size_t k = order[n];
      const auto& s = specs[k];
      auto& [name, a] = imported[n];
      INFO("module " << s.name);
      REQUIRE(name == s.name);
      REQUIRE(a.rank() == static_cast<std::size_t>(std::count(s.keep.begin(), s.keep.end(), true)));
      REQUIRE(a.init_r() == 6);
      REQUIRE(a.scaling() == adapters[k].scaling());
      REQUIRE(a.scaling() == io::peft_adalora_scaling(10.0, 6));
      a.train(false);
      const auto x = normal_values(batch * s.in, 7 + static_cast<unsigned>(k));
      const auto y0 = normal_values(batch * s.out, 70 + static_cast<unsigned>(k));
      auto shrunk = adapters[k].shrink(s.keep);
      shrunk.train(false);
      const auto y_import = run_forward(a, x, y0, batch);
      REQUIRE(y_import == run_forward(shrunk, x, y0, batch));  // same tensors, same backend: same bits
      // and the original adapter with the pruned λ set to 0 (what training ends with)
      const std::size_t r = 6;
      auto E = host(adapters[k], adapters[k].lora_E().data, r);
      for (std::size_t i = 0; i < r; ++i)
        if (!s.keep[i]) E[i] = 0.0f;
      auto masked = svd_adapter<TestType>::from_config(s.in, s.out, cfg, 1);
      masked.load(host(adapters[k], adapters[k].lora_A().data, r * s.in), E,
                  host(adapters[k], adapters[k].lora_B().data, s.out * r));
      masked.train(false);
      const auto y_masked = run_forward(masked, x, y0, batch);
      require_close(y_import, to_double(y_masked), 1e-6, "imported vs masked");
    }
  }

  SECTION("the owning-adapter overload writes the same files") {
    std::vector<std::pair<std::string, const svd_adapter<TestType>*>> named;
    std::map<std::string, std::vector<bool>> patterns;
    for (std::size_t k = 0; k < specs.size(); ++k) {
      named.emplace_back(specs[k].name, &adapters[k]);
      patterns[specs[k].name] = specs[k].keep;
    }
    temp_dir other("overload");
    io::write_peft_adalora(other.path, named, patterns, cfg);
    for (const char* file : {"adapter_model.safetensors", "adapter_config.json"}) {
      std::ifstream a(dir.path / file, std::ios::binary), b(other.path / file, std::ios::binary);
      const std::string sa((std::istreambuf_iterator<char>(a)), {}), sb((std::istreambuf_iterator<char>(b)), {});
      REQUIRE(sa == sb);
    }
    patterns["nope"] = {true};
    REQUIRE_THROWS_MATCHES(io::write_peft_adalora(other.path, named, patterns, cfg), usage_error,
                           what_contains("'nope', which is no module"));
  }
}

TEMPLATE_LIST_TEST_CASE("plain-LoRA export: PEFT LoRA's ΔW with scaling alpha/r equals the SVD adapter's", "[peft]",
                        backends_under_test) {
  const adalora_config cfg = test_config();
  const auto specs = test_specs();
  auto adapters = make_adapters<TestType>(specs, cfg);
  std::vector<peft_svd_module> modules;
  for (std::size_t k = 0; k < specs.size(); ++k)
    modules.push_back(io::to_peft_module(specs[k].name, adapters[k], specs[k].keep));

  for (bool uniform : {false, true}) {
    INFO("uniform_rank = " << uniform);
    temp_dir dir("lora");
    io::peft_lora_export_options o;
    o.uniform_rank = uniform;
    o.task_type = "CAUSAL_LM";
    io::write_peft_lora(dir.path, modules, cfg, o);
    const json j = read_json(dir.path / "adapter_config.json");
    REQUIRE(j.at("peft_type") == "LORA");
    REQUIRE(j.at("task_type") == "CAUSAL_LM");
    REQUIRE(j.at("r") == 6);  // the largest kept rank
    REQUIRE(j.at("lora_alpha") == 6);
    REQUIRE(j.at("use_rslora") == false);
    REQUIRE(j.count("init_r") == 0);
    // the rank-0 module is left out
    REQUIRE(j.at("target_modules").get<std::vector<std::string>>() ==
            std::vector<std::string>{"layers.0.q", "layers.0.v", "head"});
    const json& rp = j.at("rank_pattern");
    const json& ap = j.at("alpha_pattern");
    if (uniform) {
      REQUIRE(rp.empty());
      REQUIRE(ap.empty());
    } else {
      REQUIRE(rp == json{{"layers.0.q", 4}, {"layers.0.v", 6}, {"head", 1}});
      REQUIRE(ap == rp);
      // written longest name first (PEFT matches pattern keys as suffixes, first match wins)
      std::ifstream in(dir.path / "adapter_config.json");
      const std::string text((std::istreambuf_iterator<char>(in)), {});
      REQUIRE(text.find("\"layers.0.q\": 4") < text.find("\"head\": 1"));
    }

    const auto f = io::safetensors_file::open(dir.path / "adapter_model.safetensors");
    REQUIRE(f.tensors().size() == 6);
    REQUIRE_FALSE(f.contains("base_model.model.layers.1.q.lora_A.weight"));
    for (std::size_t k = 0; k < 3; ++k) {
      const auto& s = specs[k];
      INFO("module " << s.name);
      const std::string key = "base_model.model." + s.name;
      const auto& iA = f.info(key + ".lora_A.weight");
      const auto& iB = f.info(key + ".lora_B.weight");
      const std::size_t r = iA.shape[0];
      REQUIRE(iA.shape == std::vector<std::size_t>{r, s.in});
      REQUIRE(iB.shape == std::vector<std::size_t>{s.out, r});
      const std::size_t rk = static_cast<std::size_t>(std::count(s.keep.begin(), s.keep.end(), true));
      REQUIRE(r == (uniform ? 6 : rk));
      // PEFT LoRA: scaling = alpha_pattern.get(m, lora_alpha) / rank_pattern.get(m, r)
      const double alpha = ap.contains(s.name) ? ap.at(s.name).get<double>() : j.at("lora_alpha").get<double>();
      const double rank = rp.contains(s.name) ? rp.at(s.name).get<double>() : j.at("r").get<double>();
      const double scaling = alpha / rank;
      REQUIRE(scaling == 1.0);
      const auto A = f.read_f32(iA.name), Bm = f.read_f32(iB.name);
      std::vector<double> dw(s.out * s.in, 0.0);
      for (std::size_t o = 0; o < s.out; ++o)
        for (std::size_t c = 0; c < s.in; ++c) {
          double acc = 0;
          for (std::size_t i = 0; i < r; ++i) acc += double(Bm[o * r + i]) * A[i * s.in + c];
          dw[o * s.in + c] = scaling * acc;
        }
      auto shrunk = adapters[k].shrink(s.keep);
      require_close(shrunk.delta_weight(), dw, 1e-6, "SVD ΔW vs LoRA ΔW");
    }
  }
  // the rank-0 module adds nothing: leaving it out changes no output
  auto none = adapters[3].shrink(specs[3].keep);
  const auto d0 = none.delta_weight();
  REQUIRE(std::all_of(d0.begin(), d0.end(), [](float v) { return v == 0.0f; }));
}

TEST_CASE("AdaLoRA export of the lower-level form: patterns absent, given for shrunk tensors, or synthesized",
          "[peft]") {
  adalora_config cfg = test_config();
  cfg.init_r = 4;
  peft_svd_module full{"enc.fc",     3,           2, 0, normal_values(12, 1), normal_values(4, 2), normal_values(8, 3),
                       std::nullopt, std::nullopt};
  peft_svd_module given{"enc.proj",
                        3,
                        2,
                        4,
                        normal_values(6, 4),
                        normal_values(2, 5),
                        normal_values(4, 6),
                        std::vector<bool>{false, true, false, true},
                        std::nullopt};
  peft_svd_module implied{
      "dec.fc", 3, 2, 4, normal_values(3, 7), normal_values(1, 8), normal_values(2, 9), std::nullopt, std::nullopt};

  SECTION("every module at full rank without a pattern: rank_pattern is null") {
    temp_dir dir("full");
    const std::vector<peft_svd_module> mods{full};
    io::write_peft_adalora(dir.path, mods, cfg);
    REQUIRE(read_json(dir.path / "adapter_config.json").at("rank_pattern").is_null());
    const auto ck = io::read_peft_adalora(dir.path);
    REQUIRE(ck.modules.size() == 1);
    REQUIRE(ck.modules[0].rank() == 4);
    REQUIRE_FALSE(ck.modules[0].rank_pattern.has_value());
    REQUIRE(ck.modules[0].A == full.A);
    REQUIRE(ck.modules[0].E == full.E);
    REQUIRE(ck.modules[0].B == full.B);
  }
  SECTION("already shrunk tensors: the given pattern is written, a missing one is synthesized") {
    temp_dir dir("shrunk");
    const std::vector<peft_svd_module> mods{full, given, implied};
    io::write_peft_adalora(dir.path, mods, cfg);
    const json rp = read_json(dir.path / "adapter_config.json").at("rank_pattern");
    REQUIRE(rp.at("enc.fc.lora_E") == json{true, true, true, true});
    REQUIRE(rp.at("enc.proj.lora_E") == json{false, true, false, true});
    REQUIRE(rp.at("dec.fc.lora_E") == json{true, false, false, false});
    const auto ck = io::read_peft_adalora(dir.path);
    REQUIRE(ck.config.init_r == 4);
    REQUIRE(ck.config.total_step == 100);
    REQUIRE(ck.config.beta2 == 0.9);
    REQUIRE(ck.target_modules == std::vector<std::string>{"enc.fc", "enc.proj", "dec.fc"});
    REQUIRE(ck.modules.size() == 3);
    REQUIRE(ck.modules[0].name == "dec.fc");
    REQUIRE(ck.modules[0].E == implied.E);
    REQUIRE(ck.modules[2].name == "enc.proj");
    REQUIRE(ck.modules[2].rank() == 2);
    REQUIRE(*ck.modules[2].rank_pattern == *given.rank_pattern);
    REQUIRE(ck.modules[2].A == given.A);
    REQUIRE(ck.modules[2].B == given.B);
    REQUIRE(*ck.modules[2].scaling == io::peft_adalora_scaling(10, 4));
  }
  SECTION("lora_alpha <= 0 is written as init_r, the same scaling") {
    temp_dir dir("alpha");
    cfg.lora_alpha = 0;
    const std::vector<peft_svd_module> mods{full};
    io::write_peft_adalora(dir.path, mods, cfg);
    REQUIRE(read_json(dir.path / "adapter_config.json").at("lora_alpha") == 4);
    REQUIRE(*io::read_peft_adalora(dir.path).modules[0].scaling == io::peft_adalora_scaling(0, 4));
  }
  SECTION("BF16 storage is read back widened") {
    temp_dir dir("bf16");
    io::peft_export_options o;
    o.stored_as = io::dtype::bf16;
    o.base_model_name_or_path = "org/model";
    const std::vector<peft_svd_module> mods{full};
    io::write_peft_adalora(dir.path, mods, cfg, o);
    const auto f = io::safetensors_file::open(dir.path / "adapter_model.safetensors");
    REQUIRE(f.info("base_model.model.enc.fc.lora_B").type == io::dtype::bf16);
    const auto ck = io::read_peft_adalora(dir.path);
    REQUIRE(ck.base_model_name_or_path == "org/model");
    for (std::size_t i = 0; i < full.A.size(); ++i)
      REQUIRE(ck.modules[0].A[i] == io::bf16_bits_to_float(io::float_to_bf16_bits(full.A[i])));
  }
}

namespace {

struct hand_tensor {
  std::string name;
  std::vector<std::size_t> shape;
};

/// A folder written by hand: a config and tensors of the given shapes (values 0.5).
void hand_folder(const fs::path& dir, const json& config, const std::vector<hand_tensor>& tensors) {
  fs::create_directories(dir);
  write_text(dir / "adapter_config.json", config.dump());
  io::safetensors_writer w;
  for (const auto& t : tensors) {
    std::size_t n = 1;
    for (auto d : t.shape) n *= d;
    w.add(t.name, t.shape, std::vector<float>(n, 0.5f));
  }
  w.write(dir / "adapter_model.safetensors");
}

/// PEFT's own save of a 2-module model with init_r = 3: names without adapter, E (r, 1), one module shrunk to 2.
json peft_config() {
  return json{{"peft_type", "ADALORA"},
              {"init_r", 3},
              {"target_r", 2},
              {"lora_alpha", 6},
              {"total_step", 50},
              {"target_modules", {"fc1", "fc2"}},
              {"rank_pattern", {{"fc1.lora_E", {true, false, true}}, {"fc2.lora_E", {true, true, true}}}}};
}
std::vector<hand_tensor> peft_tensors() {
  return {{"base_model.model.fc1.lora_A", {2, 4}}, {"base_model.model.fc1.lora_E", {2, 1}},
          {"base_model.model.fc1.lora_B", {5, 2}}, {"base_model.model.fc2.lora_A", {3, 5}},
          {"base_model.model.fc2.lora_E", {3, 1}}, {"base_model.model.fc2.lora_B", {2, 3}}};
}

}  // namespace

TEST_CASE("import accepts what PEFT saves: adapter names in keys, lora_E as (r, 1) or (r), missing defaults",
          "[peft]") {
  temp_dir dir("pefted");
  SECTION("plain keys") {
    hand_folder(dir.path, peft_config(), peft_tensors());
    const auto ck = io::read_peft_adalora(dir.path);
    REQUIRE(ck.modules.size() == 2);
    REQUIRE(ck.modules[0].name == "fc1");
    REQUIRE(ck.modules[0].rank() == 2);
    REQUIRE(ck.modules[0].in_features == 4);
    REQUIRE(ck.modules[0].out_features == 5);
    REQUIRE(ck.modules[1].rank() == 3);
    REQUIRE(ck.config.beta1 == 0.85);  // PEFT's default
    REQUIRE(*ck.modules[1].scaling == io::peft_adalora_scaling(6, 3));
    auto adapters = io::import_peft_adalora<eigen_backend>(dir.path);
    REQUIRE(adapters[0].second.rank() == 2);
    REQUIRE(adapters[0].second.init_r() == 3);
  }
  SECTION("keys with the adapter name, 1-D lora_E, pattern keys with the adapter name") {
    json c = peft_config();
    c["rank_pattern"] = {{"fc1.lora_E.default", {true, false, true}}};
    std::vector<hand_tensor> t = peft_tensors();
    for (auto& x : t) x.name += ".default";
    t[1].shape = {2};
    hand_folder(dir.path, c, t);
    const auto ck = io::read_peft_adalora(dir.path);
    REQUIRE(ck.modules[0].rank() == 2);
    REQUIRE(ck.modules[0].rank_pattern == std::vector<bool>{true, false, true});
    REQUIRE_FALSE(ck.modules[1].rank_pattern.has_value());
  }
  SECTION("a null total_step (older PEFT) and a regex target_modules") {
    json c = peft_config();
    c["total_step"] = nullptr;
    c["target_modules"] = ".*fc.*";
    hand_folder(dir.path, c, peft_tensors());
    const auto ck = io::read_peft_adalora(dir.path);
    REQUIRE(ck.config.total_step == 0);
    REQUIRE(ck.target_modules.empty());
  }
}

TEST_CASE("import: every malformed folder gives a format_error that says what is wrong", "[peft]") {
  temp_dir dir("bad");
  const fs::path d = dir.path / "adapter";
  auto expect = [&](const json& c, const std::vector<hand_tensor>& t, const std::string& message) {
    fs::remove_all(d);
    hand_folder(d, c, t);
    INFO("expected: " << message);
    REQUIRE_THROWS_MATCHES(io::read_peft_adalora(d), format_error, what_contains(message));
  };
  auto with = [](const char* key, json v) {
    json c = peft_config();
    c[key] = std::move(v);
    return c;
  };
  auto without = [](const std::string& name) {
    auto t = peft_tensors();
    t.erase(std::remove_if(t.begin(), t.end(), [&](const hand_tensor& x) { return x.name == name; }), t.end());
    return t;
  };
  auto reshaped = [](std::size_t i, std::vector<std::size_t> shape) {
    auto t = peft_tensors();
    t[i].shape = std::move(shape);
    return t;
  };
  auto plus = [](hand_tensor x) {
    auto t = peft_tensors();
    t.push_back(std::move(x));
    return t;
  };

  SECTION("folders and files") {
    REQUIRE_THROWS_MATCHES(io::read_peft_adalora(dir.path / "nowhere"), format_error, what_contains("no such folder"));
    hand_folder(d, peft_config(), peft_tensors());
    fs::remove(d / "adapter_model.safetensors");
    REQUIRE_THROWS_MATCHES(io::read_peft_adalora(d), format_error, what_contains("cannot open safetensors file"));
    fs::remove(d / "adapter_config.json");
    REQUIRE_THROWS_MATCHES(io::read_peft_adalora(d), format_error, what_contains("it has no adapter_config.json"));
    hand_folder(d, peft_config(), peft_tensors());
    write_text(d / "adapter_model.safetensors", "short");
    REQUIRE_THROWS_MATCHES(io::read_peft_adalora(d), format_error, what_contains("truncated"));
  }
  SECTION("the JSON") {
    hand_folder(d, peft_config(), peft_tensors());
    write_text(d / "adapter_config.json", "{\"peft_type\": \"ADALORA\", ");
    REQUIRE_THROWS_MATCHES(io::read_peft_adalora(d), format_error, what_contains("is not valid JSON"));
    write_text(d / "adapter_config.json", "[1, 2]");
    REQUIRE_THROWS_MATCHES(io::read_peft_adalora(d), format_error, what_contains("not a JSON object"));
  }
  SECTION("config fields") {
    json c = peft_config();
    c.erase("peft_type");
    expect(c, peft_tensors(), "has no \"peft_type\"");
    expect(with("peft_type", "LORA"), peft_tensors(), "peft_type is \"LORA\"; read_peft_adalora reads AdaLoRA");
    expect(with("peft_type", 3), peft_tensors(), "\"peft_type\" is number 3; expected a string");
    expect(with("init_r", "3"), peft_tensors(), "\"init_r\" is string \"3\"; expected an integer");
    expect(with("init_r", 2.5), peft_tensors(), "\"init_r\" is number 2.5; expected an integer");
    expect(with("init_r", 0), peft_tensors(), "init_r = 0; need init_r >= 1");
    expect(with("lora_alpha", "big"), peft_tensors(), "\"lora_alpha\" is string");
    expect(with("lora_dropout", 1.5), peft_tensors(), "lora_dropout = 1.5");
    expect(with("fan_in_fan_out", 1), peft_tensors(), "\"fan_in_fan_out\" is number 1; expected true or false");
    expect(with("bias", "all"), peft_tensors(), "bias is \"all\"; only \"none\"");
    expect(with("use_dora", true), peft_tensors(), "use_dora is true");
    expect(with("target_modules", 5), peft_tensors(), "target_modules is number 5");
    expect(with("target_modules", json{"fc1", 2}), peft_tensors(), "target_modules holds number 2");
    expect(with("target_modules", json::array({"fc1"})), peft_tensors(), "target_modules does not cover module 'fc2'");
  }
  SECTION("rank_pattern") {
    expect(with("rank_pattern", json{1, 2}), peft_tensors(), "rank_pattern is array");
    expect(with("rank_pattern", {{"fc1", {true, false, true}}}), peft_tensors(),
           "rank_pattern key \"fc1\" names no lora_E");
    expect(with("rank_pattern", {{"fc1.lora_E", 2}}), peft_tensors(), "rank_pattern[\"fc1.lora_E\"] is number 2");
    expect(with("rank_pattern", {{"fc1.lora_E", {1, 0, 1}}}), peft_tensors(), "expected a list of init_r = 3 booleans");
    expect(with("rank_pattern", {{"fc1.lora_E", {true, true}}}), peft_tensors(), "has 2 entries; expected init_r = 3");
    expect(with("rank_pattern", {{"fc1.lora_E", {true, true, true}}}), peft_tensors(),
           "rank_pattern keeps 3 of 3 components of module 'fc1', but its tensors have rank 2");
    expect(with("rank_pattern", {{"fc1.lora_E", {true, false, true}}, {"fc1.lora_E.default", {true, false, true}}}),
           peft_tensors(), "two entries for module 'fc1'");
    expect(with("rank_pattern", {{"fc1.lora_E", {true, false, true}}, {"fc3.lora_E", {true, false, true}}}),
           peft_tensors(), "entry for module 'fc3', which has no tensors");
    expect(with("rank_pattern", nullptr), peft_tensors(), "module 'fc1' has rank 2 < init_r = 3 but rank_pattern has");
  }
  SECTION("tensors") {
    expect(peft_config(), without("base_model.model.fc2.lora_E"), "module 'fc2' has no lora_E tensor");
    expect(peft_config(), without("base_model.model.fc1.lora_A"), "module 'fc1' has no lora_A tensor");
    expect(peft_config(), reshaped(0, {8}), "lora_A is not 2-D");
    expect(peft_config(), reshaped(5, {2, 3, 1}), "lora_B is not 2-D");
    expect(peft_config(), reshaped(1, {2, 2}), "lora_E is not (r, 1)");
    expect(peft_config(), reshaped(2, {5, 3}), "the ranks disagree");
    expect(peft_config(), reshaped(3, {3, 0}), "in and out must be > 0");
    expect(
        with("rank_pattern", {{"fc1.lora_E", {true, false, true}}}),
        [] {
          auto t = peft_tensors();
          t[3].shape = {4, 5};
          t[4].shape = {4, 1};
          t[5].shape = {2, 4};
          return t;
        }(),
        "module 'fc2' has rank 4, more than init_r = 3");
    expect(peft_config(), plus({"base_model.model.fc1.bias", {5}}),
           "tensor 'base_model.model.fc1.bias' is not an AdaLoRA");
    expect(peft_config(), plus({"fc3.lora_A", {2, 2}}), "does not start with \"base_model.model.\"");
    expect(peft_config(), plus({"base_model.model.fc3.lora_A.weight", {2, 2}}), "is a plain-LoRA tensor");
    expect(peft_config(), plus({"base_model.model.fc1.lora_A.default", {2, 4}}), "are the same tensor of module 'fc1'");
    expect(peft_config(), plus({"base_model.model.lora_A", {2, 4}}), "is not an AdaLoRA tensor");
    expect(peft_config(), {}, "holds no AdaLoRA tensor");
    auto mixed = peft_tensors();
    mixed[3].name += ".default";
    mixed[4].name += ".default";
    mixed[5].name += ".default";
    expect(peft_config(), mixed, "mixes tensor names with different adapter names");
  }
  SECTION("values") {
    hand_folder(d, peft_config(), peft_tensors());
    io::safetensors_writer w;
    for (const auto& t : peft_tensors()) {
      std::size_t n = 1;
      for (auto x : t.shape) n *= x;
      std::vector<float> v(n, 0.5f);
      if (t.name.ends_with("fc2.lora_B")) v[1] = std::numeric_limits<float>::quiet_NaN();
      w.add(t.name, t.shape, v);
    }
    w.write(d / "adapter_model.safetensors");
    REQUIRE_THROWS_MATCHES(io::read_peft_adalora(d), format_error, what_contains("module 'fc2': lora_B holds NaN"));
  }
}

TEST_CASE("export: misuse is refused before anything is written", "[peft]") {
  temp_dir dir("misuse");
  const fs::path d = dir.path / "out";
  const adalora_config cfg = test_config();  // init_r = 6
  auto mod = [](std::string name, std::size_t r) {
    return peft_svd_module{
        std::move(name), 3,           2, 0, normal_values(r * 3, 1), normal_values(r, 2), normal_values(2 * r, 3),
        std::nullopt,    std::nullopt};
  };
  auto write = [&](std::vector<peft_svd_module> mods, adalora_config c = test_config()) {
    io::write_peft_adalora(d, mods, c);
  };
  REQUIRE_THROWS_MATCHES(write({}), usage_error, what_contains("no modules to export"));
  REQUIRE_THROWS_MATCHES(write({mod("a", 6), mod("a", 6)}), usage_error, what_contains("module 'a' appears twice"));
  REQUIRE_THROWS_MATCHES(write({mod("a..b", 6)}), usage_error, what_contains("has an empty component"));
  REQUIRE_THROWS_MATCHES(write({mod("", 6)}), usage_error, what_contains("the name is empty"));
  REQUIRE_THROWS_MATCHES(write({mod("a b", 6)}), usage_error, what_contains("whitespace"));
  auto bad = mod("a", 6);
  bad.B.pop_back();
  REQUIRE_THROWS_MATCHES(write({bad}), shape_error, what_contains("A needs 18 values and B 12"));
  REQUIRE_THROWS_MATCHES(write({mod("a", 7)}), shape_error, what_contains("rank 7, more than init_r = 6"));
  bad = mod("a", 6);
  bad.rank_pattern = std::vector<bool>{true, false};
  REQUIRE_THROWS_MATCHES(write({bad}), shape_error, what_contains("the rank pattern has 2 entries"));
  bad = mod("a", 3);
  bad.rank_pattern = std::vector<bool>{true, false, false, false, false, true};
  REQUIRE_THROWS_MATCHES(write({bad}), shape_error, what_contains("has rank 3, but its rank pattern keeps 2"));
  bad = mod("a", 6);
  bad.init_r = 8;
  REQUIRE_THROWS_MATCHES(write({bad}), config_error, what_contains("init_r = 8, the config says 6"));
  bad = mod("a", 6);
  bad.scaling = 1.0f;
  REQUIRE_THROWS_MATCHES(write({bad}), config_error,
                         what_contains("has scaling 1.000000, but the config's lora_alpha"));
  bad = mod("a", 6);
  bad.E[2] = std::numeric_limits<float>::infinity();
  REQUIRE_THROWS_MATCHES(write({bad}), non_finite_error, what_contains("NaN or infinity (in E)"));
  adalora_config c = cfg;
  c.total_step = 0;
  REQUIRE_THROWS_MATCHES(write({mod("a", 6)}, c), config_error, what_contains("total_step"));
  auto zero = mod("a", 0);
  zero.rank_pattern = std::vector<bool>(6, false);
  const std::vector<peft_svd_module> zeros{zero};
  REQUIRE_THROWS_MATCHES(io::write_peft_lora(d, zeros, cfg), usage_error, what_contains("every module has rank 0"));
  REQUIRE_FALSE(fs::exists(d));  // nothing was written
  // a rank-0 module is fine for AdaLoRA (PEFT allows r = 0)
  io::write_peft_adalora(d, zeros, cfg);
  REQUIRE(io::read_peft_adalora(d).modules[0].rank() == 0);
}

TEST_CASE("a config with a number out of range is a format error (fuzzing regression)", "[peft][errors]") {
  const auto dir = std::filesystem::temp_directory_path() / "adalora-peft-overflow";
  std::filesystem::create_directories(dir);
  {
    adalora::io::safetensors_writer w;
    const std::vector<float> a(6, 0.5f), e(2, 1.0f), b(8, -0.25f);
    w.add("base_model.model.m.lora_A", {2, 3}, a);
    w.add("base_model.model.m.lora_E", {2, 1}, e);
    w.add("base_model.model.m.lora_B", {4, 2}, b);
    w.write(dir / "adapter_model.safetensors");
    std::ofstream(dir / "adapter_config.json") << R"({"peft_type": "ADALORA", "total_step": 3289e66666})";
  }
  REQUIRE_THROWS_AS(adalora::io::read_peft_adalora(dir), adalora::format_error);
  REQUIRE_THROWS_WITH(adalora::io::read_peft_adalora(dir), Catch::Contains("is not valid JSON"));
  std::filesystem::remove_all(dir);
}
