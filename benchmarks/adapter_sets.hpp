// The adapter sets the allocator benchmarks run on (DeBERTa-v3-base- and LLaMA-7B-shaped, init_r 12) and their config.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "adalora/core/config.hpp"

namespace bench {

inline constexpr std::size_t init_r = 12;

struct adapter_shape {
  std::string name;
  std::size_t in, out;
};

/// DeBERTa-v3-base: 12 layers × {query, key, value, attention.output.dense (768 × 768), intermediate.dense
/// (768 → 3072), output.dense (3072 → 768)}: 72 adapters.
inline std::vector<adapter_shape> deberta_shapes() {
  std::vector<adapter_shape> s;
  for (int l = 0; l < 12; ++l) {
    const std::string p = "deberta.encoder.layer." + std::to_string(l) + ".";
    for (const char* m : {"attention.self.query_proj", "attention.self.key_proj", "attention.self.value_proj",
                          "attention.output.dense"})
      s.push_back({p + m, 768, 768});
    s.push_back({p + "intermediate.dense", 768, 3072});
    s.push_back({p + "output.dense", 3072, 768});
  }
  return s;
}

/// LLaMA-7B: 32 layers × {q, k, v, o (4096 × 4096), gate, up (4096 → 11008), down (11008 → 4096)}: 224 adapters.
inline std::vector<adapter_shape> llama_shapes() {
  std::vector<adapter_shape> s;
  for (int l = 0; l < 32; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    for (const char* m : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"})
      s.push_back({p + m, 4096, 4096});
    s.push_back({p + "mlp.gate_proj", 4096, 11008});
    s.push_back({p + "mlp.up_proj", 4096, 11008});
    s.push_back({p + "mlp.down_proj", 11008, 4096});
  }
  return s;
}

/// A config whose steps from `first_step` on are all update-only (warm-up) or all mask steps (budgeting,
/// deltaT = 1, budget about bT + (b0 − bT)/8, so about 1/3 of the singular values are pruned each time).
inline adalora::adalora_config bench_config(bool mask, std::int64_t& first_step) {
  adalora::adalora_config c;
  c.init_r = static_cast<std::int64_t>(init_r);
  c.target_r = 8;
  c.deltaT = 1;
  c.total_step = std::int64_t{1} << 41;
  c.tfinal = 0;
  if (mask) {
    c.tinit = 0;
    first_step = c.total_step / 2;
  } else {
    c.tinit = std::int64_t{1} << 40;
    first_step = 0;
  }
  return c;
}

}  // namespace bench
