// A host snapshot of a rank_allocator's whole state: what a checkpoint stores to resume a run bit for bit.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "adalora/core/config.hpp"

namespace adalora {

/// Everything that decides the allocator's future: progress, importance state, selection and frozen pattern.
struct allocator_state {
  struct adapter_shape {
    std::string name;
    std::size_t r = 0, in = 0, out = 0;
    bool operator==(const adapter_shape&) const = default;
  };

  /// What a distributed allocator's rank adds: who saved it and how the adapters were owned.
  struct distributed_info {
    /// This rank's part of one adapter, in the adapter's global coordinates (see adapter_shard).
    struct part {
      std::size_t in = 0, out = 0, in_offset = 0, out_offset = 0;
      bool counts_lambda = true;
      bool operator==(const part&) const = default;
    };
    int rank = 0;
    int ranks = 1;
    std::string ownership;  ///< "replicated" or "partitioned"
    std::string sums;       ///< partitioned: "exact" or "per_triplet"
    std::vector<part> parts;                     ///< one per adapter of `adapters`
    std::vector<adapter_shape> global_adapters;  ///< the adapters `keep` and `scores` run over, in their order
  };

  adalora_config config;
  std::string metric;    ///< the importance metric's name
  std::string schedule;  ///< the budget schedule's name
  std::vector<adapter_shape> adapters;
  std::optional<std::int64_t> last_step;
  std::int64_t budget = 0;
  std::optional<float> threshold;
  bool frozen = false;
  bool importance_live = false;
  std::vector<float> importance;  ///< state_count planes of Σ r·(in + 1 + out) floats, when live
  std::vector<std::uint8_t> keep;  ///< the latest selection's rank pattern over all b0 values (empty before one)
  std::vector<float> scores;       ///< the latest selection's triplet scores (empty before one)
  /// Saved by a rank of a distributed allocator (absent for one process). Partitioned: `adapters`, `importance`
  /// are this rank's parts (shapes as registered), `keep` and `scores` the union's, over `global_adapters`.
  std::optional<distributed_info> distributed;
};

}  // namespace adalora
