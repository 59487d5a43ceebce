// PEFT interop (SPEC §7): export SVD adapters as PEFT AdaLoRA or plain-LoRA adapter folders, import PEFT AdaLoRA ones.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "adalora/adapters/svd_adapter.hpp"
#include "adalora/backends/backend.hpp"
#include "adalora/core/checked_size.hpp"
#include "adalora/core/config.hpp"
#include "adalora/core/error.hpp"
#include "adalora/io/bounded_json.hpp"
#include "adalora/io/safetensors.hpp"

namespace adalora::io {

/// The two files of a PEFT adapter folder, as `save_pretrained` writes them.
inline constexpr std::string_view peft_weights_file = "adapter_model.safetensors";
inline constexpr std::string_view peft_config_file = "adapter_config.json";
/// The prefix of every tensor name: PEFT saves the state dict of `PeftModel.base_model` (a LoraModel wrapping `model`).
inline constexpr std::string_view peft_key_prefix = "base_model.model.";

/// PEFT's AdaLoRA scaling s = α / (init_r + 1e-5) in float32, with α ≤ 0 meaning α = init_r (SPEC §1); the same
/// expression svd_adapter uses, so the two compare exactly.
inline float peft_adalora_scaling(double lora_alpha, std::size_t init_r) noexcept {
  return adapter_scaling(lora_alpha, init_r);
}

/// One adapted module in host memory, in PEFT's layout (row-major): the lower-level form of an svd_adapter, and what
/// read_peft_adalora returns.
///
/// The module's rank r is E.size(). `rank_pattern`, when present, has init_r entries (keep[i] for the i-th component
/// of the adapter as created), and either r = init_r (the tensors are full and the export keeps the marked rows), or
/// r = Σ keep (the tensors already hold only the kept components, in order). Without a pattern every component of the
/// tensors is kept; if r < init_r, PEFT still needs one, and the export writes keep = [true × r, false × (init_r − r)].
struct peft_svd_module {
  std::string name;               ///< the module's path in the model, e.g. "model.layers.0.self_attn.q_proj"
  std::size_t in_features = 0;    ///< in
  std::size_t out_features = 0;   ///< out
  std::size_t init_r = 0;         ///< the rank its scaling is fixed at; 0 means the config's init_r
  std::vector<float> A;           ///< lora_A = Q, r × in
  std::vector<float> E;           ///< lora_E = λ, r
  std::vector<float> B;           ///< lora_B = P, out × r
  std::optional<std::vector<bool>> rank_pattern;  ///< keep[i], i < init_r; none: every component of the tensors kept
  std::optional<float> scaling;   ///< the adapter's s, when known: the export checks it against the config's

