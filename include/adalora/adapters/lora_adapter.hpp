// Plain LoRA (ΔW = B A, scaling α/r): the fixed-budget baseline AdaLoRA is compared against.
#pragma once

#include <cmath>
#include <cstddef>
#include <random>

#include "adalora/adapters/detail/low_rank_adapter.hpp"
#include "adalora/adapters/svd_adapter.hpp"

namespace adalora {

/// LoRA adapter: A (r × in) ~ U(−1/√in, 1/√in) (PEFT's kaiming-uniform with a = √5), B (out × r) = 0,
/// y += (α/r)·(drop(x) Aᵀ) Bᵀ. A new adapter leaves the base layer's output unchanged.
template <Backend B>
class lora_adapter : public detail::low_rank_adapter<B, false> {
  using base = detail::low_rank_adapter<B, false>;

public:
  lora_adapter(std::size_t in_features, std::size_t out_features, std::size_t r, const adapter_options& o = {},
               B backend = B{})
      : base(in_features, out_features, r, scaling_for(o, r), static_cast<float>(o.lora_dropout), o.seed,
             std::move(backend)) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(in_features));
    this->init(this->A_, std::uniform_real_distribution<double>(-bound, bound), 1);
  }

private:
  static float scaling_for(const adapter_options& o, std::size_t r) {
    if (r == 0) return 0.0f;
    const double alpha = o.lora_alpha > 0.0 ? o.lora_alpha : static_cast<double>(r);
    return static_cast<float>(alpha / static_cast<double>(r));
  }
};

}  // namespace adalora
