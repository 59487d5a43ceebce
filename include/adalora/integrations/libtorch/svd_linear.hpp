// adalora::libtorch::SVDLinear: a frozen torch Linear plus the SVD adapter P Λ Q, with PEFT's names, init and scaling.
#pragma once

#include <ATen/ops/dropout.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/arg.h>
#include <torch/nn/init.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/parameterdict.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>
#include <torch/utils.h>

#include <cstdint>
#include <ostream>
#include <string>

#include "adalora/adapters/orthogonal_regularizer.hpp"
#include "adalora/core/config.hpp"
#include "adalora/core/error.hpp"
#include "adalora/integrations/libtorch/attach.hpp"
#include "adalora/integrations/libtorch/orthogonal_regularizer.hpp"
#include "adalora/integrations/libtorch/tensor_views.hpp"

namespace adalora::libtorch {

/// How an SVDLinear is built (PEFT's AdaLoRA layer arguments).
struct SVDLinearOptions {
  SVDLinearOptions(std::int64_t in_features, std::int64_t out_features, std::int64_t r)
      : in_features_(in_features), out_features_(out_features), r_(r) {}

  /// r = init_r, lora_alpha and lora_dropout from a config.
  static SVDLinearOptions from_config(std::int64_t in_features, std::int64_t out_features, const adalora_config& c) {
    c.validate();
    return SVDLinearOptions(in_features, out_features, c.init_r).lora_alpha(c.lora_alpha).lora_dropout(c.lora_dropout);
  }

  TORCH_ARG(std::int64_t, in_features);
  TORCH_ARG(std::int64_t, out_features);
  /// The adapter's rank: the number of singular triplets P Λ Q holds.
  TORCH_ARG(std::int64_t, r);
  /// α; α ≤ 0 means α = init_r.
  TORCH_ARG(double, lora_alpha) = 8.0;
  /// Dropout on the adapter's input, in training mode.
  TORCH_ARG(double, lora_dropout) = 0.0;
  /// The rank the scaling is fixed at, α / (init_r + 1e-5); 0 means r. Set it when rebuilding a shrunk adapter.
  TORCH_ARG(std::int64_t, init_r) = 0;
  /// Whether a new base Linear has a bias (a wrapped one keeps its own).
  TORCH_ARG(bool, bias) = true;
  /// "" names the parameters "lora_A", "lora_E", "lora_B"; a name such as "default" gives PEFT's in-memory names
  /// "lora_A.default", ... (ParameterDicts). attach() takes either.
  TORCH_ARG(std::string, adapter_name) = "";
};

/// A torch::nn::Linear whose weight (and bias) are frozen, plus a trainable SVD adapter (SPEC §1):
///   y = base_layer(x) + s · ((drop(x) Qᵀ) ⊙ λ) Pᵀ,   s = α / (init_r + 1e-5) in float32, fixed for life,
/// with Q = lora_A (r, in), λ = lora_E (r, 1), P = lora_B (out, r), initialised as PEFT does (λ = 0, P and Q from
/// N(0, 0.02²) with torch's generator: torch::manual_seed makes it repeatable), so a new layer computes exactly its
/// base layer. Parameter names are PEFT's — "base_layer.weight", "base_layer.bias", "lora_A", "lora_E", "lora_B"
/// (or "lora_A.<adapter_name>", ...) — so attach() finds the adapter and io/peft_adapter.hpp exports it under the
/// module's path in the model. Forward and backward equal adalora::svd_adapter's within float32 rounding.
///
/// Not Cloneable (clone() throws): a wrapped base layer is shared with its owner, which a deep copy would break.
class SVDLinearImpl : public torch::nn::Module, public adapter_module_info {
public:
  /// A new base Linear (torch's default initialisation), frozen, and a new adapter.
  explicit SVDLinearImpl(const SVDLinearOptions& options) : SVDLinearImpl(nullptr, options) {}

  /// Wraps an existing Linear in a new adapter of rank init_r with the config's lora_alpha and lora_dropout.
  SVDLinearImpl(torch::nn::Linear base, const adalora_config& config)
      : SVDLinearImpl(base, SVDLinearOptions::from_config(base->weight.size(1), base->weight.size(0), config)) {}

  /// Wraps an existing Linear (its weight and bias are shared with it and frozen) in a new adapter; options'
  /// in_features and out_features must be the Linear's (shape_error).
  SVDLinearImpl(torch::nn::Linear base, const SVDLinearOptions& options) : options_(options) {
    if (options.in_features() <= 0 || options.out_features() <= 0 || options.r() < 0)
      throw shape_error("SVDLinear: in_features " + std::to_string(options.in_features()) + ", out_features " +
                        std::to_string(options.out_features()) + ", r " + std::to_string(options.r()) +
                        "; need in, out > 0 and r >= 0");
    if (!(options.lora_dropout() >= 0.0 && options.lora_dropout() < 1.0))
      throw config_error("SVDLinear: lora_dropout = " + std::to_string(options.lora_dropout()) +
                         "; need 0 <= lora_dropout < 1");
    if (options.init_r() < 0) throw config_error("SVDLinear: init_r = " + std::to_string(options.init_r()) + " < 0");
    if (base) {
      const auto& w = base->weight;
      if (w.size(0) != options.out_features() || w.size(1) != options.in_features())
        throw shape_error("SVDLinear: the wrapped Linear's weight is " + describe(w) + " but the options say in " +
                          std::to_string(options.in_features()) + ", out " + std::to_string(options.out_features()));
      options_.bias(base->bias.defined());
    } else {
      base = torch::nn::Linear(
          torch::nn::LinearOptions(options.in_features(), options.out_features()).bias(options.bias()));
    }
    base_layer = register_module("base_layer", std::move(base));
    for (auto& p : base_layer->parameters()) p.set_requires_grad(false);

    const auto init_r = options.init_r() ? options.init_r() : options.r();
    const float alpha =
        options.lora_alpha() > 0.0 ? static_cast<float>(options.lora_alpha()) : static_cast<float>(init_r);
    scaling_ = alpha / (static_cast<float>(init_r) + 1e-5f);

    const auto wopts = base_layer->weight.options().requires_grad(false);
    const auto r = options.r(), in = options.in_features(), out = options.out_features();
    lora_A_ = add_parameter("lora_A", at::empty({r, in}, wopts));
    lora_E_ = add_parameter("lora_E", at::zeros({r, 1}, wopts));
    lora_B_ = add_parameter("lora_B", at::empty({out, r}, wopts));
    torch::NoGradGuard no_grad;
    torch::nn::init::normal_(lora_A_, 0.0, 0.02);
    torch::nn::init::normal_(lora_B_, 0.0, 0.02);
  }

