// The distributed allocator on thread_communicator: every ownership on 2, 3 and 4 ranks against one process holding
// every adapter, bit for bit; every failure ends with the same error on every rank; per-rank checkpoints.
#include <catch2/catch.hpp>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <exception>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "adalora/allocation/allocator_kernels.hpp"
#include "adalora/allocation/tile_lanes.hpp"
#include "adalora/distributed/reshard.hpp"
#include "adalora/distributed/thread_communicator.hpp"
#include "adalora/importance/magnitude.hpp"
#include "adalora/io/allocator_checkpoint.hpp"
#include "distributed/scenarios.hpp"
#include "support/backends_under_test.hpp"
#include "support/trace_files.hpp"

using namespace adalora;
using namespace adalora::testing::distributed;

namespace {

const std::string traces = adalora::testing::traces_dir().string();

const scenario& basic() {
  static const scenario s = trace_scenario(traces + "/alloc-basic.safetensors");
  return s;
}
const scenario& edge() {
  static const scenario s = trace_scenario(traces + "/alloc-edge.safetensors");
  return s;
}
const scenario& tiled() {
  static const scenario s = tiled_scenario();
  return s;
}
const scenario& rounding() {
  static const scenario s = rounding_scenario();
  return s;
}
/// Every PEFT allocation trace the repository keeps, then the tiled scenario.
const std::vector<scenario>& all_scenarios() {
  static const std::vector<scenario> all = [] {
    std::vector<scenario> v;
    for (const auto& f : adalora::testing::trace_files("alloc-")) v.push_back(trace_scenario(f.string()));
    v.push_back(tiled_scenario());
    return v;
  }();
  return all;
}

/// Every rank's record of a run of `s` split as `kind` on `size` threads (the exception of any rank is rethrown).
template <Backend Bk = eigen_backend, ImportanceMetric M = sensitivity_uncertainty>
std::vector<run_record> run_threads(const scenario& s, layout_kind kind, int size, distributed_options options = {}) {
  thread_group group(size, std::chrono::seconds(120));
  std::vector<run_record> records(static_cast<std::size_t>(size));
  const auto errors = group.run([&](thread_communicator c) {
    records[static_cast<std::size_t>(c.rank())] = run_rank<Bk, M>(s, kind, c, options);
  });
  for (const auto& e : errors)
    if (e) std::rethrow_exception(e);
  return records;
}

/// Every rank's error message, requiring each rank to have thrown E.
template <class E>
std::vector<std::string> every_rank_threw(const std::vector<std::exception_ptr>& errors) {
  std::vector<std::string> messages;
  for (std::size_t k = 0; k < errors.size(); ++k) {
    INFO("rank " << k);
    REQUIRE(errors[k]);
    try {
      std::rethrow_exception(errors[k]);
    } catch (const E& e) {
      messages.push_back(e.what());
    } catch (const std::exception& e) {
      FAIL("rank " << k << " threw another type: " << e.what());
    }
  }
  return messages;
}

/// Requires every rank to have thrown E with the same message, containing `text`.
template <class E>
void same_error_everywhere(const std::vector<std::exception_ptr>& errors, const std::string& text) {
  const auto messages = every_rank_threw<E>(errors);
  INFO(messages.front());
  REQUIRE_THAT(messages.front(), Catch::Contains(text));
  for (const auto& m : messages) REQUIRE(m == messages.front());
}

}  // namespace

TEST_CASE("distributed, exact sums: every ownership on 2, 3, 4 ranks gives one process's run bit for bit",
          "[distributed]") {
  REQUIRE(all_scenarios().size() >= 3);
  for (const scenario& sc : all_scenarios()) {
    const scenario* s = &sc;
    const run_record single = run_single<eigen_backend>(*s);
    REQUIRE(prunes(single));
    for (layout_kind kind : {layout_kind::replicated, layout_kind::disjoint, layout_kind::lopsided,
                             layout_kind::sharded})
      for (int size : {2, 3, 4}) {
        INFO(s->name << ", " << layout_name(kind) << ", " << size << " ranks");
        const auto records = run_threads(*s, kind, size);
        for (std::size_t k = 0; k < records.size(); ++k) {
          INFO("rank " << k);
          REQUIRE(first_difference(records[k], single) == "");
        }
      }
  }
}

