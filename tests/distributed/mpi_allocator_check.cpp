// The distributed allocator over MPI (run under mpiexec): every ownership against one process, bit for bit; the
// failure cases ending with the same error on every rank; per-rank checkpoints. Exit status 0 when every rank passed.
//   mpi_allocator_check run LAYOUT [per_triplet]   LAYOUT: replicated, disjoint, lopsided, sharded
//   mpi_allocator_check error CASE                 CASE: config, adapters, shards, non_finite, steps, divergence
//   mpi_allocator_check checkpoint FOLDER          save per rank, resume, and refuse another rank count
#include <mpi.h>

#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "adalora/backends/eigen/eigen_backend.hpp"
#include "adalora/distributed/mpi/mpi_communicator.hpp"
#include "adalora/importance/magnitude.hpp"
#include "adalora/io/allocator_checkpoint.hpp"
#include "distributed/scenarios.hpp"
#include "support/trace_files.hpp"

using namespace adalora;
using namespace adalora::testing::distributed;

namespace {

using alloc_t = distributed_allocator<eigen_backend, mpi_communicator>;

int world_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

/// Prints this rank's verdict and returns whether every rank passed.
bool every_rank_passed(bool mine, const std::string& what) {
  std::printf("rank %d: %s: %s\n", world_rank(), mine ? "ok" : "FAILED", what.c_str());
  std::fflush(stdout);
  int ok = mine ? 1 : 0, all = 0;
  MPI_Allreduce(&ok, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  return all == 1;
}

/// Every PEFT allocation trace the repository keeps, then the tiled scenario.
std::vector<scenario> scenarios() {
  std::vector<scenario> v;
  for (const auto& f : adalora::testing::trace_files("alloc-")) v.push_back(trace_scenario(f.string()));
  v.push_back(tiled_scenario());
  return v;
}

layout_kind layout_of(const std::string& name) {
  for (layout_kind k : {layout_kind::replicated, layout_kind::disjoint, layout_kind::lopsided, layout_kind::sharded})
    if (name == layout_name(k)) return k;
  throw usage_error("unknown layout '" + name + "'");
}

int run(const std::string& layout, bool per_triplet) {
  const layout_kind kind = layout_of(layout);
  distributed_options o;
  if (per_triplet) o.sums = shard_sums::per_triplet;
  bool ok = true;
  std::string report;
  // per_triplet: split lines may differ from one process in a score's last bits (the masks still agree here)
  const score_match match = per_triplet && kind == layout_kind::sharded ? score_match{false, 1e-6} : score_match{};
  auto check = [&](const std::string& name, const run_record& mine, const run_record& single) {
    const std::string diff = first_difference(mine, single, match);
    if (!diff.empty() || !prunes(single)) ok = false;
    report += " " + name + (diff.empty() ? " = one process" : ": " + diff);
  };
  for (const auto& s : scenarios())  // each rank holds the reference itself
    check(s.name, run_rank<eigen_backend>(s, kind, mpi_communicator(MPI_COMM_WORLD), o), run_single<eigen_backend>(s));
  if (!per_triplet) {
    // where the summation order shows in the scores (magnitude metric)
    const scenario r = rounding_scenario();
    check(r.name, run_rank<eigen_backend, magnitude>(r, kind, mpi_communicator(MPI_COMM_WORLD), o),
          run_single<eigen_backend, magnitude>(r));
  }
  return every_rank_passed(ok, layout + (per_triplet ? " (per_triplet)" : "") + ":" + report) ? 0 : 1;
}

/// Runs `f` on this rank and checks that it threw E containing `text`, and that every rank's message is the same.
template <class E>
int expect_everywhere(const std::string& name, const std::string& text, const std::function<void()>& f) {
  std::string message;
  bool right_type = false;
  try {
    f();
  } catch (const E& e) {
    message = e.what();
    right_type = true;
  } catch (const std::exception& e) {
    message = std::string("another exception: ") + e.what();
  }
  // the same message on every rank: compare with rank 0's
  int length = static_cast<int>(message.size());
  MPI_Bcast(&length, 1, MPI_INT, 0, MPI_COMM_WORLD);
  std::string first(static_cast<std::size_t>(length), '\0');
  if (world_rank() == 0) first = message;
  MPI_Bcast(first.data(), length, MPI_CHAR, 0, MPI_COMM_WORLD);
  const bool ok = right_type && message.find(text) != std::string::npos && message == first;
  return every_rank_passed(ok, name + ": " + (message.empty() ? "no exception" : message)) ? 0 : 1;
}

int error_case(const std::string& which) {
  const scenario s = which == "shards" ? tiled_scenario()
                                       : trace_scenario((adalora::testing::traces_dir() / "alloc-basic.safetensors").string());
  const mpi_communicator comm(MPI_COMM_WORLD);
  const int rank = comm.rank(), size = comm.size();
  const bool last = rank == size - 1;  // the rank that differs
  // this rank's part of `kind`, as `change` leaves it, registered with an allocator of `cfg`
  auto with = [&](layout_kind kind, auto change, auto body, adalora_config cfg, distributed_options o = {}) {
    return [=, &s] {
      auto parts = parts_of(s, kind, rank, size);
      change(parts);
      rank_tensors<eigen_backend> t(s, parts);
      alloc_t alloc(cfg, comm, kind == layout_kind::replicated ? ownership::replicated : ownership::partitioned, o);
      t.register_with(alloc);
      body(t, alloc);
    };
  };
  const auto same = [](std::vector<rank_part>&) {};
  const auto first_step = [](auto& t, auto& alloc) { t.run(alloc, 0, 1); };
  if (which == "config") {
    adalora_config cfg = s.config;
    if (last) cfg.deltaT = 5;
    return expect_everywhere<config_error>(which, "the config's deltaT differs",
                                           with(layout_kind::disjoint, same, first_step, cfg));
  }
  if (which == "adapters")
    return expect_everywhere<usage_error>(
        which, "the adapters differ",
        with(layout_kind::replicated, [&](std::vector<rank_part>& p) { if (last) p.pop_back(); }, first_step, s.config));
  if (which == "shards")  // the last rank's slice of wide_q is missing
    return expect_everywhere<shape_error>(
        which, "no rank holds rows of lora_B",
        with(layout_kind::sharded, [&](std::vector<rank_part>& p) { if (last) p.erase(p.begin()); }, first_step, s.config));
  if (which == "non_finite")
    return expect_everywhere<non_finite_error>(which, "ranks failed their part of the step",
                                               with(layout_kind::disjoint, same,
                                                    [&](auto& t, auto& alloc) {
                                                      t.run(alloc, 0, 6);
                                                      t.load(s.steps[6]);
                                                      if (last) t.poke_gradient(0, 0, std::numeric_limits<float>::infinity());
                                                      alloc.step(s.steps[6]);
                                                    },
                                                    s.config));
  if (which == "steps")
    return expect_everywhere<usage_error>(which, "the ranks called different steps",
                                          with(layout_kind::disjoint, same,
                                               [&](auto& t, auto& alloc) {
                                                 t.run(alloc, 0, 4);
                                                 alloc.step(last ? 5 : 4);
                                               },
                                               s.config));
  if (which == "divergence") {
    distributed_options o;
    o.check_replicas = true;
    return expect_everywhere<replica_divergence_error>(which, "the replicas' triplet scores differ",
                                                       with(layout_kind::replicated, same,
                                                            [&](auto& t, auto& alloc) {
                                                              t.run(alloc, 0, 6);
                                                              t.load(6);
                                                              if (last) t.poke_gradient(1, 0, 1000.0f);
                                                              alloc.step(6);
                                                            },
                                                            s.config, o));
  }
  throw usage_error("unknown error case '" + which + "'");
}

int checkpoint(const std::filesystem::path& folder) {
  const scenario s = tiled_scenario();
  const run_record single = run_single<eigen_backend>(s);
  const mpi_communicator comm(MPI_COMM_WORLD);
  const int rank = comm.rank(), size = comm.size();
  const auto file = folder / ("allocator-rank-" + std::to_string(rank) + ".safetensors");
  std::filesystem::create_directories(folder);
  const std::size_t split = 9;
  run_record record;
  {
    rank_tensors<eigen_backend> t(s, parts_of(s, layout_kind::sharded, rank, size));
    alloc_t alloc(s.config, comm, ownership::partitioned);
    t.register_with(alloc);
    record = t.run(alloc, 0, split);
    io::save_checkpoint(alloc, file);
  }
  {
    // the next process: the same ranks, each from its own file
    rank_tensors<eigen_backend> t(s, parts_of(s, layout_kind::sharded, rank, size));
    alloc_t alloc(s.config, comm, ownership::partitioned);
    t.register_with(alloc);
    io::load_checkpoint(alloc, file);
    const auto rest = t.run(alloc, split);
    record.insert(record.end(), rest.begin(), rest.end());
  }
  const std::string diff = first_difference(record, single);
  int failed = every_rank_passed(diff.empty(), "saved after " + std::to_string(split) + " steps and resumed: " +
                                                   (diff.empty() ? "= one process" : diff))
                   ? 0
                   : 1;
  // one rank fewer: refused with a clear error (the ranks of the smaller group each try their own file)
  MPI_Comm fewer = MPI_COMM_NULL;
  MPI_Comm_split(MPI_COMM_WORLD, rank < size - 1 ? 0 : MPI_UNDEFINED, rank, &fewer);
  std::string message = "(not in the smaller group)";
  bool ok = true;
  if (fewer != MPI_COMM_NULL) {
    {
      const mpi_communicator small(fewer);
      rank_tensors<eigen_backend> t(s, parts_of(s, layout_kind::sharded, small.rank(), small.size()));
      alloc_t alloc(s.config, small, ownership::partitioned);
      t.register_with(alloc);
      try {
        io::load_checkpoint(alloc, file);
        message = "restored, but should have been refused";
        ok = false;
      } catch (const usage_error& e) {
        message = e.what();
        ok = message.find("it was saved by rank " + std::to_string(rank) + " of " + std::to_string(size) +
                          " and this is rank " + std::to_string(rank) + " of " + std::to_string(size - 1)) !=
             std::string::npos;
      }
    }
    MPI_Comm_free(&fewer);
  }
  if (!every_rank_passed(ok, "restored on " + std::to_string(size - 1) + " ranks: " + message)) failed = 1;
  return failed;
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int status = 2;
  try {
    const std::vector<std::string> args(argv + 1, argv + argc);
    if (args.size() >= 2 && args[0] == "run")
      status = run(args[1], args.size() > 2 && args[2] == "per_triplet");
    else if (args.size() == 2 && args[0] == "error")
      status = error_case(args[1]);
    else if (args.size() == 2 && args[0] == "checkpoint")
      status = checkpoint(args[1]);
    else
      std::fprintf(stderr, "usage: mpi_allocator_check run LAYOUT [per_triplet] | error CASE | checkpoint FOLDER\n");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rank %d: unexpected exception: %s\n", world_rank(), e.what());
    MPI_Abort(MPI_COMM_WORLD, 3);
  }
  MPI_Finalize();
  return status;
}