  /// y = base_layer(x) + s · ((drop(x) Qᵀ) ⊙ λ) Pᵀ over the last dimension of x (any leading dimensions); while
  /// merged, only base_layer(x) (its weight holds the adapter).
  at::Tensor forward(const at::Tensor& x) {
    at::Tensor y = base_layer->forward(x);
    if (merged_ || options_.r() == 0) return y;
    const at::Tensor xd =
        options_.lora_dropout() > 0.0 && is_training() ? at::dropout(x, options_.lora_dropout(), true) : x;
    const at::Tensor h = xd.matmul(lora_A_.t());                   // (..., r)
    const at::Tensor t = h * lora_E_.reshape({1, -1}) * scaling_;  // ⊙ λ, then · s (svd_adapter's order)
    return y + t.matmul(lora_B_.t());
  }

  /// ΔW = s · P diag(λ) Q (out, in), without gradient.
  at::Tensor delta_weight() const {
    torch::NoGradGuard no_grad;
    return (lora_B_ * lora_E_.reshape({1, -1}) * scaling_).matmul(lora_A_);
  }

  /// W += ΔW: forward() then needs only the base layer (inference). usage_error when already merged;
  /// non_finite_error, W untouched, when W would hold NaN or infinity.
  void merge() {
    if (merged_) throw usage_error("SVDLinear::merge(): the adapter is already merged");
    apply_delta(1.0, "merge");
    merged_ = true;
  }
  /// W −= ΔW (from the current parameters). usage_error when not merged.
  void unmerge() {
    if (!merged_) throw usage_error("SVDLinear::unmerge(): the adapter is not merged");
    apply_delta(-1.0, "unmerge");
    merged_ = false;
  }
  bool merged() const noexcept { return merged_; }

  /// ‖QQᵀ − I‖_F + ‖PᵀP − I‖_F of this adapter, differentiable (see orthogonal_penalty).
  at::Tensor orthogonal_penalty(orth_reg_form form = orth_reg_form::peft) const {
    return libtorch::orthogonal_penalty(lora_A_, lora_B_, form);
  }

  const SVDLinearOptions& options() const noexcept { return options_; }
  std::int64_t rank() const noexcept { return options_.r(); }
  /// The rank the scaling is fixed at.
  std::int64_t init_r() const noexcept override { return options_.init_r() ? options_.init_r() : options_.r(); }
  /// s = α / (init_r + 1e-5).
  float scaling() const noexcept override { return scaling_; }
  /// Q (r, in), λ (r, 1), P (out, r): the registered parameters themselves.
  const at::Tensor& lora_A() const noexcept { return lora_A_; }
  const at::Tensor& lora_E() const noexcept { return lora_E_; }
  const at::Tensor& lora_B() const noexcept { return lora_B_; }

  void pretty_print(std::ostream& stream) const override {
    stream << "adalora::libtorch::SVDLinear(in_features=" << options_.in_features()
           << ", out_features=" << options_.out_features() << ", r=" << options_.r() << ", scaling=" << scaling_
           << ", lora_dropout=" << options_.lora_dropout() << (merged_ ? ", merged" : "") << ")";
  }

  /// The frozen layer the adapter adds to.
  torch::nn::Linear base_layer{nullptr};

private:
  // A trainable parameter under PEFT's name: "lora_X", or "lora_X.<adapter_name>" through a ParameterDict.
  at::Tensor add_parameter(const std::string& kind, at::Tensor value) {
    if (options_.adapter_name().empty()) return register_parameter(kind, std::move(value), true);
    auto dict = register_module(kind, torch::nn::ParameterDict());
    value.set_requires_grad(true);
    return dict->insert(options_.adapter_name(), std::move(value));
  }

  void apply_delta(double sign, const char* what) {
    torch::NoGradGuard no_grad;
    at::Tensor& w = base_layer->weight;
    const at::Tensor updated = w + delta_weight().to(w.scalar_type()) * sign;
    if (!updated.isfinite().all().item<bool>())
      throw non_finite_error(std::string("SVDLinear::") + what +
                             "(): the base weight would hold NaN or infinite values; the adapter seems broken, the "
                             "weight is left unchanged");
    w.copy_(updated);
  }

  SVDLinearOptions options_;
  float scaling_ = 0.0f;
  bool merged_ = false;
  at::Tensor lora_A_, lora_E_, lora_B_;
};

/// The module holder (shared pointer) of SVDLinearImpl, as torch::nn::Linear is of LinearImpl.
TORCH_MODULE(SVDLinear);

}  // namespace adalora::libtorch