TEST_CASE("distributed, exact sums: split lines summed in one process's order, shown where the order shows",
          "[distributed]") {
  // the rounding scenario's scores change with the summation order (see rounding_scenario); the magnitude metric
  const run_record single = run_single<eigen_backend, magnitude>(rounding());
  REQUIRE(prunes(single));
  for (layout_kind kind : {layout_kind::disjoint, layout_kind::sharded})
    for (int size : {2, 3, 4}) {
      INFO(layout_name(kind) << ", " << size << " ranks");
      for (const auto& r : run_threads<eigen_backend, magnitude>(rounding(), kind, size))
        REQUIRE(first_difference(r, single) == "");
    }
  // per_triplet sums split lines in another order: there, some scores differ in their last bit
  distributed_options o;
  o.sums = shard_sums::per_triplet;
  const auto other = run_threads<eigen_backend, magnitude>(rounding(), layout_kind::sharded, 3, o);
  REQUIRE_THAT(first_difference(other[0], single), Catch::Contains("scores of"));
}

TEST_CASE("distributed, per_triplet sums: identical on every rank, close to one process", "[distributed]") {
  distributed_options o;
  o.sums = shard_sums::per_triplet;
  for (const scenario& sc : all_scenarios()) {
    const scenario* s = &sc;
    const run_record single = run_single<eigen_backend>(*s);
    for (int size : {2, 3, 4}) {
      INFO(s->name << ", sharded, " << size << " ranks");
      const auto records = run_threads(*s, layout_kind::sharded, size, o);
      for (std::size_t k = 1; k < records.size(); ++k) REQUIRE(first_difference(records[k], records[0]) == "");
      // a split line's sum is added in another order: the last bits of a score may differ, nothing more
      REQUIRE(first_difference(records[0], single, {false, 1e-6}) == "");
      // whole adapters are summed exactly either way
      const auto disjoint = run_threads(*s, layout_kind::disjoint, size, o);
      for (const auto& r : disjoint) REQUIRE(first_difference(r, single) == "");
    }
  }
}

TEST_CASE("distributed: what a mask step exchanges", "[distributed]") {
  // per_triplet: 2 sums per singular value held, plus λ's score; exact: the split lines' tile sums and cut tiles
  const scenario& s = tiled();
  auto bytes = [&](layout_kind kind, shard_sums sums) {
    thread_group group(3);
    std::vector<std::size_t> b(3);
    distributed_options o;
    o.sums = sums;
    const auto errors = group.run([&](thread_communicator c) {
      rank_tensors<eigen_backend> t(s, parts_of(s, kind, c.rank(), c.size()));
      distributed_allocator<eigen_backend, thread_communicator> alloc(s.config, c, ownership::partitioned, o);
      t.register_with(alloc);
      t.run(alloc, 0, 1);
      b[static_cast<std::size_t>(c.rank())] = alloc.exchange_bytes_per_rank();
    });
    for (const auto& e : errors)
      if (e) std::rethrow_exception(e);
    REQUIRE(b[0] == b[1]);
    return b[0];
  };
  std::size_t b0 = 0;
  for (const auto& a : s.adapters) b0 += a.r;
  const std::size_t triplet = bytes(layout_kind::sharded, shard_sums::per_triplet);
  const std::size_t exact = bytes(layout_kind::sharded, shard_sums::exact);
  const std::size_t whole = bytes(layout_kind::disjoint, shard_sums::exact);
  REQUIRE(triplet <= 3 * b0 * sizeof(double));
  REQUIRE(exact > triplet);
  REQUIRE(whole <= 3 * b0 * sizeof(double));
}

