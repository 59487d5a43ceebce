// The owning SVD-form adapter ΔW = P Λ Q (SPEC §1): PEFT's init and scaling, views for the allocator, shrinking.
#pragma once

#include <cstddef>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "adalora/adapters/detail/low_rank_adapter.hpp"
#include "adalora/adapters/svd_adapter_views.hpp"
#include "adalora/core/config.hpp"

namespace adalora {

/// How an adapter is built: PEFT's lora_alpha and lora_dropout, the rank its scaling is fixed at, a seed.
struct adapter_options {
  double lora_alpha = 8.0;      ///< α; α ≤ 0 means α = init_r
  double lora_dropout = 0.0;    ///< dropout on the adapter's input, in training mode
  std::size_t init_r = 0;       ///< rank in the scaling α/(init_r + 1e-5); 0 means the adapter's own rank
  std::uint64_t seed = 0;       ///< seeds the initialization and the dropout masks
};

/// SVD adapter: P = lora_B (out × r), λ = lora_E (r), Q = lora_A (r × in); y += s·((drop(x) Qᵀ) ⊙ λ) Pᵀ with
/// s = α / (init_r + 1e-5), fixed for life (pruning and shrinking never change it). Init as PEFT: λ = 0 and
/// P, Q ~ N(0, 0.02²), so a new adapter leaves the base layer's output exactly unchanged.
template <Backend B>
class svd_adapter : public detail::low_rank_adapter<B, true> {
  using base = detail::low_rank_adapter<B, true>;

public:
  using typename base::memory_space;

  svd_adapter(std::size_t in_features, std::size_t out_features, std::size_t r, const adapter_options& o = {},
              B backend = B{})
      : base(in_features, out_features, r, scaling_for(o, r), static_cast<float>(o.lora_dropout), o.seed,
             std::move(backend)),
        init_r_(o.init_r ? o.init_r : r),
        alpha_(o.lora_alpha) {
    this->init(this->A_, std::normal_distribution<double>(0.0, 0.02), 1);
    this->init(this->B_, std::normal_distribution<double>(0.0, 0.02), 2);
  }

  /// An adapter of rank init_r with the config's lora_alpha and lora_dropout.
  static svd_adapter from_config(std::size_t in_features, std::size_t out_features, const adalora_config& c,
                                 std::uint64_t seed, B backend = B{}) {
    c.validate();
    adapter_options o;
    o.lora_alpha = c.lora_alpha;
    o.lora_dropout = c.lora_dropout;
    o.init_r = static_cast<std::size_t>(c.init_r);
    o.seed = seed;
    return svd_adapter(in_features, out_features, o.init_r, o, std::move(backend));
  }

  std::size_t init_r() const noexcept { return init_r_; }

  vector_view<float, memory_space> lora_E() noexcept { return make_vector_view<memory_space>(this->E_.data(), this->r_); }
  vector_view<float, memory_space> grad_E() noexcept {
    return make_vector_view<memory_space>(this->grad_E_.data(), this->r_);
  }

  /// Views of the parameters and gradients, to register with a rank_allocator.
  svd_adapter_views<float, memory_space> allocator_views() noexcept {
    const std::size_t r = this->r_, in = this->in_, out = this->out_;
    return {this->lora_A(),
            lora_E(),
            this->lora_B(),
            make_matrix_view<memory_space>(static_cast<const float*>(this->grad_A_.data()), r, in),
            make_vector_view<memory_space>(static_cast<const float*>(this->grad_E_.data()), r),
            make_matrix_view<memory_space>(static_cast<const float*>(this->grad_B_.data()), out, r)};
  }

  /// An adapter of rank Σ keep holding only the kept triplets (SPEC §7), with the same scaling: its output equals
  /// this adapter's with the pruned λ set to 0. A rank of 0 is allowed.
  svd_adapter shrink(const std::vector<bool>& keep) const {
    if (keep.size() != this->r_)
      throw shape_error("shrink(): the rank pattern has " + std::to_string(keep.size()) +
                        " entries, the adapter rank " + std::to_string(this->r_));
    std::vector<std::size_t> kept;
    for (std::size_t i = 0; i < keep.size(); ++i)
      if (keep[i]) kept.push_back(i);
    adapter_options o;
    o.lora_alpha = alpha_;
    o.lora_dropout = this->dropout_;
    o.init_r = init_r_;
    o.seed = this->seed_;
    B backend = this->backend_;
    svd_adapter s(this->in_, this->out_, kept.size(), o, backend);
    const std::size_t k = kept.size();
    if (k) {
      auto index = backend.template allocate<std::size_t>(k);
      backend.copy_from_host(kept.data(), k, index.data());
      backend.for_each(k * this->in_, detail::gather_rows_fn{this->A_.data(), index.data(), this->in_, s.A_.data()});
      backend.for_each(k, detail::gather_rows_fn{this->E_.data(), index.data(), 1, s.E_.data()});
      backend.for_each(this->out_ * k,
                       detail::gather_cols_fn{this->B_.data(), index.data(), this->r_, k, s.B_.data()});
    }
    s.training_ = this->training_;
    return s;
  }

private:
  static float scaling_for(const adapter_options& o, std::size_t r) {
    const std::size_t init_r = o.init_r ? o.init_r : r;
    const float alpha = o.lora_alpha > 0.0 ? static_cast<float>(o.lora_alpha) : static_cast<float>(init_r);
    return alpha / (static_cast<float>(init_r) + 1e-5f);
  }

  std::size_t init_r_;
  double alpha_;
};

}  // namespace adalora
