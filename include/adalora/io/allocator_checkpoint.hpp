// Checkpoint and resume of a rank_allocator in a safetensors file (format adalora-checkpoint/allocator/1).
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "adalora/allocation/allocator_state.hpp"
#include "adalora/core/error.hpp"
#include "adalora/io/bounded_json.hpp"
#include "adalora/io/safetensors.hpp"

namespace adalora::io {

inline constexpr const char* allocator_checkpoint_format = "adalora-checkpoint/allocator/1";

/// The checkpoint file's bytes: metadata (config, adapters, progress, and the state policy that stored the importance
/// with its value type) and the float arrays, all F32 so that the importance state comes back bit for bit (bfloat16
/// state values are widened exactly).
inline std::vector<std::byte> allocator_checkpoint_bytes(const allocator_state& s) {
  using nlohmann::json;
  safetensors_writer w;
  const auto& c = s.config;
  w.add_metadata("format", allocator_checkpoint_format);
  w.add_metadata("config", json{{"init_r", c.init_r},
                                {"target_r", c.target_r},
                                {"tinit", c.tinit},
                                {"tfinal", c.tfinal},
                                {"deltaT", c.deltaT},
                                {"beta1", c.beta1},
                                {"beta2", c.beta2},
                                {"orth_reg_weight", c.orth_reg_weight},
                                {"total_step", c.total_step},
                                {"lora_alpha", c.lora_alpha},
                                {"lora_dropout", c.lora_dropout}}
                               .dump());
  json adapters = json::array();
  for (const auto& a : s.adapters) adapters.push_back({{"name", a.name}, {"r", a.r}, {"in", a.in}, {"out", a.out}});
  w.add_metadata("adapters", adapters.dump());
  json progress{{"metric", s.metric},
                {"schedule", s.schedule},
                {"last_step", s.last_step ? json(*s.last_step) : json(nullptr)},
                {"budget", s.budget},
                {"threshold", s.threshold ? json(static_cast<double>(*s.threshold)) : json(nullptr)},
                {"frozen", s.frozen},
                {"importance_live", s.importance_live},
                {"state_policy", s.state_policy},
                {"state_type", s.state_type}};
  w.add_metadata("progress", progress.dump());
  if (s.distributed) {
    const auto& d = *s.distributed;
    json parts = json::array(), global = json::array();
    for (const auto& p : d.parts)
      parts.push_back({{"in", p.in}, {"out", p.out}, {"in_offset", p.in_offset}, {"out_offset", p.out_offset},
                       {"counts_lambda", p.counts_lambda}});
    for (const auto& a : d.global_adapters) global.push_back({{"name", a.name}, {"r", a.r}, {"in", a.in}, {"out", a.out}});
    w.add_metadata("distributed", json{{"rank", d.rank},
                                       {"ranks", d.ranks},
                                       {"ownership", d.ownership},
                                       {"sums", d.sums},
                                       {"parts", parts},
                                       {"global_adapters", global}}
                                      .dump());
  }
  if (s.importance_live) w.add("importance", {s.importance.size()}, std::span<const float>(s.importance));
  std::vector<float> keep(s.keep.begin(), s.keep.end());
  if (!keep.empty()) w.add("keep", {keep.size()}, std::span<const float>(keep));
  if (!s.scores.empty()) w.add("scores", {s.scores.size()}, std::span<const float>(s.scores));
  return w.to_bytes();
}

/// Reads a checkpoint back; malformed or foreign files throw format_error: a missing or mistyped field, a config
/// that does not validate, arrays that disagree with the adapters' sizes, a NaN or infinite importance, score or
/// threshold, or any other state no allocator saves (find_allocator_state_problem). Every size is checked against
/// the file before anything is allocated.
inline allocator_state read_allocator_checkpoint(const safetensors_file& f) {
  using nlohmann::json;
  const auto where = "allocator checkpoint " + f.source() + ": ";
  const auto& md = f.metadata();
  auto meta = [&](const char* key) {
    const auto it = md.find(key);
    if (it == md.end()) throw format_error(where + "no __metadata__." + key);
    return parse_json(it->second, where + "__metadata__." + key);
  };
  const auto fmt = md.find("format");
  if (fmt == md.end() || fmt->second != allocator_checkpoint_format)
    throw format_error(where + "not an allocator checkpoint (format " +
                       (fmt == md.end() ? std::string("missing") : "'" + detail::clip_text(fmt->second) + "'") + ")");
  allocator_state s;
  const json c = meta("config"), a = meta("adapters"), p = meta("progress");
  auto field = [&](const json& obj, const char* key, const char* in) -> const json& {
    return json_require(obj, key, where + "__metadata__." + in);
  };
  auto named = [&](const char* in, const char* key) { return where + in + "." + key; };
  auto& k = s.config;
  k.init_r = json_int(field(c, "init_r", "config"), named("config", "init_r"));
  k.target_r = json_int(field(c, "target_r", "config"), named("config", "target_r"));
  k.tinit = json_int(field(c, "tinit", "config"), named("config", "tinit"));
  k.tfinal = json_int(field(c, "tfinal", "config"), named("config", "tfinal"));
  k.deltaT = json_int(field(c, "deltaT", "config"), named("config", "deltaT"));
  k.beta1 = json_number(field(c, "beta1", "config"), named("config", "beta1"));
  k.beta2 = json_number(field(c, "beta2", "config"), named("config", "beta2"));
  k.orth_reg_weight = json_number(field(c, "orth_reg_weight", "config"), named("config", "orth_reg_weight"));
  k.total_step = json_int(field(c, "total_step", "config"), named("config", "total_step"));
  k.lora_alpha = json_number(field(c, "lora_alpha", "config"), named("config", "lora_alpha"));
  k.lora_dropout = json_number(field(c, "lora_dropout", "config"), named("config", "lora_dropout"));
  if (!a.is_array()) throw format_error(where + "__metadata__.adapters is " + describe_json(a) + ", not an array");
  s.adapters.reserve(a.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    const json& e = a[i];
    const std::string at = "adapters[" + std::to_string(i) + "]";
    s.adapters.push_back({json_string(field(e, "name", at.c_str()), named(at.c_str(), "name")),
                          json_size(field(e, "r", at.c_str()), named(at.c_str(), "r")),
                          json_size(field(e, "in", at.c_str()), named(at.c_str(), "in")),
                          json_size(field(e, "out", at.c_str()), named(at.c_str(), "out"))});
  }
  s.metric = json_string(field(p, "metric", "progress"), named("progress", "metric"));
  s.schedule = json_string(field(p, "schedule", "progress"), named("progress", "schedule"));
  if (const json& t = field(p, "last_step", "progress"); !t.is_null())
    s.last_step = json_int(t, named("progress", "last_step"));
  s.budget = json_int(field(p, "budget", "progress"), named("progress", "budget"));
  if (const json& t = field(p, "threshold", "progress"); !t.is_null())
    s.threshold = static_cast<float>(json_number(t, named("progress", "threshold")));
  s.frozen = json_bool(field(p, "frozen", "progress"), named("progress", "frozen"));
  s.importance_live = json_bool(field(p, "importance_live", "progress"), named("progress", "importance_live"));
  // absent in checkpoints written before state policies existed: those held float32 state
  if (p.is_object() && p.contains("state_policy"))
    s.state_policy = json_string(p.at("state_policy"), named("progress", "state_policy"));
  if (p.is_object() && p.contains("state_type"))
    s.state_type = json_string(p.at("state_type"), named("progress", "state_type"));
  if (s.state_type != "float32" && s.state_type != "bfloat16")
    throw format_error(where + "progress.state_type is '" + s.state_type + "'; expected float32 or bfloat16");
  if (md.find("distributed") != md.end()) {
    // a rank of a distributed allocator: who saved it, its parts, and the adapters of `keep` and `scores`
    const json d = meta("distributed");
    allocator_state::distributed_info info;
    const auto int_max = static_cast<std::int64_t>(std::numeric_limits<int>::max());
    const auto rank = json_int(field(d, "rank", "distributed"), named("distributed", "rank"));
    const auto ranks = json_int(field(d, "ranks", "distributed"), named("distributed", "ranks"));
    if (ranks < 1 || ranks > int_max || rank < 0 || rank >= ranks)
      throw format_error(where + "__metadata__.distributed: rank " + std::to_string(rank) + " of " +
                         std::to_string(ranks) + " ranks");
    info.rank = static_cast<int>(rank);
    info.ranks = static_cast<int>(ranks);
    info.ownership = json_string(field(d, "ownership", "distributed"), named("distributed", "ownership"));
    info.sums = json_string(field(d, "sums", "distributed"), named("distributed", "sums"));
    const json& parts = field(d, "parts", "distributed");
    const json& global = field(d, "global_adapters", "distributed");
    if (!parts.is_array() || !global.is_array())
      throw format_error(where + "__metadata__.distributed: parts and global_adapters must be arrays");
    for (std::size_t i = 0; i < parts.size(); ++i) {
      const std::string at = "distributed.parts[" + std::to_string(i) + "]";
      auto size = [&](const char* key) { return json_size(field(parts[i], key, at.c_str()), named(at.c_str(), key)); };
      info.parts.push_back({size("in"), size("out"), size("in_offset"), size("out_offset"),
                            json_bool(field(parts[i], "counts_lambda", at.c_str()), named(at.c_str(), "counts_lambda"))});
    }
    for (std::size_t i = 0; i < global.size(); ++i) {
      const std::string at = "distributed.global_adapters[" + std::to_string(i) + "]";
      auto size = [&](const char* key) { return json_size(field(global[i], key, at.c_str()), named(at.c_str(), key)); };
      info.global_adapters.push_back(
          {json_string(field(global[i], "name", at.c_str()), named(at.c_str(), "name")), size("r"), size("in"),
           size("out")});
    }
    if (info.ownership != "replicated" && info.ownership != "partitioned")
      throw format_error(where + "__metadata__.distributed: unknown ownership '" + detail::clip_text(info.ownership) +
                         "'");
    if (info.sums != "exact" && info.sums != "per_triplet")
      throw format_error(where + "__metadata__.distributed: unknown sums '" + detail::clip_text(info.sums) + "'");
    if (info.parts.size() != s.adapters.size())
      throw format_error(where + "__metadata__.distributed: " + std::to_string(info.parts.size()) + " parts for " +
                         std::to_string(s.adapters.size()) + " adapters");
    s.distributed = std::move(info);
  }
  // the arrays' sizes come from the file's tensors, which the safetensors reader checked against the file
  if (s.importance_live) s.importance = f.read_f32("importance");
  if (f.contains("keep")) {
    const auto keep = f.read_f32("keep");
    s.keep.reserve(keep.size());
    for (float v : keep) {
      if (v != 0.0f && v != 1.0f) throw format_error(where + "'keep' holds a value other than 0 or 1");
      s.keep.push_back(v != 0.0f ? 1 : 0);
    }
  }
  if (f.contains("scores")) s.scores = f.read_f32("scores");
  if (const auto problem = find_allocator_state_problem(s)) throw format_error(where + problem->what);
  return s;
}

inline void save_allocator_checkpoint(const std::filesystem::path& path, const allocator_state& s) {
  const auto bytes = allocator_checkpoint_bytes(s);
  read_allocator_checkpoint(safetensors_file::parse(bytes));  // never write what could not be read back
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw error("cannot write the checkpoint " + path.string());
}

inline allocator_state load_allocator_checkpoint(const std::filesystem::path& path) {
  return read_allocator_checkpoint(safetensors_file::open(path));
}

/// Saves an allocator's state (any backend, metric and schedule).
template <class Allocator>
void save_checkpoint(const Allocator& allocator, const std::filesystem::path& path) {
  save_allocator_checkpoint(path, allocator.save_state());
}

/// Restores an allocator from a checkpoint; a checkpoint of other adapters or another config is a usage_error.
template <class Allocator>
void load_checkpoint(Allocator& allocator, const std::filesystem::path& path) {
  allocator.restore_state(load_allocator_checkpoint(path));
}

}  // namespace adalora::io