  std::size_t rank() const noexcept { return E.size(); }
};

/// The PeftConfig fields this library has no counterpart for. The defaults are what `save_pretrained` writes for a
/// custom (non-transformers) model.
struct peft_export_options {
  std::optional<std::string> base_model_name_or_path;  ///< e.g. a Hub id; null when not set
  std::optional<std::string> revision;                 ///< the base model's revision; null when not set
  std::optional<std::string> task_type;                ///< PEFT's TaskType ("CAUSAL_LM", ...); null: a plain PeftModel
  bool fan_in_fan_out = false;  ///< true when the base layers store W as (in, out) (GPT-2's Conv1D)
  bool inference_mode = true;   ///< save_pretrained always writes true
  dtype stored_as = dtype::f32; ///< PEFT saves float32; F16/BF16 halve the file (PEFT loads them as such)
};

/// Options of the plain-LoRA export.
struct peft_lora_export_options : peft_export_options {
  /// Pad every module with zero components to the largest kept rank R, so that r = lora_alpha = R everywhere and no
  /// rank_pattern/alpha_pattern is needed: for consumers that take the rank from each tensor's shape and α from the
  /// config alone (llama.cpp's convert_lora_to_gguf.py and runtime scale by α / rank of the tensor).
  bool uniform_rank = false;
};

/// What read_peft_adalora finds in a PEFT AdaLoRA folder.
struct peft_adalora_checkpoint {
  adalora_config config;                  ///< init_r, target_r, ..., lora_alpha, lora_dropout (not validated: see below)
  std::vector<peft_svd_module> modules;   ///< sorted by name; shrunk (rank Σ keep); init_r and scaling filled in
  std::vector<std::string> target_modules;  ///< as listed in the config (empty when it holds a regex string)
  std::optional<std::string> base_model_name_or_path;
  std::optional<std::string> revision;
  std::optional<std::string> task_type;
  bool fan_in_fan_out = false;
  bool inference_mode = true;
};

namespace detail {

using peft_json = nlohmann::json;

[[noreturn]] inline void peft_fail(const std::filesystem::path& dir, const std::string& what) {
  throw format_error("PEFT adapter '" + dir.string() + "': " + what);
}

/// A module path must be a dotted PyTorch path: non-empty components, no whitespace or control characters.
inline std::string peft_name_problem(std::string_view name) {
  if (name.empty()) return "is empty";
  if (name.front() == '.' || name.back() == '.' || name.find("..") != std::string_view::npos)
    return "has an empty component (a leading, trailing or doubled '.')";
  for (char c : name)
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) return "holds whitespace or a control character";
  return {};
}

/// JSON for lora_alpha, an int in PEFT: a whole number is written as one (`8`, as PEFT writes it, not `8.0`).
inline peft_json peft_number(double v) {
  if (std::isfinite(v) && v == std::trunc(v) && std::fabs(v) < 9.0e15) return static_cast<std::int64_t>(v);
  return v;
}

inline peft_json peft_optional_string(const std::optional<std::string>& s) {
  return s ? peft_json(*s) : peft_json(nullptr);
}

/// A module ready to be written: its full-length pattern and the tensors of its kept components.
struct peft_prepared_module {
  const peft_svd_module* source = nullptr;
  std::vector<bool> pattern;  // init_r entries
  std::size_t rank = 0;       // Σ pattern
  std::vector<float> A, E, B; // rank × in, rank, out × rank
};

/// Checks the config and the modules against each other and shrinks each module to its kept components. Throws
/// before anything is written: config_error, usage_error (names), shape_error (sizes, patterns), non_finite_error.
inline std::vector<peft_prepared_module> peft_prepare(std::span<const peft_svd_module> modules,
                                                      const adalora_config& config, const char* who) {
  const std::string fn = who;
  config.validate();  // PEFT refuses a config without total_step > 0 and tinit < total_step - tfinal
  if (config.init_r < 1)
    throw config_error(fn + ": init_r = " + std::to_string(config.init_r) + "; PEFT needs init_r >= 1");
  const auto init_r = static_cast<std::size_t>(config.init_r);
  const float s = peft_adalora_scaling(config.lora_alpha, init_r);
  if (modules.empty()) throw usage_error(fn + ": no modules to export");

  std::set<std::string_view> names;
  std::vector<peft_prepared_module> out;
  out.reserve(modules.size());
  for (const peft_svd_module& m : modules) {
    const std::string what = fn + ": module '" + m.name + "'";
    if (const std::string p = peft_name_problem(m.name); !p.empty()) throw usage_error(what + ": the name " + p);
    if (!names.insert(m.name).second) throw usage_error(what + " appears twice");
    if (m.init_r != 0 && m.init_r != init_r)
      throw config_error(what + " was created with init_r = " + std::to_string(m.init_r) + ", the config says " +
                         std::to_string(init_r) + "; PEFT has one init_r for all modules");
    if (m.scaling && !(std::fabs(*m.scaling - s) <= 1e-6f * std::fabs(s)))
      throw config_error(what + " has scaling " + std::to_string(*m.scaling) + ", but the config's lora_alpha = " +
                         std::to_string(config.lora_alpha) + " and init_r = " + std::to_string(init_r) +
                         " give " + std::to_string(s) + "; export with the config the adapters were built with");
    const std::size_t r = m.rank(), in = m.in_features, outf = m.out_features;
    if (in == 0 || outf == 0)
      throw shape_error(what + ": in_features and out_features must be > 0, got " + std::to_string(in) + " and " +
                        std::to_string(outf));
    const auto a_size = checked_mul(r, in), b_size = checked_mul(outf, r);
    if (!a_size || !b_size)
      throw shape_error(what + ": in " + std::to_string(in) + ", out " + std::to_string(outf) + " and rank " +
                        std::to_string(r) + " give tensor sizes that overflow");
    if (m.A.size() != *a_size || m.B.size() != *b_size)
      throw shape_error(what + ": with rank " + std::to_string(r) + " (E has " + std::to_string(r) + " values), in " +
                        std::to_string(in) + " and out " + std::to_string(outf) + ", A needs " + std::to_string(*a_size) +
                        " values and B " + std::to_string(*b_size) + "; got " + std::to_string(m.A.size()) + " and " +
                        std::to_string(m.B.size()));
    if (r > init_r)
      throw shape_error(what + " has rank " + std::to_string(r) + ", more than init_r = " + std::to_string(init_r));
    for (const auto* v : {&m.A, &m.E, &m.B})
      if (std::any_of(v->begin(), v->end(), [](float x) { return !std::isfinite(x); }))
        throw non_finite_error(what + " holds NaN or infinity (in " + (v == &m.A ? "A" : v == &m.E ? "E" : "B") +
                               "); the adapter seems broken");

    peft_prepared_module p;
    p.source = &m;
    if (m.rank_pattern) {
      p.pattern = *m.rank_pattern;
      if (p.pattern.size() != init_r)
        throw shape_error(what + ": the rank pattern has " + std::to_string(p.pattern.size()) +
                          " entries; PEFT needs init_r = " + std::to_string(init_r));
    } else {
      p.pattern.assign(init_r, false);
      std::fill_n(p.pattern.begin(), r, true);
    }
    p.rank = static_cast<std::size_t>(std::count(p.pattern.begin(), p.pattern.end(), true));
    if (r == init_r && p.rank != r) {  // full tensors: keep the marked components
      for (std::size_t i = 0; i < r; ++i) {
        if (!p.pattern[i]) continue;
        p.A.insert(p.A.end(), m.A.begin() + static_cast<std::ptrdiff_t>(i * in),
                   m.A.begin() + static_cast<std::ptrdiff_t>((i + 1) * in));
        p.E.push_back(m.E[i]);
      }
      p.B.reserve(outf * p.rank);
      for (std::size_t o = 0; o < outf; ++o)
        for (std::size_t i = 0; i < r; ++i)
          if (p.pattern[i]) p.B.push_back(m.B[o * r + i]);
    } else if (p.rank == r) {  // the tensors hold exactly the kept components
      p.A = m.A;
      p.E = m.E;
      p.B = m.B;
    } else {
      throw shape_error(what + " has rank " + std::to_string(r) + ", but its rank pattern keeps " +
                        std::to_string(p.rank) + " of init_r = " + std::to_string(init_r) +
                        " components; give full tensors (rank init_r) or only the kept ones");
    }
    out.push_back(std::move(p));
  }
  return out;
}

/// The PeftConfig and LoraConfig fields both exports write (a subset PEFT has had for long, so that older versions,
/// which reject unknown fields, load it too; every field left out has PEFT's default).
inline peft_json peft_common_config(std::span<const peft_prepared_module> kept, const adalora_config& c,
                                    const peft_export_options& o) {
  peft_json j = peft_json::object();
  j["base_model_name_or_path"] = peft_optional_string(o.base_model_name_or_path);
  j["revision"] = peft_optional_string(o.revision);
  j["task_type"] = peft_optional_string(o.task_type);
  j["inference_mode"] = o.inference_mode;
  peft_json targets = peft_json::array();
  for (const auto& m : kept) targets.push_back(m.source->name);
  j["target_modules"] = std::move(targets);
  j["lora_dropout"] = c.lora_dropout;
  j["fan_in_fan_out"] = o.fan_in_fan_out;
  j["bias"] = "none";
  j["modules_to_save"] = nullptr;
  j["init_lora_weights"] = true;
  j["layers_to_transform"] = nullptr;
  j["layers_pattern"] = nullptr;
  j["use_rslora"] = false;
  j["use_dora"] = false;
  return j;
}

/// Pattern keys ordered longest first: PEFT's LoRA takes the first key that matches a module path as a suffix, so a
/// module whose path ends with another exported path must be looked up before it.
inline std::vector<const peft_prepared_module*> peft_longest_first(std::span<const peft_prepared_module> kept) {
  std::vector<const peft_prepared_module*> v;
  for (const auto& m : kept) v.push_back(&m);
  std::stable_sort(v.begin(), v.end(), [](const auto* a, const auto* b) {
    return a->source->name.size() > b->source->name.size();
  });
  return v;
}

/// Writes the config with its keys sorted (as PEFT's json.dumps(sort_keys=True)); `ordered` entries keep the order of
/// their own members.
/// Appends a member to an ordered_json object whose keys the caller knows to be new, in O(1): ordered_json's own
/// insertion searches the keys one by one, which made writing the patterns of n modules O(n²).
inline void peft_append(nlohmann::ordered_json& object, std::string key, nlohmann::ordered_json value) {
  object.get_ref<nlohmann::ordered_json::object_t&>().emplace_back(std::move(key), std::move(value));
}

/// The same value as an ordered_json, in linear time (a json object's keys are sorted and unique already).
inline nlohmann::ordered_json peft_ordered(const peft_json& v) {
  if (v.is_object()) {
    nlohmann::ordered_json o = nlohmann::ordered_json::object();
    for (auto it = v.begin(); it != v.end(); ++it) peft_append(o, it.key(), peft_ordered(it.value()));
    return o;
  }
  if (v.is_array()) {
    nlohmann::ordered_json a = nlohmann::ordered_json::array();
    for (const auto& e : v) a.push_back(peft_ordered(e));
    return a;
  }
  return nlohmann::ordered_json::parse(v.dump());  // a scalar
}

inline void peft_write_config(const std::filesystem::path& dir, const peft_json& j, const std::string& who,
                              std::map<std::string, nlohmann::ordered_json> ordered = {}) {
  for (auto it = j.begin(); it != j.end(); ++it) ordered.try_emplace(it.key(), peft_ordered(it.value()));
  nlohmann::ordered_json all = nlohmann::ordered_json::object();
  for (auto& [k, v] : ordered) peft_append(all, k, std::move(v));  // std::map: sorted keys
  const std::filesystem::path path = dir / peft_config_file;
  std::ofstream out(path, std::ios::trunc);
  out << all.dump(2) << '\n';
  out.close();
  if (!out) throw error(who + ": cannot write '" + path.string() + "'");
}

inline void peft_make_dir(const std::filesystem::path& dir, const std::string& who) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec || !std::filesystem::is_directory(dir))
    throw error(who + ": cannot create the folder '" + dir.string() + "'" + (ec ? ": " + ec.message() : ""));
}

