// Plain-loop host reference of the whole allocator (SPEC §3–5), independent of the backends, for tests.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "adalora/core/config.hpp"

namespace adalora::reference {

/// One adapter as dense row-major host arrays: A = Q (r × in), E = λ (r), B = P (out × r), and gradients.
struct adapter_tensors {
  std::size_t r = 0, in = 0, out = 0;
  std::vector<float> A, E, B, grad_A, grad_E, grad_B;

  adapter_tensors() = default;
  adapter_tensors(std::size_t r_, std::size_t in_, std::size_t out_)
      : r(r_), in(in_), out(out_), A(r_ * in_), E(r_), B(out_ * r_), grad_A(r_ * in_), grad_E(r_), grad_B(out_ * r_) {}
};

/// PEFT's cubic budget, written out: trunc(bT + (b0 − bT)·m³), m = 1 − (t − tinit)/(T − tfinal − tinit).
inline std::int64_t cubic_budget(std::int64_t t, const adalora_config& c, std::int64_t b0, std::int64_t bT) {
  if (t <= c.tinit) return b0;
  if (t >= c.total_step - c.tfinal) return bT;
  const double m = 1.0 - static_cast<double>(t - c.tinit) / static_cast<double>(c.total_step - c.tfinal - c.tinit);
  return static_cast<std::int64_t>(static_cast<double>(b0 - bT) * m * m * m + static_cast<double>(bT));
}

/// The k-th smallest (1-indexed) by sorting a copy.
inline double kth_smallest(std::vector<double> v, std::size_t k) {
  if (k < 1 || k > v.size()) throw std::out_of_range("reference::kth_smallest: k out of range");
  std::sort(v.begin(), v.end());
  return v[k - 1];
}

/// Sensitivity × uncertainty, float32 in PEFT's rounding order (products and sums rounded one by one).
struct sensitivity_uncertainty_state {
  std::vector<float> ema, unc;

  void update(const adalora_config& c, const std::vector<float>& theta, const std::vector<float>& grad) {
    if (ema.empty()) {
      ema.assign(theta.size(), 0.0f);
      unc.assign(theta.size(), 0.0f);
    }
    const volatile float b1 = static_cast<float>(c.beta1), c1 = static_cast<float>(1.0 - c.beta1);
    const volatile float b2 = static_cast<float>(c.beta2), c2 = static_cast<float>(1.0 - c.beta2);
    for (std::size_t i = 0; i < theta.size(); ++i) {
      // volatile temporaries force each operation to be rounded to float on its own
      volatile float prod = theta[i] * grad[i];
      volatile float ipt = std::fabs(prod);
      volatile float a = b1 * ema[i];
      volatile float b = c1 * ipt;
      ema[i] = a + b;
      volatile float dev = std::fabs(ipt - ema[i]);
      volatile float u1 = b2 * unc[i];
      volatile float u2 = c2 * dev;
      unc[i] = u1 + u2;
    }
  }
  double score(std::size_t i) const { return static_cast<double>(ema[i] * unc[i]); }
};

/// The triplet scores of one adapter from per-element scores, means accumulated in double.
template <class ScoreA, class ScoreE, class ScoreB>
std::vector<double> triplet_scores(const adapter_tensors& a, ScoreA sA, ScoreE sE, ScoreB sB) {
  std::vector<double> s(a.r);
  for (std::size_t i = 0; i < a.r; ++i) {
    double q = 0.0, p = 0.0;
    for (std::size_t j = 0; j < a.in; ++j) q += sA(i * a.in + j);
    for (std::size_t j = 0; j < a.out; ++j) p += sB(j * a.r + i);
    s[i] = sE(i) + (q / static_cast<double>(a.in) + p / static_cast<double>(a.out));
  }
  return s;
}

/// The whole allocator in plain loops (default metric, cubic schedule). Tests drive it beside a backend.
class allocator {
public:
  explicit allocator(adalora_config c) : c_(c) {}

  void add(const adapter_tensors& a) {
    adapters_.push_back(&a);
    state_.emplace_back();
    keep_.emplace_back(a.r, 1);
    b0_ += static_cast<std::int64_t>(a.r);
  }

  struct result {
    std::int64_t budget = 0;
    bool masked = false;
    std::optional<double> threshold;
    std::vector<std::vector<double>> scores;  // per adapter, where a selection ran
  };

  /// Runs step t over the registered adapters, masking their E in place.
  result step(std::int64_t t, std::vector<adapter_tensors*> mutable_adapters) {
    result res;
    const std::int64_t bT = c_.target_r * static_cast<std::int64_t>(adapters_.size());
    const std::int64_t t_end = c_.total_step - c_.tfinal;
    res.budget = cubic_budget(t, c_, b0_, bT);
    if (t < t_end) {
      for (std::size_t k = 0; k < adapters_.size(); ++k) {
        const auto& a = *adapters_[k];
        state_[k].A.update(c_, a.A, a.grad_A);
        state_[k].E.update(c_, a.E, a.grad_E);
        state_[k].B.update(c_, a.B, a.grad_B);
      }
    }
    const bool select = (t < t_end && t > c_.tinit && t % c_.deltaT == 0) || (t >= t_end && !frozen_);
    if (select) {
      std::vector<double> all;
      for (std::size_t k = 0; k < adapters_.size(); ++k) {
        const auto& st = state_[k];
        auto s = triplet_scores(
            *adapters_[k], [&](std::size_t i) { return st.A.score(i); }, [&](std::size_t i) { return st.E.score(i); },
            [&](std::size_t i) { return st.B.score(i); });
        all.insert(all.end(), s.begin(), s.end());
        res.scores.push_back(std::move(s));
      }
      const auto k = static_cast<std::size_t>(b0_ - res.budget);
      if (k > 0) res.threshold = kth_smallest(all, k);
      for (std::size_t a = 0; a < adapters_.size(); ++a)
        for (std::size_t i = 0; i < adapters_[a]->r; ++i)
          keep_[a][i] = !(res.threshold && res.scores[a][i] <= *res.threshold);
      if (t >= t_end) frozen_ = true;
    }
    if (select || t >= t_end) {
      res.masked = true;
      for (std::size_t a = 0; a < mutable_adapters.size(); ++a)
        for (std::size_t i = 0; i < mutable_adapters[a]->r; ++i)
          if (!keep_[a][i]) mutable_adapters[a]->E[i] = 0.0f;
    }
    return res;
  }

  const std::vector<std::vector<std::uint8_t>>& keep() const { return keep_; }

private:
  struct adapter_state {
    sensitivity_uncertainty_state A, E, B;
  };
  adalora_config c_;
  std::vector<const adapter_tensors*> adapters_;
  std::vector<adapter_state> state_;
  std::vector<std::vector<std::uint8_t>> keep_;
  std::int64_t b0_ = 0;
  bool frozen_ = false;
};

}  // namespace adalora::reference