TEMPLATE_LIST_TEST_CASE("distributed on every backend: sharded and disjoint runs give one process's bit for bit",
                        "[distributed][backends]", adalora::testing::backends_under_test) {
  const run_record single = run_single<TestType, magnitude>(rounding());
  for (const auto& r : run_threads<TestType, magnitude>(rounding(), layout_kind::sharded, 3))
    REQUIRE(first_difference(r, single) == "");
  const run_record basic_single = run_single<TestType>(basic());
  for (const auto& r : run_threads<TestType>(basic(), layout_kind::disjoint, 2))
    REQUIRE(first_difference(r, basic_single) == "");
}

TEST_CASE("split tiles: the fused pass's block form (a GPU's) leaves its tile form's results bit for bit",
          "[distributed][lanes]") {
  // one rank's part of an adapter that slice boundaries cut: Q columns [1000, 3100) of 4500 (tiles of 2048 cut at
  // 1000 and 3100), P rows [100, 700) of 1100 (blocks of 341 rows cut at 100 and 700); r = 6
  const detail::part_descriptor part{"x", 6, 4500, 1100, 1000, 2100, 100, 600, true};
  const auto pp = detail::plan_parts({part}, shard_sums::exact);
  const auto split = std::count_if(pp.tiles.begin(), pp.tiles.end(),
                                   [](const detail::plan_tile& t) { return t.kind == detail::tile_kind::split; });
  REQUIRE(split == 6 * 2 + 2);  // two cut Q tiles per row, two cut P blocks
  REQUIRE(pp.split_floats > 0);
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> u(0.0f, 0.5f);
  std::uniform_int_distribution<int> e(-30, 30);
  auto values = [&](std::size_t n) {
    std::vector<float> v(n);
    for (auto& x : v) x = std::ldexp(u(rng) - 0.25f, e(rng));
    return v;
  };
  std::vector<float> A = values(6 * 2100), E = values(6), B = values(600 * 6), gA = values(A.size()), gE = values(6),
                     gB = values(B.size());
  const svd_adapter_views<float> v{make_matrix_view(A.data(), 6, 2100), make_vector_view(E.data(), 6),
                                   make_matrix_view(B.data(), 600, 6), make_matrix_view(gA.data(), 6, 2100),
                                   make_vector_view(gE.data(), 6),    make_matrix_view(gB.data(), 600, 6)};
  const auto tensors = detail::plan_tensors_of(v, 0);
  const std::size_t plane = 6 * (2100 + 1 + 600);
  std::vector<float> state(sensitivity_uncertainty::state_count * plane);
  for (auto& x : state) x = std::ldexp(u(rng), e(rng));
  struct outputs {
    std::vector<float> state;
    std::vector<std::uint32_t> bad;
    std::vector<double> partial;
    std::vector<float> scores;
  };
  auto run = [&](bool block) {
    outputs o{std::vector<float>(state.size()), std::vector<std::uint32_t>(pp.tiles.size()),
              std::vector<double>(pp.partials), std::vector<float>(pp.element_scores())};
    const detail::fused_importance_fn<sensitivity_uncertainty, float, true, true> f{
        sensitivity_uncertainty(adalora_config{}), tensors.data(), pp.tiles.data(), state.data(), o.state.data(),
        plane, o.bad.data(), o.partial.data(), o.scores.data()};
    if (block)
      detail::run_tile_lanes_on_host(f, pp.tiles.size());
    else
      for (std::size_t t = 0; t < pp.tiles.size(); ++t) f(t);
    return o;
  };
  const outputs tile = run(false), lanes = run(true);
  auto same = [](const auto& a, const auto& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(a[0])) == 0;
  };
  REQUIRE(same(tile.state, lanes.state));
  REQUIRE(same(tile.bad, lanes.bad));
  REQUIRE(same(tile.partial, lanes.partial));
  REQUIRE(same(tile.scores, lanes.scores));
  // the split pieces' scores were written (they are the scores of their elements, not zeros)
  REQUIRE(std::count(tile.scores.begin() + 6, tile.scores.end(), 0.0f) == 0);
}