// ---- reading helpers --------------------------------------------------------------------------------------------

class peft_config_reader {
public:
  peft_config_reader(const peft_json& j, std::filesystem::path dir) : j_(j), dir_(std::move(dir)) {}

  [[noreturn]] void fail(const std::string& what) const {
    peft_fail(dir_, std::string(peft_config_file) + ": " + what);
  }

  const peft_json* find(const char* key) const { return json_find(j_, key); }

  /// How a field is named in messages: "PEFT adapter 'dir': adapter_config.json: \"key\"".
  std::string what(const char* key) const {
    return "PEFT adapter '" + dir_.string() + "': " + std::string(peft_config_file) + ": \"" + key + "\"";
  }

  std::int64_t integer(const char* key, std::int64_t fallback, bool null_ok = false) const {
    const peft_json* v = find(key);
    if (v == nullptr || (null_ok && v->is_null())) return fallback;
    return json_int(*v, what(key));
  }

  double number(const char* key, double fallback) const {
    const peft_json* v = find(key);
    return v == nullptr ? fallback : json_number(*v, what(key));
  }

  bool boolean(const char* key, bool fallback) const {
    const peft_json* v = find(key);
    return v == nullptr ? fallback : json_bool(*v, what(key));
  }

  std::optional<std::string> string(const char* key) const {
    const peft_json* v = find(key);
    if (v == nullptr || v->is_null()) return std::nullopt;
    if (v->is_string()) return v->get<std::string>();
    fail(std::string("\"") + key + "\" is " + describe(*v) + "; expected a string or null");
  }

  static std::string describe(const peft_json& v) { return describe_json(v); }

private:
  const peft_json& j_;
  std::filesystem::path dir_;
};

