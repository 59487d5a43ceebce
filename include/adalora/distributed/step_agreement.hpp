// How the ranks of a distributed allocator agree: their descriptions at the first step, every step's outcome after.
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <map>
#include <new>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "adalora/core/config.hpp"
#include "adalora/core/error.hpp"
#include "adalora/distributed/communicator.hpp"
#include "adalora/distributed/ownership.hpp"
#include "adalora/distributed/shard_plan.hpp"

namespace adalora::detail {

/// Bumped whenever what the ranks exchange changes, so that ranks built from different versions fail clearly.
inline constexpr std::uint64_t distributed_protocol = 1;

/// Words (std::uint64_t) in and out: the format of everything the ranks exchange through all_gather_host.
class word_writer {
public:
  void u(std::uint64_t v) { w_.push_back(v); }
  void i(std::int64_t v) { w_.push_back(static_cast<std::uint64_t>(v)); }
  void f(double v) { w_.push_back(std::bit_cast<std::uint64_t>(v)); }
  void s(const std::string& v) {
    u(v.size());
    for (std::size_t k = 0; k < v.size(); k += 8) {
      std::uint64_t word = 0;
      std::memcpy(&word, v.data() + k, std::min<std::size_t>(8, v.size() - k));
      w_.push_back(word);
    }
  }
  std::vector<std::uint64_t>& words() noexcept { return w_; }

private:
  std::vector<std::uint64_t> w_;
};

class word_reader {
public:
  word_reader(const std::uint64_t* w, std::size_t n, int rank) : w_(w), n_(n), rank_(rank) {}
  std::uint64_t u() {
    if (k_ >= n_)
      throw communication_error("distributed allocator: rank " + std::to_string(rank_) +
                                "'s description ends early; do all ranks run the same build of adalora?");
    return w_[k_++];
  }
  std::int64_t i() { return static_cast<std::int64_t>(u()); }
  double f() { return std::bit_cast<double>(u()); }
  std::string s() {
    const std::uint64_t size = u();
    if (size > 8 * (n_ - k_)) throw communication_error("distributed allocator: rank " + std::to_string(rank_) +
                                                        "'s description holds a string longer than itself");
    std::string v(static_cast<std::size_t>(size), '\0');
    for (std::size_t k = 0; k < v.size(); k += 8) {
      const std::uint64_t word = u();
      std::memcpy(v.data() + k, &word, std::min<std::size_t>(8, v.size() - k));
    }
    return v;
  }

private:
  const std::uint64_t* w_;
  std::size_t n_, k_ = 0;
  int rank_;
};

/// What a rank tells the others at its first step (and at the first step after restore_state): everything that
/// must agree between the ranks, and the adapter parts it holds.
struct rank_description {
  std::uint64_t protocol = distributed_protocol;
  std::int64_t size = 1;
  adalora_config config;
  std::string metric, schedule, value_type;
  ownership mode = ownership::replicated;
  distributed_options options;
  std::int64_t step = 0;  ///< the step this rank is starting with
  std::optional<std::int64_t> last_step;
  bool frozen = false;
  std::vector<part_descriptor> parts;
  std::vector<part_descriptor> restored_union;  ///< partitioned, after restore_state: the saved union (name, r, in, out)

  std::vector<std::uint64_t> words() const {
    word_writer w;
    w.u(protocol);
    w.i(size);
    const auto& c = config;
    for (std::int64_t v : {c.init_r, c.target_r, c.tinit, c.tfinal, c.deltaT, c.total_step}) w.i(v);
    w.f(c.beta1);
    w.f(c.beta2);
    w.s(metric);
    w.s(schedule);
    w.s(value_type);
    w.u(static_cast<std::uint64_t>(mode));
    w.u(static_cast<std::uint64_t>(options.sums));
    w.u(options.check_replicas ? 1 : 0);
    w.i(step);
    w.u(last_step ? 1 : 0);
    w.i(last_step.value_or(0));
    w.u(frozen ? 1 : 0);
    for (const auto* list : {&parts, &restored_union}) {
      w.u(list->size());
      for (const auto& p : *list) {
        w.s(p.name);
        for (std::size_t v : {p.r, p.in, p.out, p.in_offset, p.in_count, p.out_offset, p.out_count}) w.u(v);
        w.u(p.counts_lambda ? 1 : 0);
      }
    }
    return std::move(w.words());
  }

