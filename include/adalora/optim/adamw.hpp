// AdamW (decoupled weight decay, PyTorch's update rule) over adapter parameters, for trainers that have none.
#pragma once

#include <cmath>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "adalora/adapters/adapter_concept.hpp"
#include "adalora/backends/backend.hpp"
#include "adalora/core/error.hpp"
#include "adalora/core/float_ops.hpp"
#include "adalora/core/host_device.hpp"

namespace adalora {

/// PyTorch's AdamW defaults.
struct adamw_options {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-2;
};

namespace detail {
/// One AdamW update of element k: p ← p(1 − lr·wd) − lr · m̂ / (√v̂ + eps).
struct adamw_fn {
  float* p;
  const float* g;
  float* m;
  float* v;
  float beta1, beta2, lr, eps, decay, bias1, bias2;  // bias_i = 1 − β_iᵗ
  ADALORA_HOST_DEVICE void operator()(std::size_t k) const noexcept {
    const float gk = g[k];
    m[k] = beta1 * m[k] + (1.0f - beta1) * gk;
    v[k] = beta2 * v[k] + (1.0f - beta2) * gk * gk;
    const float denom = sqrt_f(v[k] / bias2) + eps;
    p[k] = p[k] * decay - lr * (m[k] / bias1) / denom;
  }
};
struct zero_fn {
  float* p;
  ADALORA_HOST_DEVICE void operator()(std::size_t k) const noexcept { p[k] = 0.0f; }
};
}  // namespace detail

/// AdamW over a fixed set of parameters (e.g. every adapter's `parameters()`), state in the backend's memory.
template <Backend B>
class adamw {
public:
  adamw(std::vector<parameter_span> params, const adamw_options& o, B backend = B{})
      : params_(std::move(params)), o_(o), backend_(std::move(backend)) {
    if (!(o.lr >= 0.0) || !(o.beta1 >= 0.0 && o.beta1 < 1.0) || !(o.beta2 >= 0.0 && o.beta2 < 1.0) ||
        !(o.eps > 0.0) || !(o.weight_decay >= 0.0))
      throw config_error("adamw_options: need lr >= 0, 0 <= beta1, beta2 < 1, eps > 0, weight_decay >= 0");
    for (const auto& p : params_) {
      m_.push_back(backend_.template allocate<float>(p.size));
      v_.push_back(backend_.template allocate<float>(p.size));
    }
  }

  /// The learning rate of the next steps (for schedules).
  void set_lr(double lr) noexcept { o_.lr = lr; }
  long long steps() const noexcept { return t_; }

  void step() {
    ++t_;
    const auto lr = static_cast<float>(o_.lr);
    const auto bias1 = static_cast<float>(1.0 - std::pow(o_.beta1, static_cast<double>(t_)));
    const auto bias2 = static_cast<float>(1.0 - std::pow(o_.beta2, static_cast<double>(t_)));
    for (std::size_t i = 0; i < params_.size(); ++i) {
      const auto& p = params_[i];
      backend_.for_each(p.size, detail::adamw_fn{p.value, p.grad, m_[i].data(), v_[i].data(),
                                                 static_cast<float>(o_.beta1), static_cast<float>(o_.beta2), lr,
                                                 static_cast<float>(o_.eps),
                                                 static_cast<float>(1.0 - o_.lr * o_.weight_decay), bias1, bias2});
    }
  }

  void zero_grad() {
    for (const auto& p : params_) backend_.for_each(p.size, detail::zero_fn{p.grad});
  }

private:
  std::vector<parameter_span> params_;
  adamw_options o_;
  B backend_;
  std::vector<buffer_t<B, float>> m_, v_;
  long long t_ = 0;
};

}  // namespace adalora