inline std::string peft_read_text(const std::filesystem::path& dir, std::string_view file) {
  const std::filesystem::path path = dir / file;
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) peft_fail(dir, "there is no such folder");
  if (!std::filesystem::is_regular_file(path, ec))
    peft_fail(dir, "it has no " + std::string(file) + " (a PEFT adapter folder holds " +
                       std::string(peft_config_file) + " and " + std::string(peft_weights_file) + ")");
  const auto size = std::filesystem::file_size(path, ec);
  if (ec) peft_fail(dir, "cannot read " + std::string(file) + ": " + ec.message());
  if (size > max_header_bytes) peft_fail(dir, std::string(file) + " has " + std::to_string(size) + " bytes; too large");
  std::ifstream in(path, std::ios::binary);
  std::string text(static_cast<std::size_t>(size), '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  if (!in) peft_fail(dir, "cannot read " + std::string(file));
  return text;
}

/// The module a rank_pattern key names: "<module>.lora_E" (as PEFT saves it) or "<module>.lora_E.<adapter>" (as its
/// RankAllocator keeps it in memory); nullopt for anything else.
inline std::optional<std::string> peft_pattern_module(const std::string& key) {
  constexpr std::string_view tail = ".lora_E";
  if (key.size() > tail.size() && key.ends_with(tail)) return key.substr(0, key.size() - tail.size());
  const auto pos = key.rfind(".lora_E.");
  if (pos != std::string::npos && pos > 0 && key.find('.', pos + tail.size() + 1) == std::string::npos &&
      pos + tail.size() + 1 < key.size())
    return key.substr(0, pos);
  return std::nullopt;
}

/// True when PEFT would wrap the module `name` for one of these targets: a full match, or a match of its last
/// components. O(components of name × log targets), so that matching n modules against n targets is not quadratic.
inline bool peft_target_matches(std::string_view name, const std::set<std::string, std::less<>>& targets) {
  for (std::size_t from = 0;;) {
    if (targets.find(name.substr(from)) != targets.end()) return true;
    const auto dot = name.find('.', from);
    if (dot == std::string_view::npos) return false;
    from = dot + 1;
  }
}

/// The adapter_config.json fields read_peft_adalora reads; the others are not kept.
inline constexpr std::string_view peft_adalora_field_names[] = {
    "peft_type",   "init_r",     "target_r",        "tinit",          "tfinal",  "deltaT",    "beta1",
    "beta2",       "orth_reg_weight", "total_step", "lora_alpha",     "lora_dropout", "base_model_name_or_path",
    "revision",    "task_type",  "fan_in_fan_out",  "inference_mode", "bias",    "use_dora",  "target_modules",
    "rank_pattern"};
inline constexpr std::span<const std::string_view> peft_adalora_fields{peft_adalora_field_names};

}  // namespace detail

// ---- conversion ---------------------------------------------------------------------------------------------------

/// A host copy of an svd_adapter as a module named `name` (its tensors at its current rank, its init_r and scaling),
/// with an optional rank pattern (e.g. rank_allocator::rank_pattern(name), init_r entries).
template <Backend B>
peft_svd_module to_peft_module(std::string name, const svd_adapter<B>& adapter,
                               std::optional<std::vector<bool>> rank_pattern = std::nullopt) {
  // lora_A()/lora_E()/lora_B() only make views; nothing is modified through them.
  auto& a = const_cast<svd_adapter<B>&>(adapter);
  const std::size_t r = a.rank(), in = a.in_features(), out = a.out_features();
  peft_svd_module m;
  m.name = std::move(name);
  m.in_features = in;
  m.out_features = out;
  m.init_r = a.init_r();
  m.A.resize(r * in);
  m.E.resize(r);
  m.B.resize(out * r);
  if (r != 0) {
    a.backend().copy_to_host(static_cast<const float*>(a.lora_A().data), m.A.size(), m.A.data());
    a.backend().copy_to_host(static_cast<const float*>(a.lora_E().data), m.E.size(), m.E.data());
    a.backend().copy_to_host(static_cast<const float*>(a.lora_B().data), m.B.size(), m.B.data());
  }
  m.rank_pattern = std::move(rank_pattern);
  m.scaling = a.scaling();
  return m;
}

/// An svd_adapter holding a module's tensors at the module's rank, with the config's lora_alpha, lora_dropout and
/// init_r (module.init_r when set), so its scaling is α/(init_r + 1e-5) whatever the rank. Dropout applies in training
/// mode (the default); call train(false) for inference.
template <Backend B>
svd_adapter<B> to_svd_adapter(const peft_svd_module& m, const adalora_config& config, B backend = B{}) {
  adapter_options o;
  o.lora_alpha = config.lora_alpha;
  o.lora_dropout = config.lora_dropout;
  o.init_r = m.init_r != 0 ? m.init_r : static_cast<std::size_t>(std::max<std::int64_t>(config.init_r, 0));
  if (o.init_r == 0) throw config_error("to_svd_adapter(): module '" + m.name + "': init_r is 0");
  svd_adapter<B> a(m.in_features, m.out_features, m.rank(), o, std::move(backend));
  a.load(m.A, m.E, m.B);
  return a;
}

// ---- export -------------------------------------------------------------------------------------------------------