  static rank_description parse(const std::uint64_t* words, std::size_t n, int rank) {
    word_reader r(words, n, rank);
    rank_description d;
    d.protocol = r.u();
    if (d.protocol != distributed_protocol) return d;  // the caller reports it; the rest may be laid out otherwise
    d.size = r.i();
    auto& c = d.config;
    for (std::int64_t* v : {&c.init_r, &c.target_r, &c.tinit, &c.tfinal, &c.deltaT, &c.total_step}) *v = r.i();
    c.beta1 = r.f();
    c.beta2 = r.f();
    d.metric = r.s();
    d.schedule = r.s();
    d.value_type = r.s();
    d.mode = static_cast<ownership>(r.u());
    d.options.sums = static_cast<shard_sums>(r.u());
    d.options.check_replicas = r.u() != 0;
    d.step = r.i();
    const bool has_last = r.u() != 0;
    const std::int64_t last = r.i();
    if (has_last) d.last_step = last;
    d.frozen = r.u() != 0;
    for (auto* list : {&d.parts, &d.restored_union}) {
      const std::uint64_t count = r.u();
      if (count > n) throw communication_error("distributed allocator: rank " + std::to_string(rank) +
                                               "'s description is malformed (adapter count)");
      for (std::uint64_t k = 0; k < count; ++k) {
        part_descriptor p;
        p.name = r.s();
        for (std::size_t* v : {&p.r, &p.in, &p.out, &p.in_offset, &p.in_count, &p.out_offset, &p.out_count})
          *v = static_cast<std::size_t>(r.u());
        p.counts_lambda = r.u() != 0;
        list->push_back(std::move(p));
      }
    }
    return d;
  }
};

/// Every rank's description, on every rank (two collectives: the sizes, then the padded words).
template <Communicator C>
std::vector<rank_description> exchange_descriptions(C& comm, const rank_description& mine) {
  const std::vector<std::uint64_t> words = mine.words();
  const auto sizes = gather_words(comm, {distributed_protocol, words.size()});
  std::size_t longest = 0;
  for (std::size_t k = 1; k < sizes.size(); k += 2) longest = std::max<std::size_t>(longest, sizes[k]);
  std::vector<std::uint64_t> padded(words);
  padded.resize(longest, 0);
  const auto all = gather_words(comm, padded);
  std::vector<rank_description> out;
  for (std::size_t k = 0; k < static_cast<std::size_t>(comm.size()); ++k) {
    if (sizes[2 * k] != distributed_protocol)
      throw usage_error("distributed allocator: rank " + std::to_string(k) + " speaks protocol " +
                        std::to_string(sizes[2 * k]) + " but rank " + std::to_string(comm.rank()) + " protocol " +
                        std::to_string(distributed_protocol) + "; build every rank from the same adalora");
    out.push_back(rank_description::parse(all.data() + k * longest, static_cast<std::size_t>(sizes[2 * k + 1]),
                                          static_cast<int>(k)));
  }
  return out;
}

inline const char* ownership_name(ownership m) noexcept {
  return m == ownership::replicated ? "replicated" : "partitioned";
}
inline const char* shard_sums_name(shard_sums s) noexcept { return s == shard_sums::exact ? "exact" : "per_triplet"; }

namespace agreement {

inline std::string rank_str(std::size_t k) { return "rank " + std::to_string(k); }

inline std::string range(std::size_t offset, std::size_t count) {
  return "[" + std::to_string(offset) + ", " + std::to_string(offset + count) + ")";
}

// Checks that the pieces (offset, count, rank) of one dimension cover [0, size) exactly once.
inline void check_cover(const std::string& name, const char* what, std::size_t size,
                        std::vector<std::tuple<std::size_t, std::size_t, std::size_t>> pieces) {
  std::sort(pieces.begin(), pieces.end());
  std::size_t next = 0;
  for (const auto& [offset, count, k] : pieces) {
    if (offset < next)
      throw shape_error("distributed allocator: adapter '" + name + "': " + rank_str(k) + " holds " + what + " " +
                        range(offset, count) + ", which overlaps another rank's part ending at " +
                        std::to_string(next) +
                        "; in ownership::partitioned each element is held by one rank (for data parallelism, where "
                        "every rank holds every adapter, use ownership::replicated)");
    if (offset > next)
      throw shape_error("distributed allocator: adapter '" + name + "': no rank holds " + what + " " +
                        range(next, offset - next) + " of [0, " + std::to_string(size) + ")");
    next = offset + count;
  }
  if (next != size)
    throw shape_error("distributed allocator: adapter '" + name + "': no rank holds " + what + " " +
                      range(next, size - next) + " of [0, " + std::to_string(size) + ")");
}

}  // namespace agreement

/// Checks every rank's description against rank 0's and, for partitioned ownership, that the parts make whole
/// adapters. Every rank runs it on the same descriptions, so every rank throws the same error (config_error for
/// configs, shape_error for parts that do not fit, usage_error for the rest).
inline void check_descriptions(const std::vector<rank_description>& all) {
  using agreement::rank_str;
  const rank_description& a = all.front();
  const std::string head = "distributed allocator, first step: ";
  for (std::size_t k = 1; k < all.size(); ++k) {
    const rank_description& b = all[k];
    auto differ = [&](const char* what, const std::string& x, const std::string& y) {
      return head + what + " differs: rank 0 has " + x + " but " + rank_str(k) + " has " + y;
    };
    const auto& c = a.config;
    const auto& d = b.config;
    const std::pair<const char*, std::pair<std::int64_t, std::int64_t>> ints[] = {
        {"init_r", {c.init_r, d.init_r}}, {"target_r", {c.target_r, d.target_r}},
        {"tinit", {c.tinit, d.tinit}},    {"tfinal", {c.tfinal, d.tfinal}},
        {"deltaT", {c.deltaT, d.deltaT}}, {"total_step", {c.total_step, d.total_step}}};
    for (const auto& [name, v] : ints)
      if (v.first != v.second)
        throw config_error(differ((std::string("the config's ") + name).c_str(), std::to_string(v.first),
                                  std::to_string(v.second)) +
                           "; every rank must run with the same adalora_config");
    const std::pair<const char*, std::pair<double, double>> reals[] = {{"beta1", {c.beta1, d.beta1}},
                                                                      {"beta2", {c.beta2, d.beta2}}};
    for (const auto& [name, v] : reals)
      if (std::bit_cast<std::uint64_t>(v.first) != std::bit_cast<std::uint64_t>(v.second))
        throw config_error(differ((std::string("the config's ") + name).c_str(), std::to_string(v.first),
                                  std::to_string(v.second)) +
                           "; every rank must run with the same adalora_config");
    if (b.size != a.size)
      throw usage_error(differ("the number of ranks", std::to_string(a.size), std::to_string(b.size)));
    if (b.metric != a.metric) throw usage_error(differ("the importance metric", a.metric, b.metric));
    if (b.schedule != a.schedule) throw usage_error(differ("the budget schedule", a.schedule, b.schedule));
    if (b.value_type != a.value_type) throw usage_error(differ("the parameter type", a.value_type, b.value_type));
    if (b.mode != a.mode) throw usage_error(differ("the ownership", ownership_name(a.mode), ownership_name(b.mode)));
    if (b.options.sums != a.options.sums)
      throw usage_error(differ("distributed_options::sums", shard_sums_name(a.options.sums),
                               shard_sums_name(b.options.sums)));
    if (b.options.check_replicas != a.options.check_replicas)
      throw usage_error(differ("distributed_options::check_replicas", a.options.check_replicas ? "true" : "false",
                               b.options.check_replicas ? "true" : "false"));
    if (b.step != a.step)
      throw usage_error(differ("the step", "step(" + std::to_string(a.step) + ")", "step(" + std::to_string(b.step) + ")") +
                        "; every rank must call step(t) with the same t");
    auto progress = [](const rank_description& r) {
      return r.last_step ? "run up to step " + std::to_string(*r.last_step) + (r.frozen ? " (pattern frozen)" : "")
                         : std::string("not run a step");
    };
    if (b.last_step != a.last_step || b.frozen != a.frozen)
      throw usage_error(head + "rank 0 has " + progress(a) + " but " + rank_str(k) + " has " + progress(b) +
                        "; restore every rank from checkpoints of the same step, or none");
    if (b.restored_union != a.restored_union)
      throw usage_error(head + "rank 0 and " + rank_str(k) +
                        " restored checkpoints of different runs (their adapters differ); restore every rank from "
                        "the checkpoints of one run and step");
  }
  if (a.mode == ownership::replicated) {
    for (std::size_t k = 1; k < all.size(); ++k) {
      const auto& x = a.parts;
      const auto& y = all[k].parts;
      for (std::size_t i = 0; i < std::max(x.size(), y.size()); ++i) {
        if (i < x.size() && i < y.size() && x[i] == y[i]) continue;
        auto show = [](const std::vector<part_descriptor>& v, std::size_t i) {
          return i < v.size() ? "'" + v[i].name + "' (r " + std::to_string(v[i].r) + ", in " +
                                    std::to_string(v[i].in) + ", out " + std::to_string(v[i].out) + ")"
                              : std::string("nothing");
        };
        throw usage_error(head + "the adapters differ: rank 0 registers " + show(x, i) + " as adapter " +
                          std::to_string(i) + " but " + rank_str(k) + " registers " + show(y, i) +
                          "; in ownership::replicated every rank registers the same adapters in the same order");
      }
    }
    if (a.parts.empty()) throw usage_error(head + "no adapters are registered; call add_adapter() first");
    return;
  }
  // partitioned: the parts of each adapter, over the ranks
  struct gathered {
    std::size_t first_rank;
    const part_descriptor* first;
    std::vector<std::tuple<std::size_t, std::size_t, std::size_t>> q, p;
    std::vector<std::size_t> counters;
  };
  std::map<std::string, gathered> adapters;
  std::vector<std::string> order;
  for (std::size_t k = 0; k < all.size(); ++k)
    for (const auto& part : all[k].parts) {
      auto [it, fresh] = adapters.try_emplace(part.name, gathered{k, &part, {}, {}, {}});
      if (fresh) order.push_back(part.name);
      gathered& g = it->second;
      const part_descriptor& f = *g.first;
      if (part.r != f.r || part.in != f.in || part.out != f.out)
        throw shape_error(head + "adapter '" + part.name + "' is (r " + std::to_string(f.r) + ", in " +
                          std::to_string(f.in) + ", out " + std::to_string(f.out) + ") on " + rank_str(g.first_rank) +
                          " but (r " + std::to_string(part.r) + ", in " + std::to_string(part.in) + ", out " +
                          std::to_string(part.out) + ") on " + rank_str(k) +
                          "; every rank gives an adapter's global shape");
      if (part.in_count > 0) g.q.emplace_back(part.in_offset, part.in_count, k);
      if (part.out_count > 0) g.p.emplace_back(part.out_offset, part.out_count, k);
      if (part.counts_lambda) g.counters.push_back(k);
    }
  if (order.empty()) throw usage_error(head + "no rank registers an adapter; call add_adapter() first");
  for (const auto& name : order) {
    const gathered& g = adapters.at(name);
    agreement::check_cover(name, "columns of lora_A", g.first->in, g.q);
    agreement::check_cover(name, "rows of lora_B", g.first->out, g.p);
    if (g.counters.size() != 1) {
      std::string who;
      for (std::size_t k : g.counters) who += (who.empty() ? "" : ", ") + rank_str(k);
      throw shape_error(head + "adapter '" + name + "': " +
                        (g.counters.empty() ? std::string("no rank counts its λ")
                                            : "λ is counted by " + who + ", more than once") +
                        "; exactly one rank registers it with adapter_shard::counts_lambda = true");
    }
  }
}

// ---- every step's outcome --------------------------------------------------------------------------------------

/// The typed errors a rank's part of a step can end with, as the ranks pass them to each other.
enum class error_kind : std::uint64_t {
  none,
  config,
  shape,
  missing_gradient,
  non_finite,
  usage,
  format,
  communication,
  replica_divergence,
  other,
};

inline error_kind kind_of(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const config_error&) {
    return error_kind::config;
  } catch (const shape_error&) {
    return error_kind::shape;
  } catch (const missing_gradient_error&) {
    return error_kind::missing_gradient;
  } catch (const non_finite_error&) {
    return error_kind::non_finite;
  } catch (const usage_error&) {
    return error_kind::usage;
  } catch (const format_error&) {
    return error_kind::format;
  } catch (const communication_error&) {
    return error_kind::communication;
  } catch (const replica_divergence_error&) {
    return error_kind::replica_divergence;
  } catch (...) {
    return error_kind::other;
  }
}