// ---- failures: the same error on every rank, no hang --------------------------------------------------------------

namespace {

using alloc_t = distributed_allocator<eigen_backend, thread_communicator>;

/// Runs f(communicator, rank_tensors of rank k's parts) on every rank of a fresh group (a short time limit: a rank
/// left waiting fails the test instead of hanging it) and returns every rank's exception.
template <class F>
std::vector<std::exception_ptr> on_ranks(const scenario& s, layout_kind kind, int size, F f) {
  thread_group group(size, std::chrono::seconds(20));
  return group.run([&](thread_communicator c) {
    rank_tensors<eigen_backend> t(s, parts_of(s, kind, c.rank(), c.size()));
    f(c, t);
  });
}

/// Every rank's exception from the first step of `s` split as `kind` on `size` ranks, after
/// change(rank, parts) changed what each rank registers.
template <class F>
std::vector<std::exception_ptr> first_step_with(const scenario& s, layout_kind kind, int size, F change) {
  const ownership mode = kind == layout_kind::replicated ? ownership::replicated : ownership::partitioned;
  return on_ranks(s, kind, size, [&](thread_communicator c, auto& t) {
    auto parts = t.parts();
    change(c.rank(), parts);
    rank_tensors<eigen_backend> mine(s, parts);
    alloc_t alloc(s.config, c, mode);
    mine.register_with(alloc);
    mine.run(alloc, 0, 1);
  });
}

}  // namespace

TEST_CASE("distributed errors: a config that differs between ranks", "[distributed][errors]") {
  const auto errors = on_ranks(basic(), layout_kind::disjoint, 3, [](thread_communicator c, auto& t) {
    adalora_config cfg = basic().config;
    if (c.rank() == 2) cfg.deltaT = 5;
    alloc_t alloc(cfg, c, ownership::partitioned);
    t.register_with(alloc);
    t.run(alloc, 0, 1);
  });
  same_error_everywhere<config_error>(errors, "the config's deltaT differs: rank 0 has 3 but rank 2 has 5");
}

TEST_CASE("distributed errors: ownership, options or metric that differ", "[distributed][errors]") {
  const auto mode = on_ranks(basic(), layout_kind::replicated, 2, [](thread_communicator c, auto& t) {
    alloc_t alloc(basic().config, c, c.rank() ? ownership::partitioned : ownership::replicated);
    if (c.rank() == 0) t.register_with(alloc);
    t.run(alloc, 0, 1);
  });
  same_error_everywhere<usage_error>(mode, "the ownership differs: rank 0 has replicated but rank 1 has partitioned");
  const auto sums = on_ranks(basic(), layout_kind::disjoint, 2, [](thread_communicator c, auto& t) {
    distributed_options o;
    o.sums = c.rank() ? shard_sums::per_triplet : shard_sums::exact;
    alloc_t alloc(basic().config, c, ownership::partitioned, o);
    t.register_with(alloc);
    t.run(alloc, 0, 1);
  });
  same_error_everywhere<usage_error>(sums, "distributed_options::sums differs");
}

TEST_CASE("distributed errors: replicas that register different adapters", "[distributed][errors]") {
  // rank 1 registers every adapter but the last
  const auto errors = first_step_with(edge(), layout_kind::replicated, 3, [](int rank, std::vector<rank_part>& parts) {
    if (rank == 1) parts.pop_back();
  });
  same_error_everywhere<usage_error>(errors, "the adapters differ: rank 0 registers 'layers.1.v' (r 4, in");
  REQUIRE_THAT(every_rank_threw<usage_error>(errors)[0], Catch::Contains("but rank 1 registers nothing"));
}

