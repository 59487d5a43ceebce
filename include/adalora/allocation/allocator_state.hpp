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
};

}  // namespace adalora