/// Writes `dir`/adapter_model.safetensors and `dir`/adapter_config.json as PEFT saves an AdaLoRA adapter (SPEC §7), so
/// that `PeftModel.from_pretrained(model, dir)` rebuilds the same adapters:
/// - tensors `base_model.model.<module>.lora_A` (r_k, in), `.lora_E` (r_k, 1), `.lora_B` (out, r_k), shrunk to the
///   kept components (r_k may be 0), no `.weight` suffix and no adapter name, float32 unless options say otherwise;
/// - the config with `"peft_type": "ADALORA"`, the adalora_config fields, `target_modules` = the module names, and
///   `rank_pattern` = {"<module>.lora_E": [bool × init_r]} for every module, or null when every module keeps all
///   init_r components. PEFT creates each module at init_r, then shrinks it to Σ keep, keeping s = α/(init_r + 1e-5).
/// A lora_alpha ≤ 0 is written as init_r (PEFT would take the shrunk rank instead of init_r after resizing).
/// Checks everything before writing anything: config_error (invalid config, a module whose init_r or scaling
/// disagrees with it), usage_error (no modules, a bad or repeated name), shape_error (sizes, rank patterns),
/// non_finite_error (NaN/inf in a tensor); adalora::error if the folder or a file cannot be written.
///
/// PEFT matches each target as a suffix of module paths; and, with the default adapter name, a module whose path
/// contains "default" confuses PEFT's rank_pattern loader (it strips one more component): avoid such names.
inline void write_peft_adalora(const std::filesystem::path& dir, std::span<const peft_svd_module> modules,
                               const adalora_config& config, const peft_export_options& options = {}) {
  const std::string who = "write_peft_adalora()";
  const auto prepared = detail::peft_prepare(modules, config, who.c_str());
  const auto init_r = static_cast<std::size_t>(config.init_r);

  safetensors_writer w;
  w.add_metadata("format", "pt");
  for (const auto& m : prepared) {
    const std::string key = std::string(peft_key_prefix) + m.source->name;
    w.add(key + ".lora_A", {m.rank, m.source->in_features}, m.A, options.stored_as);
    w.add(key + ".lora_B", {m.source->out_features, m.rank}, m.B, options.stored_as);
    w.add(key + ".lora_E", {m.rank, 1}, m.E, options.stored_as);
  }

  detail::peft_json j = detail::peft_common_config(prepared, config, options);
  j["peft_type"] = "ADALORA";
  j["r"] = 8;  // LoraConfig's default: AdaLoRA ignores r and warns when it is anything else
  j["lora_alpha"] = detail::peft_number(config.lora_alpha > 0.0 ? config.lora_alpha : static_cast<double>(init_r));
  j["alpha_pattern"] = detail::peft_json::object();
  j["init_r"] = config.init_r;
  j["target_r"] = config.target_r;
  j["tinit"] = config.tinit;
  j["tfinal"] = config.tfinal;
  j["deltaT"] = config.deltaT;
  j["beta1"] = config.beta1;
  j["beta2"] = config.beta2;
  j["orth_reg_weight"] = config.orth_reg_weight;
  j["total_step"] = config.total_step;
  const bool all_full = std::all_of(prepared.begin(), prepared.end(), [&](const auto& m) { return m.rank == init_r; });
  if (all_full) {
    j["rank_pattern"] = nullptr;
  } else {
    detail::peft_json pattern = detail::peft_json::object();
    for (const auto& m : prepared) {
      detail::peft_json keep = detail::peft_json::array();
      for (bool k : m.pattern) keep.push_back(k);
      pattern[m.source->name + ".lora_E"] = std::move(keep);
    }
    j["rank_pattern"] = std::move(pattern);
  }

  detail::peft_make_dir(dir, who);
  w.write(dir / peft_weights_file);
  detail::peft_write_config(dir, j, who);
}

/// The same for owning adapters: each is copied to the host with its rank pattern (see to_peft_module).
template <Backend B>
void write_peft_adalora(const std::filesystem::path& dir,
                        const std::vector<std::pair<std::string, const svd_adapter<B>*>>& adapters,
                        const std::map<std::string, std::vector<bool>>& rank_patterns, const adalora_config& config,
                        const peft_export_options& options = {}) {
  std::vector<peft_svd_module> modules;
  std::set<std::string> used;
  for (const auto& [name, adapter] : adapters) {
    if (adapter == nullptr) throw usage_error("write_peft_adalora(): module '" + name + "' has a null adapter");
    const auto it = rank_patterns.find(name);
    if (it != rank_patterns.end()) used.insert(name);
    modules.push_back(to_peft_module(name, *adapter,
                                     it == rank_patterns.end() ? std::nullopt : std::optional(it->second)));
  }
  for (const auto& [name, keep] : rank_patterns)
    if (used.count(name) == 0)
      throw usage_error("write_peft_adalora(): a rank pattern is given for '" + name + "', which is no module");
  write_peft_adalora(dir, modules, config, options);
}