TEST_CASE("distributed errors: partitioned parts that overlap, leave a gap, or count λ twice", "[distributed][errors]") {
  // rank 1 registers adapter 0 whole too: overlap, with a hint about replicated ownership
  const auto a0 = edge().adapters[0];
  same_error_everywhere<shape_error>(
      first_step_with(edge(), layout_kind::disjoint, 2,
                      [&](int rank, std::vector<rank_part>& parts) {
                        if (rank == 1) parts.insert(parts.begin(), rank_part{0, 0, a0.in, 0, a0.out, true, true});
                      }),
      "use ownership::replicated");
  // rank 1 leaves its slice of the first sharded adapter out
  same_error_everywhere<shape_error>(
      first_step_with(tiled(), layout_kind::sharded, 3,
                      [](int rank, std::vector<rank_part>& parts) {
                        if (rank == 1) parts.erase(parts.begin());
                      }),
      "adapter 'wide_q': no rank holds rows of lora_B [");
  // every rank counts λ of every adapter
  same_error_everywhere<shape_error>(first_step_with(tiled(), layout_kind::sharded, 2,
                                                     [](int, std::vector<rank_part>& parts) {
                                                       for (auto& p : parts) p.counts_lambda = true;
                                                     }),
                                     "λ is counted by rank 0, rank 1, more than once");
  // a global shape that differs
  const auto shapes = on_ranks(tiled(), layout_kind::sharded, 2, [](thread_communicator c, auto& t) {
    alloc_t alloc(tiled().config, c, ownership::partitioned);
    scenario other = tiled();
    if (c.rank() == 1) other.adapters[0].out += 1;
    rank_tensors<eigen_backend> mine(other, parts_of(other, layout_kind::sharded, c.rank(), c.size()));
    mine.register_with(alloc);
    (void)t;
    alloc.step(0);  // (the tensors hold zeros: the first step fails before it reads them)
  });
  same_error_everywhere<shape_error>(shapes, "adapter 'wide_q' is (r 4, in 4500, out 40) on rank 0 but (r 4, in 4500, out 41) on rank 1");
}

TEST_CASE("distributed errors: no rank holds an adapter; ranks without adapters take part", "[distributed][errors]") {
  const auto none = on_ranks(edge(), layout_kind::disjoint, 2, [](thread_communicator c, auto&) {
    alloc_t alloc(edge().config, c, ownership::partitioned);
    alloc.step(0);
  });
  same_error_everywhere<usage_error>(none, "no rank registers an adapter");
  // a slice whose extents reach past the global shape is refused at registration, on that rank
  thread_group group(1);
  alloc_t alloc(tiled().config, group.communicator(0), ownership::partitioned);
  std::vector<float> A(4 * 10), E(4), B(4 * 40);
  const svd_adapter_views<float> v{make_matrix_view(A.data(), 4, 10), make_vector_view(E.data(), 4),
                                   make_matrix_view(B.data(), 40, 4), {}, {}, {}};
  REQUIRE_THROWS_WITH(alloc.add_adapter("x", v, adapter_shard{4500, 40, 4495, 0, true}),
                      Catch::Contains("lora_A's 10 columns from column 4495 reach past the adapter's in = 4500"));
  REQUIRE(alloc.adapter_count() == 0);
  alloc_t replicated(tiled().config, group.communicator(0), ownership::replicated);
  REQUIRE_THROWS_WITH(replicated.add_adapter("x", v, adapter_shard{4500, 40, 0, 0, true}),
                      Catch::Contains("slices of an adapter need ownership::partitioned"));
}

