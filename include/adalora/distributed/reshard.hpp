// Resuming a run on another number of ranks: every rank's saved state re-cut into the parts of a new rank.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "adalora/allocation/allocator_state.hpp"
#include "adalora/core/error.hpp"

namespace adalora {

namespace detail::resharding {

/// One adapter part of a saved or target state, where its elements are, and who counts λ.
struct part_ref {
  std::string name;
  std::size_t r = 0, in = 0, out = 0;
  std::size_t in_offset = 0, in_count = 0, out_offset = 0, out_count = 0;
  bool counts_lambda = true;
  std::size_t base = 0;  ///< of its lora_A block in its state's element arena (lora_E, lora_B follow)
};

/// The parts of a state, in its registration order (whole adapters for one process or a replicated rank).
inline std::vector<part_ref> parts_of(const allocator_state& s) {
  std::vector<part_ref> parts;
  std::size_t base = 0;
  for (std::size_t i = 0; i < s.adapters.size(); ++i) {
    const auto& a = s.adapters[i];
    part_ref p{a.name, a.r, a.in, a.out, 0, a.in, 0, a.out, true, base};
    if (s.distributed && s.distributed->ownership == "partitioned") {
      const auto& d = s.distributed->parts.at(i);
      p.in = d.in;
      p.out = d.out;
      p.in_offset = d.in_offset;
      p.out_offset = d.out_offset;
      p.counts_lambda = d.counts_lambda;
    }
    parts.push_back(p);
    base += a.r * (a.in + 1 + a.out);
  }
  return parts;
}

inline std::size_t elements_of(const std::vector<part_ref>& parts) {
  std::size_t n = 0;
  for (const auto& p : parts) n += p.r * (p.in_count + 1 + p.out_count);
  return n;
}

/// The adapters (in order) that a state's `keep` and `scores` run over.
inline std::vector<allocator_state::adapter_shape> union_of(const allocator_state& s) {
  if (s.distributed && s.distributed->ownership == "partitioned") return s.distributed->global_adapters;
  return s.adapters;
}

}  // namespace detail::resharding

/// The state that rank `target` describes, cut from the states that every rank of an earlier run saved (`saved`: all
/// of them, any order; or the one state of a single process). `target` is a fresh allocator's save_state(): its
/// config, metric, schedule, adapters and — for a distributed allocator — its rank, rank count, ownership and parts.
/// Every element's importance comes from the saved part that held it; the latest pattern and scores, the budget,
/// threshold and progress carry over. Restore the result with the target allocator's restore_state(). Throws
/// usage_error naming the first problem (states of different runs or steps, an adapter or element that no saved
/// state holds, another config).
inline allocator_state reshard_allocator_states(const std::vector<allocator_state>& saved,
                                                const allocator_state& target) {
  using namespace detail::resharding;
  const std::string where = "reshard_allocator_states: ";
  if (saved.empty()) throw usage_error(where + "no saved states");
  const allocator_state& first = saved.front();
  for (std::size_t k = 0; k < saved.size(); ++k) {
    const auto& s = saved[k];
    const auto& a = s.config;
    const auto& c = target.config;
    if (a.init_r != c.init_r || a.target_r != c.target_r || a.tinit != c.tinit || a.tfinal != c.tfinal ||
        a.deltaT != c.deltaT || a.beta1 != c.beta1 || a.beta2 != c.beta2 || a.total_step != c.total_step)
      throw usage_error(where + "saved state " + std::to_string(k) + " has another config than the target allocator");
    if (s.metric != target.metric || s.schedule != target.schedule)
      throw usage_error(where + "saved state " + std::to_string(k) + " has metric '" + s.metric + "' and schedule '" +
                        s.schedule + "', the target '" + target.metric + "' and '" + target.schedule + "'");
    if (s.last_step != first.last_step || s.frozen != first.frozen || s.importance_live != first.importance_live ||
        s.budget != first.budget)
      throw usage_error(where + "saved states 0 and " + std::to_string(k) +
                        " are of different steps; pass the states every rank saved at one step");
    if (s.distributed.has_value() != first.distributed.has_value() ||
        (s.distributed && (s.distributed->ranks != first.distributed->ranks ||
                           s.distributed->ownership != first.distributed->ownership)))
      throw usage_error(where + "saved states 0 and " + std::to_string(k) + " are of different runs");
  }
  if (first.distributed && first.distributed->ownership == "partitioned" &&
      saved.size() != static_cast<std::size_t>(first.distributed->ranks))
    throw usage_error(where + "the run had " + std::to_string(first.distributed->ranks) + " ranks, but " +
                      std::to_string(saved.size()) + " states were given; a partitioned run needs every rank's");

  // every saved part, by adapter name
  struct source {
    const allocator_state* state;
    part_ref part;
    std::size_t plane;  // elements per importance plane of that state
  };
  std::map<std::string, std::vector<source>> sources;
  std::size_t state_count = 0;
  for (const auto& s : saved) {
    const auto parts = parts_of(s);
    const std::size_t plane = elements_of(parts);
    if (s.importance_live) {
      if (plane == 0 || s.importance.size() % plane != 0)
        throw usage_error(where + "a saved state's importance does not fit its adapters");
      state_count = s.importance.size() / plane;
    }
    for (const auto& p : parts) sources[p.name].push_back({&s, p, plane});
  }

  allocator_state out = target;
  out.last_step = first.last_step;
  out.budget = first.budget;
  out.threshold = first.threshold;
  out.frozen = first.frozen;
  out.importance_live = first.importance_live;
  const auto targets = parts_of(target);
  const std::size_t plane = elements_of(targets);
  out.importance.assign(first.importance_live ? state_count * plane : 0, 0.0f);

  // where an element is saved, found by what it is: Q (row j, global column c), λ_j, P (global row c, column j) of
  // adapter `name` — the first saved part that holds it (replicated states all hold it)
  enum class tensor { A, E, B };
  auto locate = [&](const std::string& name, tensor which, std::size_t j, std::size_t c) {
    for (const source& s : sources[name]) {
      const part_ref& p = s.part;
      if (which == tensor::A && c >= p.in_offset && c < p.in_offset + p.in_count)
        return std::pair{&s, p.base + j * p.in_count + (c - p.in_offset)};
      if (which == tensor::E && p.counts_lambda) return std::pair{&s, p.base + p.r * p.in_count + j};
      if (which == tensor::B && c >= p.out_offset && c < p.out_offset + p.out_count)
        return std::pair{&s, p.base + p.r * (p.in_count + 1) + (c - p.out_offset) * p.r + j};
    }
    throw usage_error(where + "no saved state holds every element of adapter '" + name + "'");
  };
  for (const part_ref& t : targets) {
    const auto it = sources.find(t.name);
    if (it == sources.end()) throw usage_error(where + "no saved state holds adapter '" + t.name + "'");
    const part_ref& any = it->second.front().part;
    if (any.r != t.r || any.in != t.in || any.out != t.out)
      throw usage_error(where + "adapter '" + t.name + "' has another shape in the saved states");
    if (!first.importance_live) continue;
    auto copy = [&](tensor which, std::size_t j, std::size_t c, std::size_t to) {
      const auto [s, from] = locate(t.name, which, j, c);
      for (std::size_t k = 0; k < state_count; ++k) out.importance[k * plane + to] = s->state->importance[k * s->plane + from];
    };
    for (std::size_t j = 0; j < t.r; ++j)
      for (std::size_t c = 0; c < t.in_count; ++c) copy(tensor::A, j, t.in_offset + c, t.base + j * t.in_count + c);
    if (t.counts_lambda)
      for (std::size_t j = 0; j < t.r; ++j) copy(tensor::E, j, 0, t.base + t.r * t.in_count + j);
    for (std::size_t i = 0; i < t.out_count; ++i)
      for (std::size_t j = 0; j < t.r; ++j)
        copy(tensor::B, j, t.out_offset + i, t.base + t.r * (t.in_count + 1) + i * t.r + j);
  }

  // the latest pattern and scores: over the saved union; a target that is not partitioned wants its own order
  const auto saved_union = union_of(first);
  const bool target_partitioned = target.distributed && target.distributed->ownership == "partitioned";
  if (target_partitioned) {
    out.keep = first.keep;
    out.scores = first.scores;
    out.distributed->global_adapters = saved_union;
  } else {
    std::map<std::string, std::size_t> offset;
    std::size_t o = 0;
    for (const auto& a : saved_union) offset[a.name] = o, o += a.r;
    out.keep.clear();
    out.scores.clear();
    for (const auto& a : target.adapters) {
      const auto at = offset.find(a.name);
      if (at == offset.end()) throw usage_error(where + "adapter '" + a.name + "' is not in the saved run");
      for (std::size_t j = 0; j < a.r; ++j) {
        if (!first.keep.empty()) out.keep.push_back(first.keep[at->second + j]);
        if (!first.scores.empty()) out.scores.push_back(first.scores[at->second + j]);
      }
    }
    if (target.distributed) out.distributed->global_adapters = target.adapters;
  }
  return out;
}

}  // namespace adalora