/// Writes a plain-LoRA adapter folder (SPEC §7, last paragraph) for consumers that cannot read lora_E (PEFT's LoRA,
/// llama.cpp's convert_lora_to_gguf.py, vLLM): per module, A' = s·diag(λ)·Q over the kept components (r_k, in) and
/// B = P (out, r_k), as `base_model.model.<module>.lora_A.weight` / `.lora_B.weight`, so that ΔW = B A' = s P Λ Q.
/// The config says `"peft_type": "LORA"`, r = lora_alpha = R (the largest kept rank) and, per module,
/// rank_pattern[m] = alpha_pattern[m] = r_k: every reader's scaling is 1 (PEFT: alpha_pattern/rank_pattern; vLLM,
/// which ignores the patterns: lora_alpha/r). With options.uniform_rank every module is padded with zero components
/// to rank R and no pattern is written (for llama.cpp, which scales by lora_alpha / the tensor's rank).
/// Modules that keep no component (r_k = 0) add nothing to ΔW and are left out, of the tensors and of
/// target_modules (PEFT's LoRA refuses r = 0): such a module stays the plain base layer. usage_error if every
/// module has rank 0; otherwise the errors of write_peft_adalora.
inline void write_peft_lora(const std::filesystem::path& dir, std::span<const peft_svd_module> modules,
                            const adalora_config& config, const peft_lora_export_options& options = {}) {
  const std::string who = "write_peft_lora()";
  const auto prepared = detail::peft_prepare(modules, config, who.c_str());
  const float s = peft_adalora_scaling(config.lora_alpha, static_cast<std::size_t>(config.init_r));

  std::vector<detail::peft_prepared_module> kept;
  std::size_t R = 0;
  for (const auto& m : prepared)
    if (m.rank > 0) {
      kept.push_back(m);
      R = std::max(R, m.rank);
    }
  if (kept.empty())
    throw usage_error(who + ": every module has rank 0, so the LoRA adapter would be empty (PEFT's LoRA needs r >= 1)");

  safetensors_writer w;
  w.add_metadata("format", "pt");
  for (const auto& m : kept) {
    const std::size_t in = m.source->in_features, out = m.source->out_features;
    const std::size_t rw = options.uniform_rank ? R : m.rank;
    std::vector<float> A(rw * in, 0.0f), Bm(out * rw, 0.0f);
    for (std::size_t i = 0; i < m.rank; ++i) {
      const double f = static_cast<double>(s) * static_cast<double>(m.E[i]);  // s·λ_i, rounded once per element
      for (std::size_t c = 0; c < in; ++c) A[i * in + c] = static_cast<float>(f * static_cast<double>(m.A[i * in + c]));
    }
    for (std::size_t o = 0; o < out; ++o)
      for (std::size_t i = 0; i < m.rank; ++i) Bm[o * rw + i] = m.B[o * m.rank + i];
    const std::string key = std::string(peft_key_prefix) + m.source->name;
    w.add(key + ".lora_A.weight", {rw, in}, A, options.stored_as);
    w.add(key + ".lora_B.weight", {out, rw}, Bm, options.stored_as);
  }

  detail::peft_json j = detail::peft_common_config(kept, config, options);
  j["peft_type"] = "LORA";
  j["r"] = R;
  j["lora_alpha"] = R;
  // PEFT's LoRA takes the first pattern key matching a module path as a suffix: written longest first.
  nlohmann::ordered_json ranks = nlohmann::ordered_json::object(), alphas = nlohmann::ordered_json::object();
  if (!options.uniform_rank)
    for (const auto* m : detail::peft_longest_first(kept)) {  // module names are unique (peft_prepare)
      detail::peft_append(ranks, m->source->name, m->rank);
      detail::peft_append(alphas, m->source->name, m->rank);
    }

  detail::peft_make_dir(dir, who);
  w.write(dir / peft_weights_file);
  detail::peft_write_config(dir, j, who, {{"rank_pattern", std::move(ranks)}, {"alpha_pattern", std::move(alphas)}});
}

// ---- import -------------------------------------------------------------------------------------------------------