TEST_CASE("distributed errors: a non-finite gradient on one rank makes every rank refuse the step",
          "[distributed][errors]") {
  const scenario& s = tiled();
  const run_record single = run_single<eigen_backend>(s);
  for (layout_kind kind : {layout_kind::replicated, layout_kind::sharded}) {
    INFO(layout_name(kind));
    const std::size_t bad_step = 6;  // a mask step (t = 6: tinit 3, deltaT 2)
    std::vector<std::exception_ptr> refused(3);
    std::vector<run_record> records(3);
    thread_group group(3, std::chrono::seconds(20));
    const auto errors = group.run([&](thread_communicator c) {
      rank_tensors<eigen_backend> t(s, parts_of(s, kind, c.rank(), c.size()));
      alloc_t alloc(s.config, c, kind == layout_kind::replicated ? ownership::replicated : ownership::partitioned);
      t.register_with(alloc);
      auto r = t.run(alloc, 0, bad_step);
      // step bad_step with a NaN in rank 1's gradient: refused everywhere, and nothing changed
      t.load(s.steps[bad_step]);
      const auto before = t.lambda(0);
      if (c.rank() == 1) t.poke_gradient(0, 3, std::numeric_limits<float>::quiet_NaN());
      try {
        alloc.step(s.steps[bad_step]);
      } catch (...) {
        refused[static_cast<std::size_t>(c.rank())] = std::current_exception();
      }
      if (t.lambda(0) != before || alloc.last_step() != s.steps[bad_step - 1]) throw error("the refused step changed something");
      // the trainer fixes its gradient and calls the step again: the run goes on as if nothing happened
      auto rest = t.run(alloc, bad_step);
      r.insert(r.end(), rest.begin(), rest.end());
      records[static_cast<std::size_t>(c.rank())] = r;
    });
    for (const auto& e : errors)
      if (e) std::rethrow_exception(e);
    same_error_everywhere<non_finite_error>(refused, "1 of 3 ranks failed their part of the step");
    REQUIRE_THAT(every_rank_threw<non_finite_error>(refused)[0], Catch::Contains("rank 1: step(6): adapter '"));
    for (const auto& r : records) REQUIRE(first_difference(r, single) == "");
  }
}

TEST_CASE("distributed errors: ranks at different steps", "[distributed][errors]") {
  const auto errors = on_ranks(basic(), layout_kind::disjoint, 3, [](thread_communicator c, auto& t) {
    alloc_t alloc(basic().config, c, ownership::partitioned);
    t.register_with(alloc);
    t.run(alloc, 0, 4);
    t.load(4);
    alloc.step(c.rank() == 1 ? 5 : 4);
  });
  same_error_everywhere<usage_error>(errors, "the ranks called different steps (rank 0 step(4), rank 1 step(5), rank 2 step(4))");
  const auto first = on_ranks(basic(), layout_kind::disjoint, 2, [](thread_communicator c, auto& t) {
    alloc_t alloc(basic().config, c, ownership::partitioned);
    t.register_with(alloc);
    t.load(0);
    alloc.step(c.rank());
  });
  same_error_everywhere<usage_error>(first, "the step differs: rank 0 has step(0) but rank 1 has step(1)");
  // a local refusal (a step that goes backwards) is every rank's refusal
  const auto backwards = on_ranks(basic(), layout_kind::disjoint, 2, [](thread_communicator c, auto& t) {
    alloc_t alloc(basic().config, c, ownership::partitioned);
    t.register_with(alloc);
    t.run(alloc, 0, 3);
    alloc.step(c.rank() == 0 ? 1 : 3);
  });
  same_error_everywhere<usage_error>(backwards, "rank 0: step(1): the allocator already ran step 2");
}

TEST_CASE("distributed errors: diverged replicas are caught by the replica check", "[distributed][errors]") {
  distributed_options check;
  check.check_replicas = true;
  // (alloc-basic: a gradient of 1000 is far outside its values; step 6 is a mask step)
  auto run = [&](distributed_options o) {
    return on_ranks(basic(), layout_kind::replicated, 3, [&](thread_communicator c, auto& t) {
      alloc_t alloc(basic().config, c, ownership::replicated, o);
      t.register_with(alloc);
      t.run(alloc, 0, 6);
      t.load(6);
      if (c.rank() == 2) t.poke_gradient(1, 0, 1000.0f);  // rank 2's gradient is not the all-reduced one
      alloc.step(6);
    });
  };
  same_error_everywhere<replica_divergence_error>(run(check), "the replicas' triplet scores differ");
  // without the check, replicas diverge silently (what the check is for)
  for (const auto& e : run({})) REQUIRE_FALSE(e);
}