inline std::string message_of(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    return x.what();
  } catch (...) {
    return "an exception that is not a std::exception";
  }
}

[[noreturn]] inline void throw_error(error_kind k, const std::string& message) {
  switch (k) {
    case error_kind::config: throw config_error(message);
    case error_kind::shape: throw shape_error(message);
    case error_kind::missing_gradient: throw missing_gradient_error(message);
    case error_kind::non_finite: throw non_finite_error(message);
    case error_kind::usage: throw usage_error(message);
    case error_kind::format: throw format_error(message);
    case error_kind::communication: throw communication_error(message);
    case error_kind::replica_divergence: throw replica_divergence_error(message);
    default: throw error(message);
  }
}

/// What one rank's local part of a step came to: its step, its failure (if any) and, for the replica check, a hash
/// of its scores.
struct step_outcome {
  std::int64_t step = 0;
  std::exception_ptr failure;
  std::uint64_t scores_hash = 0;
};

/// The ranks agree on a step before any of them changes anything: one all-gather of 4 words per rank, and a
/// second (of the failing ranks' messages) only when a rank failed. Throws on every rank, with the same type and
/// message: when a rank failed (the type of the lowest failing rank, every failing rank's message), when the ranks
/// are at different steps, and when `check_hash` and the hashes differ.
template <Communicator C>
void agree_on_step(C& comm, const step_outcome& mine, bool check_hash) {
  const std::string own = mine.failure ? message_of(mine.failure) : std::string();
  word_writer msg;
  msg.s(own);
  const auto status = gather_words(comm, {static_cast<std::uint64_t>(mine.step),
                                          static_cast<std::uint64_t>(mine.failure ? kind_of(mine.failure)
                                                                                  : error_kind::none),
                                          mine.failure ? msg.words().size() : 0, mine.scores_hash});
  const auto size = static_cast<std::size_t>(comm.size());
  auto word = [&](std::size_t k, std::size_t i) { return status[4 * k + i]; };
  std::size_t longest = 0, failed = 0;
  for (std::size_t k = 0; k < size; ++k)
    if (word(k, 1) != 0) {
      longest = std::max<std::size_t>(longest, word(k, 2));
      ++failed;
    }
  const std::string at = "step(" + std::to_string(mine.step) + ")";
  if (failed) {
    std::vector<std::uint64_t> padded = mine.failure ? msg.words() : std::vector<std::uint64_t>{};
    padded.resize(longest, 0);
    const auto messages = gather_words(comm, padded);
    std::string text;
    error_kind first = error_kind::none;
    for (std::size_t k = 0; k < size; ++k) {
      if (word(k, 1) == 0) continue;
      if (first == error_kind::none) first = static_cast<error_kind>(word(k, 1));
      word_reader r(messages.data() + k * longest, static_cast<std::size_t>(word(k, 2)), static_cast<int>(k));
      text += "\n  rank " + std::to_string(k) + ": " + r.s();
    }
    throw_error(first, "distributed allocator: " + std::to_string(failed) + " of " + std::to_string(size) +
                           " ranks failed their part of the step, so every rank refuses it and nothing changed:" +
                           text);
  }
  for (std::size_t k = 1; k < size; ++k)
    if (word(k, 0) != word(0, 0)) {
      std::string steps;
      for (std::size_t j = 0; j < size; ++j)
        steps += (j ? ", " : "") + std::string("rank ") + std::to_string(j) + " step(" +
                 std::to_string(static_cast<std::int64_t>(word(j, 0))) + ")";
      throw usage_error("distributed allocator: the ranks called different steps (" + steps +
                        "); every rank must call step(t) once per optimizer step with the same t. Nothing changed");
    }
  if (check_hash)
    for (std::size_t k = 1; k < size; ++k)
      if (word(k, 3) != word(0, 3)) {
        std::string hashes;
        for (std::size_t j = 0; j < size; ++j) hashes += (j ? ", " : "") + std::to_string(word(j, 3));
        throw replica_divergence_error(
            "distributed allocator, " + at + ": the replicas' triplet scores differ (hashes by rank: " + hashes +
            "), so their adapters or gradients have diverged; in ownership::replicated every rank must hold the "
            "same parameters and all-reduced gradients. Nothing changed");
      }
}

/// FNV-1a over the bits of n floats (the replica check's hash).
inline std::uint64_t hash_floats(const float* v, std::size_t n) noexcept {
  std::uint64_t h = 1469598103934665603ull;
  for (std::size_t i = 0; i < n; ++i) {
    h ^= std::bit_cast<std::uint32_t>(v[i]);
    h *= 1099511628211ull;
  }
  return h;
}

}  // namespace adalora::detail