/// Reads a PEFT AdaLoRA adapter folder: ours, or one PEFT's `save_pretrained` wrote. Accepts tensor names with or
/// without the adapter name (`...lora_A` or `...lora_A.default`), lora_E as (r, 1) or (r), F32/F16/BF16, and
/// rank_pattern keys `<module>.lora_E` or `<module>.lora_E.<adapter>`. Each module comes back at its saved rank
/// r_k = Σ keep, with init_r and scaling α/(init_r + 1e-5) from the config. Fields missing from the config take
/// PEFT's defaults; the training fields (total_step, tinit, ...) are returned as found, not validated (call
/// config.validate() before resuming training).
/// Throws format_error, naming the folder and what is wrong, for: a missing folder or file, a malformed safetensors
/// file, bad JSON, a config that is not an object or has a field of the wrong type, a peft_type other than
/// "ADALORA", init_r < 1, bias other than "none", DoRA, a tensor that is not lora_A/lora_E/lora_B of a module (or
/// lacks the "base_model.model." prefix), a module missing one of its three tensors, tensors of disagreeing shapes
/// or holding NaN/inf, a rank above init_r, a rank_pattern entry of the wrong form or length, naming no module, or
/// keeping a different number of components than the tensors have, a module of rank below init_r without a
/// rank_pattern entry, and a module that target_modules (a list) does not cover.
inline peft_adalora_checkpoint read_peft_adalora(const std::filesystem::path& dir) {
  using detail::clip_text;
  using detail::peft_fail;
  using detail::peft_json;
  const std::string text = detail::peft_read_text(dir, peft_config_file);
  // only the fields read below are kept: a config's other fields, however large, cost no memory
  const peft_json j = parse_json(text, "PEFT adapter '" + dir.string() + "': " + std::string(peft_config_file),
                                 detail::peft_adalora_fields);
  detail::peft_config_reader cfg(j, dir);
  if (!j.is_object()) cfg.fail("it is " + detail::peft_config_reader::describe(j) + ", not a JSON object");

  const auto peft_type = cfg.string("peft_type");
  if (!peft_type) cfg.fail("it has no \"peft_type\"; expected \"ADALORA\"");
  if (*peft_type != "ADALORA")
    cfg.fail("peft_type is \"" + clip_text(*peft_type) + "\"; read_peft_adalora reads AdaLoRA adapters (\"ADALORA\") only" +
             (*peft_type == "LORA" ? " (a plain LoRA adapter has no lora_E)" : ""));

  peft_adalora_checkpoint out;
  adalora_config& c = out.config;
  c.init_r = cfg.integer("init_r", c.init_r);
  c.target_r = cfg.integer("target_r", c.target_r);
  c.tinit = cfg.integer("tinit", c.tinit);
  c.tfinal = cfg.integer("tfinal", c.tfinal);
  c.deltaT = cfg.integer("deltaT", c.deltaT);
  c.beta1 = cfg.number("beta1", c.beta1);
  c.beta2 = cfg.number("beta2", c.beta2);
  c.orth_reg_weight = cfg.number("orth_reg_weight", c.orth_reg_weight);
  c.total_step = cfg.integer("total_step", 0, true);
  c.lora_alpha = cfg.number("lora_alpha", c.lora_alpha);
  c.lora_dropout = cfg.number("lora_dropout", c.lora_dropout);
  out.base_model_name_or_path = cfg.string("base_model_name_or_path");
  out.revision = cfg.string("revision");
  out.task_type = cfg.string("task_type");
  out.fan_in_fan_out = cfg.boolean("fan_in_fan_out", false);
  out.inference_mode = cfg.boolean("inference_mode", false);
  if (c.init_r < 1) cfg.fail("init_r = " + std::to_string(c.init_r) + "; need init_r >= 1");
  if (!(c.lora_dropout >= 0.0 && c.lora_dropout < 1.0))
    cfg.fail("lora_dropout = " + std::to_string(c.lora_dropout) + "; need 0 <= lora_dropout < 1");
  if (!std::isfinite(peft_adalora_scaling(c.lora_alpha, static_cast<std::size_t>(c.init_r))))
    cfg.fail("lora_alpha = " + short_number(c.lora_alpha) + " makes the scaling lora_alpha / (init_r + 1e-5) "
             "infinite in float32; PEFT's adapters would output NaN or infinity");
  if (const auto bias = cfg.string("bias"); bias && *bias != "none")
    cfg.fail("bias is \"" + clip_text(*bias) + "\"; only \"none\" is supported (the adapters train no bias)");
  if (cfg.boolean("use_dora", false)) cfg.fail("use_dora is true; AdaLoRA has no DoRA");
  const auto init_r = static_cast<std::size_t>(c.init_r);

  bool target_list = false;
  if (const peft_json* t = cfg.find("target_modules"); t != nullptr && !t->is_null()) {
    if (t->is_array()) {
      target_list = true;
      for (const auto& e : *t) {
        if (!e.is_string())
          cfg.fail("target_modules holds " + detail::peft_config_reader::describe(e) + "; expected module names");
        out.target_modules.push_back(e.get<std::string>());
      }
    } else if (!t->is_string()) {
      cfg.fail("target_modules is " + detail::peft_config_reader::describe(*t) +
               "; expected a list of module names or a regex string");
    }
  }

  const std::set<std::string, std::less<>> targets(out.target_modules.begin(), out.target_modules.end());

  std::map<std::string, std::vector<bool>> patterns;
  if (const peft_json* rp = cfg.find("rank_pattern"); rp != nullptr && !rp->is_null()) {
    if (!rp->is_object())
      cfg.fail("rank_pattern is " + detail::peft_config_reader::describe(*rp) +
               "; expected null or {\"<module>.lora_E\": [bool, ...]}");
    for (auto it = rp->begin(); it != rp->end(); ++it) {
      const auto module = detail::peft_pattern_module(it.key());
      if (!module)
        cfg.fail("rank_pattern key \"" + clip_text(it.key()) + "\" names no lora_E; expected \"<module>.lora_E\"");
      const peft_json& v = it.value();
      if (!v.is_array() || !std::all_of(v.begin(), v.end(), [](const peft_json& b) { return b.is_boolean(); }))
        cfg.fail("rank_pattern[\"" + clip_text(it.key()) + "\"] is " + detail::peft_config_reader::describe(v) +
                 "; expected a list of init_r = " + std::to_string(init_r) + " booleans");
      if (v.size() != init_r)
        cfg.fail("rank_pattern[\"" + clip_text(it.key()) + "\"] has " + std::to_string(v.size()) +
                 " entries; expected init_r = " + std::to_string(init_r));
      std::vector<bool> keep;
      for (const auto& b : v) keep.push_back(b.get<bool>());
      if (!patterns.emplace(*module, std::move(keep)).second)
        cfg.fail("rank_pattern has two entries for module '" + *module + "'");
    }
  }

  const safetensors_file file = safetensors_file::open(dir / peft_weights_file);
  struct found {
    const tensor_info* t[3] = {nullptr, nullptr, nullptr};  // lora_A, lora_E, lora_B
  };
  std::map<std::string, found> modules;
  std::set<std::string> adapter_names;  // "" for names without one
  for (const tensor_info& t : file.tensors()) {
    const std::string& key = t.name;
    const std::string where = std::string(peft_weights_file) + ": tensor '" + key + "'";
    if (!key.starts_with(peft_key_prefix))
      peft_fail(dir, where + " does not start with \"" + std::string(peft_key_prefix) + "\"");
    std::string rest = key.substr(peft_key_prefix.size());
    std::string adapter;
    auto role_of = [](std::string_view s) -> int {
      return s == "lora_A" ? 0 : s == "lora_E" ? 1 : s == "lora_B" ? 2 : -1;
    };
    auto last_dot = rest.rfind('.');
    int role = last_dot == std::string::npos ? -1 : role_of(std::string_view(rest).substr(last_dot + 1));
    if (role < 0 && last_dot != std::string::npos) {  // "<module>.lora_X.<adapter>"
      const auto prev = rest.rfind('.', last_dot - 1);
      if (prev != std::string::npos && last_dot > 0) {
        const int r2 = role_of(std::string_view(rest).substr(prev + 1, last_dot - prev - 1));
        const std::string suffix = rest.substr(last_dot + 1);
        if (r2 >= 0 && suffix == "weight")
          peft_fail(dir, where + " is a plain-LoRA tensor (lora_A.weight / lora_B.weight), not an AdaLoRA one");
        if (r2 >= 0) {
          role = r2;
          adapter = suffix;
          last_dot = prev;
        }
      }
    }
    if (role < 0)
      peft_fail(dir, where + " is not an AdaLoRA tensor (expected \"" + std::string(peft_key_prefix) +
                         "<module>.lora_A\", \".lora_E\" or \".lora_B\")");
    const std::string module = rest.substr(0, last_dot);
    if (const std::string p = detail::peft_name_problem(module); !p.empty())
      peft_fail(dir, where + ": its module name " + p);
    adapter_names.insert(adapter);
    const tensor_info*& slot = modules[module].t[role];
    if (slot != nullptr)
      peft_fail(dir, where + " and tensor '" + slot->name + "' are the same tensor of module '" + module + "'");
    slot = &t;
  }
  if (adapter_names.size() > 1)
    peft_fail(dir, std::string(peft_weights_file) +
                       " mixes tensor names with different adapter names (or with and without one)");
  if (modules.empty()) peft_fail(dir, std::string(peft_weights_file) + " holds no AdaLoRA tensor");

  for (const auto& [name, keep] : patterns)
    if (modules.count(name) == 0)
      cfg.fail("rank_pattern has an entry for module '" + name + "', which has no tensors in " +
               std::string(peft_weights_file));

  const float s = peft_adalora_scaling(c.lora_alpha, init_r);
  for (const auto& entry : modules) {
    const std::string& name = entry.first;  // not a structured binding: clang 14 cannot capture those
    const auto& f = entry.second;
    const std::string what = "module '" + name + "'";
    static constexpr const char* roles[3] = {"lora_A", "lora_E", "lora_B"};
    std::string missing;
    for (int k = 0; k < 3; ++k)
      if (f.t[k] == nullptr) missing += std::string(missing.empty() ? "" : " and ") + roles[k];
    if (!missing.empty()) peft_fail(dir, what + " has no " + missing + " tensor in " + std::string(peft_weights_file));
    const tensor_info &tA = *f.t[0], &tE = *f.t[1], &tB = *f.t[2];
    auto shape_fail = [&](const std::string& detail_text) {
      peft_fail(dir, what + ": lora_A " + io::detail::shape_string(tA.shape) + ", lora_E " +
                         io::detail::shape_string(tE.shape) + ", lora_B " + io::detail::shape_string(tB.shape) + ": " +
                         detail_text + " (expected lora_A (r, in), lora_E (r, 1), lora_B (out, r))");
    };
    if (tA.shape.size() != 2) shape_fail("lora_A is not 2-D");
    if (tB.shape.size() != 2) shape_fail("lora_B is not 2-D");
    if (!(tE.shape.size() == 1 || (tE.shape.size() == 2 && tE.shape[1] == 1))) shape_fail("lora_E is not (r, 1)");
    const std::size_t r = tE.shape[0], in = tA.shape[1], outf = tB.shape[0];
    if (tA.shape[0] != r || tB.shape[1] != r) shape_fail("the ranks disagree");
    if (in == 0 || outf == 0) shape_fail("in and out must be > 0");
    if (r > init_r)
      peft_fail(dir, what + " has rank " + std::to_string(r) + ", more than init_r = " + std::to_string(init_r));
    if (target_list && !detail::peft_target_matches(name, targets))
      cfg.fail("target_modules does not cover module '" + name + "', which has tensors (PEFT would ignore them)");

    peft_svd_module m;
    m.name = name;
    m.in_features = in;
    m.out_features = outf;
    m.init_r = init_r;
    m.scaling = s;
    m.A = file.read_f32(tA.name);
    m.E = file.read_f32(tE.name);
    m.B = file.read_f32(tB.name);
    for (const auto* v : {&m.A, &m.E, &m.B})
      if (std::any_of(v->begin(), v->end(), [](float x) { return !std::isfinite(x); }))
        peft_fail(dir, what + ": " + (v == &m.A ? "lora_A" : v == &m.E ? "lora_E" : "lora_B") +
                           " holds NaN or infinity");
    if (const auto it = patterns.find(name); it != patterns.end()) {
      const auto kept = static_cast<std::size_t>(std::count(it->second.begin(), it->second.end(), true));
      if (kept != r)
        cfg.fail("rank_pattern keeps " + std::to_string(kept) + " of " + std::to_string(init_r) +
                 " components of module '" + name + "', but its tensors have rank " + std::to_string(r));
      m.rank_pattern = it->second;
    } else if (r != init_r) {
      cfg.fail("module '" + name + "' has rank " + std::to_string(r) + " < init_r = " + std::to_string(init_r) +
               " but rank_pattern has no entry for it, so PEFT could not load it");
    }
    out.modules.push_back(std::move(m));
  }
  return out;
}

/// Reads a PEFT AdaLoRA folder (read_peft_adalora) into svd_adapters on `backend`, in the order of the module names.
template <Backend B>
std::vector<std::pair<std::string, svd_adapter<B>>> import_peft_adalora(const std::filesystem::path& dir,
                                                                         B backend = B{}) {
  const peft_adalora_checkpoint ck = read_peft_adalora(dir);
  std::vector<std::pair<std::string, svd_adapter<B>>> out;
  out.reserve(ck.modules.size());
  for (const auto& m : ck.modules) out.emplace_back(m.name, to_svd_adapter<B>(m, ck.config, backend));
  return out;
}

}  // namespace adalora::io