// ---- checkpoints per rank ------------------------------------------------------------------------------------------

TEST_CASE("distributed checkpoints: each rank saves and resumes bit for bit; another rank count is refused",
          "[distributed][checkpoint]") {
  const scenario& s = tiled();
  const run_record single = run_single<eigen_backend>(s);
  for (layout_kind kind : {layout_kind::sharded, layout_kind::replicated})
    for (std::size_t split : {5u, 9u, 22u}) {  // mid-warm-up, mid-budgeting, in the final pattern
      INFO(layout_name(kind) << ", saved after " << split << " steps");
      const ownership mode = kind == layout_kind::replicated ? ownership::replicated : ownership::partitioned;
      std::vector<std::vector<std::byte>> files(3);
      std::vector<run_record> records(3);
      thread_group first(3, std::chrono::seconds(60));
      auto errors = first.run([&](thread_communicator c) {
        rank_tensors<eigen_backend> t(s, parts_of(s, kind, c.rank(), c.size()));
        alloc_t alloc(s.config, c, mode);
        t.register_with(alloc);
        records[static_cast<std::size_t>(c.rank())] = t.run(alloc, 0, split);
        files[static_cast<std::size_t>(c.rank())] = io::allocator_checkpoint_bytes(alloc.save_state());
      });
      for (const auto& e : errors)
        if (e) std::rethrow_exception(e);
      // new processes: fresh allocators restore their rank's file and go on
      thread_group second(3, std::chrono::seconds(60));
      errors = second.run([&](thread_communicator c) {
        rank_tensors<eigen_backend> t(s, parts_of(s, kind, c.rank(), c.size()));
        alloc_t alloc(s.config, c, mode);
        t.register_with(alloc);
        alloc.restore_state(io::read_allocator_checkpoint(io::safetensors_file::parse(files[static_cast<std::size_t>(c.rank())])));
        auto rest = t.run(alloc, split);
        auto& r = records[static_cast<std::size_t>(c.rank())];
        r.insert(r.end(), rest.begin(), rest.end());
      });
      for (const auto& e : errors)
        if (e) std::rethrow_exception(e);
      for (const auto& r : records) REQUIRE(first_difference(r, single) == "");

      // two ranks cannot resume what three saved (partitioned); replicated state is whole on every rank
      std::vector<std::exception_ptr> refused(2);
      thread_group fewer(2, std::chrono::seconds(60));
      errors = fewer.run([&](thread_communicator c) {
        rank_tensors<eigen_backend> t(s, parts_of(s, kind, c.rank(), c.size()));
        alloc_t alloc(s.config, c, mode);
        t.register_with(alloc);
        try {
          alloc.restore_state(io::read_allocator_checkpoint(io::safetensors_file::parse(files[static_cast<std::size_t>(c.rank())])));
        } catch (...) {
          refused[static_cast<std::size_t>(c.rank())] = std::current_exception();
          return;
        }
        const auto rest = t.run(alloc, split);
        const run_record tail(single.begin() + static_cast<std::ptrdiff_t>(split), single.end());
        if (first_difference(rest, tail) != "") throw error("resumed on 2 ranks: " + first_difference(rest, tail));
      });
      for (const auto& e : errors)
        if (e) std::rethrow_exception(e);
      if (kind == layout_kind::replicated) {
        for (const auto& e : refused) REQUIRE_FALSE(e);
      } else {
        for (const auto& e : refused) {
          REQUIRE(e);
          REQUIRE_THROWS_AS(std::rethrow_exception(e), usage_error);
        }
        REQUIRE_THROWS_WITH(std::rethrow_exception(refused[0]),
                            Catch::Contains("it was saved by rank 0 of 3 and this is rank 0 of 2"));
      }
    }
}

