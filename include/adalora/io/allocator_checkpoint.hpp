// Checkpoint and resume of a rank_allocator in a safetensors file (format adalora-checkpoint/allocator/1).
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "adalora/allocation/allocator_state.hpp"
#include "adalora/core/error.hpp"
#include "adalora/io/safetensors.hpp"

namespace adalora::io {

inline constexpr const char* allocator_checkpoint_format = "adalora-checkpoint/allocator/1";

/// The checkpoint file's bytes: metadata (config, adapters, progress) and the float arrays, all F32 so that the
/// importance state comes back bit for bit.
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
                {"importance_live", s.importance_live}};
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

/// Reads a checkpoint back; malformed or foreign files throw format_error.
inline allocator_state read_allocator_checkpoint(const safetensors_file& f) {
  using nlohmann::json;
  const auto where = "allocator checkpoint " + f.source() + ": ";
  const auto& md = f.metadata();
  auto meta = [&](const char* key) {
    const auto it = md.find(key);
    if (it == md.end()) throw format_error(where + "no __metadata__." + key);
    try {
      return json::parse(it->second);
    } catch (const json::exception& e) {
      throw format_error(where + "__metadata__." + key + " is not valid JSON: " + e.what());
    }
  };
  const auto fmt = md.find("format");
  if (fmt == md.end() || fmt->second != allocator_checkpoint_format)
    throw format_error(where + "not an allocator checkpoint (format " +
                       (fmt == md.end() ? std::string("missing") : "'" + fmt->second + "'") + ")");
  allocator_state s;
  try {
    const json c = meta("config"), a = meta("adapters"), p = meta("progress");
    auto& k = s.config;
    k.init_r = c.at("init_r").get<std::int64_t>();
    k.target_r = c.at("target_r").get<std::int64_t>();
    k.tinit = c.at("tinit").get<std::int64_t>();
    k.tfinal = c.at("tfinal").get<std::int64_t>();
    k.deltaT = c.at("deltaT").get<std::int64_t>();
    k.beta1 = c.at("beta1").get<double>();
    k.beta2 = c.at("beta2").get<double>();
    k.orth_reg_weight = c.at("orth_reg_weight").get<double>();
    k.total_step = c.at("total_step").get<std::int64_t>();
    k.lora_alpha = c.at("lora_alpha").get<double>();
    k.lora_dropout = c.at("lora_dropout").get<double>();
    for (const auto& e : a.get<std::vector<json>>())
      s.adapters.push_back({e.at("name").get<std::string>(), e.at("r").get<std::size_t>(), e.at("in").get<std::size_t>(),
                            e.at("out").get<std::size_t>()});
    s.metric = p.at("metric").get<std::string>();
    s.schedule = p.at("schedule").get<std::string>();
    if (!p.at("last_step").is_null()) s.last_step = p.at("last_step").get<std::int64_t>();
    s.budget = p.at("budget").get<std::int64_t>();
    if (!p.at("threshold").is_null()) s.threshold = static_cast<float>(p.at("threshold").get<double>());
    s.frozen = p.at("frozen").get<bool>();
    s.importance_live = p.at("importance_live").get<bool>();
    if (md.find("distributed") != md.end()) {
      // a rank of a distributed allocator: who saved it, its parts, and the adapters of `keep` and `scores`
      const json d = meta("distributed");
      allocator_state::distributed_info info;
      info.rank = d.at("rank").get<int>();
      info.ranks = d.at("ranks").get<int>();
      info.ownership = d.at("ownership").get<std::string>();
      info.sums = d.at("sums").get<std::string>();
      for (const auto& e : d.at("parts").get<std::vector<json>>())
        info.parts.push_back({e.at("in").get<std::size_t>(), e.at("out").get<std::size_t>(),
                              e.at("in_offset").get<std::size_t>(), e.at("out_offset").get<std::size_t>(),
                              e.at("counts_lambda").get<bool>()});
      for (const auto& e : d.at("global_adapters").get<std::vector<json>>())
        info.global_adapters.push_back({e.at("name").get<std::string>(), e.at("r").get<std::size_t>(),
                                        e.at("in").get<std::size_t>(), e.at("out").get<std::size_t>()});
      if (info.ranks < 1 || info.rank < 0 || info.rank >= info.ranks)
        throw format_error(where + "__metadata__.distributed: rank " + std::to_string(info.rank) + " of " +
                           std::to_string(info.ranks) + " ranks");
      if (info.ownership != "replicated" && info.ownership != "partitioned")
        throw format_error(where + "__metadata__.distributed: unknown ownership '" + info.ownership + "'");
      if (info.sums != "exact" && info.sums != "per_triplet")
        throw format_error(where + "__metadata__.distributed: unknown sums '" + info.sums + "'");
      if (info.parts.size() != s.adapters.size())
        throw format_error(where + "__metadata__.distributed: " + std::to_string(info.parts.size()) +
                           " parts for " + std::to_string(s.adapters.size()) + " adapters");
      s.distributed = std::move(info);
    }
  } catch (const json::exception& e) {
    throw format_error(where + "a field is missing or has the wrong type: " + e.what());
  }
  s.config.validate();
  if (s.importance_live) s.importance = f.read_f32("importance");
  if (f.contains("keep")) {
    for (float v : f.read_f32("keep")) {
      if (v != 0.0f && v != 1.0f) throw format_error(where + "'keep' holds a value other than 0 or 1");
      s.keep.push_back(v != 0.0f ? 1 : 0);
    }
  }
  if (f.contains("scores")) s.scores = f.read_f32("scores");
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
