// One AdaLoRA budget over MPI ranks: run with `mpirun -np 2 build/examples/distributed_allocator` (any rank count).
//
// Eight adapters of a small model, held the way a pipeline + tensor-parallel trainer holds them: the q and v
// adapters of each layer belong whole to one rank (pipeline stages), the fc adapter of each layer is split across
// every rank (tensor parallel: the rows of lora_B, with lora_A and λ replicated and counted on one rank). Each rank
// registers only what it holds, trains on synthetic gradients, and calls step(t); the ranks exchange score sums on
// mask steps, and every rank prints the same ranks — those one process holding all adapters would reach, which
// each rank also computes here to show it.
#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "adalora/adalora.hpp"
#include "adalora/distributed/mpi/mpi_communicator.hpp"

namespace {

struct adapter {
  std::string name;
  std::size_t r, in, out;
  int owner;        // the rank that holds it whole (-1: split across every rank)
};

// The tensors a rank holds of one adapter, PEFT's layout, with their gradients.
struct held {
  std::size_t adapter, row0, rows;  // lora_B rows [row0, row0 + rows) (all rows when held whole)
  std::vector<float> A, E, B, gA, gE, gB;
};

// Synthetic "training": parameters and gradients of adapter k at step t, the same on every rank and every run.
void fill(held& h, const adapter& a, std::int64_t t, std::size_t k, bool with_A) {
  std::mt19937 rng(static_cast<unsigned>(1000 * t + k));
  std::normal_distribution<float> n(0.0f, 1.0f);
  // adapter-dependent gradient scale, so that AdaLoRA keeps more ranks of some adapters than of others
  const float scale = 0.5f + 0.25f * static_cast<float>((5 * k) % 7);
  std::vector<float> A(a.r * a.in), gA(a.r * a.in), E(a.r), gE(a.r), B(a.out * a.r), gB(a.out * a.r);
  for (auto* v : {&A, &E, &B}) for (auto& x : *v) x = 0.1f * n(rng);
  for (auto* v : {&gA, &gE, &gB}) for (auto& x : *v) x = scale * n(rng);
  if (with_A) h.A = A, h.gA = gA;
  h.E = E;
  h.gE = gE;
  h.B.assign(B.begin() + static_cast<std::ptrdiff_t>(h.row0 * a.r), B.begin() + static_cast<std::ptrdiff_t>((h.row0 + h.rows) * a.r));
  h.gB.assign(gB.begin() + static_cast<std::ptrdiff_t>(h.row0 * a.r), gB.begin() + static_cast<std::ptrdiff_t>((h.row0 + h.rows) * a.r));
}

// Trains, and returns the rank of every adapter of the model, in the model's order.
template <class Allocator>
std::vector<std::int64_t> train(Allocator& alloc, std::vector<held>& parts, const std::vector<adapter>& model,
                                const adalora::adalora_config& cfg) {
  for (std::int64_t t = 0; t < cfg.total_step; ++t) {
    for (auto& h : parts) fill(h, model[h.adapter], t, h.adapter, !h.A.empty());
    // forward, backward and optimizer.step() would be here; then, on every rank, the allocator:
    alloc.step(t);
  }
  std::vector<std::int64_t> ranks;
  for (const auto& a : model) {
    const auto pattern = alloc.rank_pattern(a.name);  // any adapter of any rank
    ranks.push_back(std::count(pattern.begin(), pattern.end(), true));
  }
  return ranks;
}

adalora::svd_adapter_views<float> views_of(held& h, std::size_t r) {
  const std::size_t in = h.A.size() / r;
  return {adalora::make_matrix_view(h.A.data(), r, in),  adalora::make_vector_view(h.E.data(), r),
          adalora::make_matrix_view(h.B.data(), h.rows, r), adalora::make_matrix_view(h.gA.data(), r, in),
          adalora::make_vector_view(h.gE.data(), r),        adalora::make_matrix_view(h.gB.data(), h.rows, r)};
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);

  adalora::adalora_config cfg;
  cfg.init_r = 6;
  cfg.target_r = 2;
  cfg.tinit = 10;
  cfg.tfinal = 10;
  cfg.deltaT = 5;
  cfg.total_step = 100;

  std::vector<adapter> model;
  for (int layer = 0; layer < 3; ++layer) {
    const std::string p = "layers." + std::to_string(layer) + ".";
    model.push_back({p + "q", 6, 64, 64, (2 * layer) % size});
    model.push_back({p + "v", 6, 64, 64, (2 * layer + 1) % size});
    model.push_back({p + "fc", 6, 64, 256, -1});
  }

  int status = 0;
  try {
    // ---- the distributed allocator: this rank's parts only
    using allocator =
        adalora::rank_allocator<adalora::eigen_backend, adalora::sensitivity_uncertainty, adalora::cubic_schedule,
                                float, adalora::mpi_communicator>;
    allocator alloc(cfg, adalora::mpi_communicator(MPI_COMM_WORLD), adalora::ownership::partitioned);
    std::vector<held> mine;
    mine.reserve(model.size());
    for (std::size_t k = 0; k < model.size(); ++k) {
      const adapter& a = model[k];
      if (a.owner == rank) {
        mine.push_back({k, 0, a.out, std::vector<float>(a.r * a.in), {}, {}, {}, {}, {}});
        fill(mine.back(), a, 0, k, true);
        alloc.add_adapter(a.name, views_of(mine.back(), a.r));
      } else if (a.owner < 0) {
        // tensor parallel: this rank's rows of lora_B; lora_A (replicated) counted on rank 0 only
        const std::size_t row0 = a.out * static_cast<std::size_t>(rank) / static_cast<std::size_t>(size);
        const std::size_t row1 = a.out * static_cast<std::size_t>(rank + 1) / static_cast<std::size_t>(size);
        mine.push_back({k, row0, row1 - row0, std::vector<float>(rank == 0 ? a.r * a.in : 0), {}, {}, {}, {}, {}});
        fill(mine.back(), a, 0, k, rank == 0);
        alloc.add_adapter(a.name, views_of(mine.back(), a.r), adalora::adapter_shard{a.in, a.out, 0, row0, rank == 0});
      }
    }
    const auto ranks = train(alloc, mine, model, cfg);

    // ---- for comparison: one process holding every adapter
    adalora::rank_allocator<adalora::eigen_backend> single(cfg);
    std::vector<held> all;
    all.reserve(model.size());
    for (std::size_t k = 0; k < model.size(); ++k) {
      all.push_back({k, 0, model[k].out, std::vector<float>(model[k].r * model[k].in), {}, {}, {}, {}, {}});
      fill(all.back(), model[k], 0, k, true);
      single.add_adapter(model[k].name, views_of(all.back(), model[k].r));
    }
    const auto expected = train(single, all, model, cfg);

    std::string line = "rank " + std::to_string(rank) + " of " + std::to_string(size) + ": ranks";
    for (std::size_t k = 0; k < ranks.size(); ++k) line += " " + model[k].name + "=" + std::to_string(ranks[k]);
    line += ranks == expected ? "  (= one process)" : "  (DIFFERS from one process)";
    std::printf("%s\n", line.c_str());
    if (ranks != expected) status = 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rank %d: %s\n", rank, e.what());
    status = 1;
  }
  MPI_Finalize();
  return status;
}