TEST_CASE("distributed checkpoints: re-sharded onto another number of ranks, or one process, the run goes on bit for bit",
          "[distributed][checkpoint]") {
  const scenario& s = tiled();
  const run_record single = run_single<eigen_backend>(s);
  const std::size_t split = 9;  // mid-budgeting: importance, pattern and scores all carry over
  const run_record tail(single.begin() + static_cast<std::ptrdiff_t>(split), single.end());
  // every rank's state after `split` steps of a run on `size` ranks held as `kind`
  auto saved = [&](layout_kind kind, int size) {
    std::vector<allocator_state> states(static_cast<std::size_t>(size));
    thread_group group(size, std::chrono::seconds(60));
    const auto errors = group.run([&](thread_communicator c) {
      rank_tensors<eigen_backend> t(s, parts_of(s, kind, c.rank(), c.size()));
      alloc_t alloc(s.config, c, kind == layout_kind::replicated ? ownership::replicated : ownership::partitioned);
      t.register_with(alloc);
      t.run(alloc, 0, split);
      // through the checkpoint format
      states[static_cast<std::size_t>(c.rank())] =
          io::read_allocator_checkpoint(io::safetensors_file::parse(io::allocator_checkpoint_bytes(alloc.save_state())));
    });
    for (const auto& e : errors)
      if (e) std::rethrow_exception(e);
    return states;
  };
  // resume the rest on `size` ranks held as `kind`, each rank cut from `states`
  auto resume = [&](const std::vector<allocator_state>& states, layout_kind kind, int size) {
    std::vector<run_record> records(static_cast<std::size_t>(size));
    thread_group group(size, std::chrono::seconds(60));
    const auto errors = group.run([&](thread_communicator c) {
      rank_tensors<eigen_backend> t(s, parts_of(s, kind, c.rank(), c.size()));
      alloc_t alloc(s.config, c, kind == layout_kind::replicated ? ownership::replicated : ownership::partitioned);
      t.register_with(alloc);
      alloc.restore_state(reshard_allocator_states(states, alloc.save_state()));
      records[static_cast<std::size_t>(c.rank())] = t.run(alloc, split);
    });
    for (const auto& e : errors)
      if (e) std::rethrow_exception(e);
    return records;
  };
  const auto three = saved(layout_kind::sharded, 3);
  for (const auto& r : resume(three, layout_kind::sharded, 2)) REQUIRE(first_difference(r, tail) == "");
  for (const auto& r : resume(three, layout_kind::disjoint, 4)) REQUIRE(first_difference(r, tail) == "");
  for (const auto& r : resume(three, layout_kind::replicated, 2)) REQUIRE(first_difference(r, tail) == "");
  // into one process, and from one process (or replicas) onto partitioned ranks
  {
    rank_allocator<eigen_backend> one(s.config);
    std::vector<rank_part> whole;
    for (std::size_t k = 0; k < s.adapters.size(); ++k) whole.push_back({k, 0, s.adapters[k].in, 0, s.adapters[k].out, true, true});
    rank_tensors<eigen_backend> t(s, whole);
    t.register_with(one);
    one.restore_state(reshard_allocator_states(three, one.save_state()));
    REQUIRE(first_difference(t.run(one, split), tail) == "");
  }
  for (const auto& r : resume(saved(layout_kind::replicated, 2), layout_kind::sharded, 4))
    REQUIRE(first_difference(r, tail) == "");
  // what cannot be cut: a rank's state missing, states of different steps
  auto missing = three;
  missing.pop_back();
  thread_group one_rank(1);
  alloc_t target(s.config, one_rank.communicator(0), ownership::partitioned);
  rank_tensors<eigen_backend> t(s, parts_of(s, layout_kind::disjoint, 0, 1));
  t.register_with(target);
  REQUIRE_THROWS_WITH(reshard_allocator_states(missing, target.save_state()),
                      Catch::Contains("the run had 3 ranks, but 2 states were given"));
  auto mixed = three;
  mixed[1].last_step = 3;
  REQUIRE_THROWS_WITH(reshard_allocator_states(mixed, target.save_state()),
                      Catch::Contains("saved states 0 and 1 are of different steps"));
}
