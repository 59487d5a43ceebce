// The AdaLoRA configuration, with PEFT's field names and defaults, validated up front.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <string>

#include "adalora/core/error.hpp"

namespace adalora {

/// PEFT's AdaLoRA scaling s = α / (init_r + 1e-5) in float32, with α ≤ 0 meaning α = init_r (SPEC §1). Infinite when
/// α is beyond float32's range (adalora_config::validate refuses that).
inline float adapter_scaling(double lora_alpha, std::size_t init_r) noexcept {
  if (lora_alpha > static_cast<double>(std::numeric_limits<float>::max()))
    return std::numeric_limits<float>::infinity();  // (the cast of such a double to float is not defined)
  const float alpha = lora_alpha > 0.0 ? static_cast<float>(lora_alpha) : static_cast<float>(init_r);
  return alpha / (static_cast<float>(init_r) + 1e-5f);
}

/// A double in a few characters ("1e+300"), for messages.
inline std::string short_number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

/// AdaLoRA hyper-parameters. Field names and defaults are PEFT's `AdaLoraConfig`, so a PEFT config maps one to one.
/// Steps count optimizer steps t = 0, 1, ...; `total_step` has no default and must be set.
struct adalora_config {
  std::int64_t init_r = 12;      ///< rank each adapter starts with
  std::int64_t target_r = 8;     ///< average rank per adapter at the end (budget bT = target_r × adapters)
  std::int64_t tinit = 0;        ///< warm-up steps with the full budget and no masking
  std::int64_t tfinal = 0;       ///< final steps that train with the frozen rank pattern
  std::int64_t deltaT = 1;       ///< mask every deltaT steps while the budget falls
  double beta1 = 0.85;           ///< EMA factor of the smoothed sensitivity
  double beta2 = 0.85;           ///< EMA factor of the uncertainty
  double orth_reg_weight = 0.5;  ///< γ, weight of the orthogonal regularizer
  std::int64_t total_step = 0;   ///< T, the total number of optimizer steps (required, > 0)
  double lora_alpha = 8.0;       ///< α; the adapter scaling is α / (init_r + 1e-5), with α ≤ 0 meaning α = init_r
  double lora_dropout = 0.0;     ///< dropout probability on the adapter input

  /// The step at which the final, frozen rank pattern is fixed: T − tfinal.
  constexpr std::int64_t final_step() const noexcept { return total_step - tfinal; }

  /// Throws config_error naming the first invalid field, what it holds and how to fix it.
  void validate() const {
    auto fail = [](const std::string& what) { throw config_error("invalid adalora_config: " + what); };
    if (total_step <= 0)
      fail("total_step = " + std::to_string(total_step) +
           "; set it to the number of optimizer steps of the run (a positive number)");
    if (init_r < 0) fail("init_r = " + std::to_string(init_r) + "; a rank cannot be negative");
    if (target_r < 0 || target_r > init_r)
      fail("target_r = " + std::to_string(target_r) + " with init_r = " + std::to_string(init_r) +
           "; need 0 <= target_r <= init_r");
    if (tinit < 0) fail("tinit = " + std::to_string(tinit) + "; it cannot be negative");
    if (tfinal < 0) fail("tfinal = " + std::to_string(tfinal) + "; it cannot be negative");
    if (tinit >= final_step())
      fail("tinit = " + std::to_string(tinit) + " is not below total_step - tfinal = " + std::to_string(total_step) +
           " - " + std::to_string(tfinal) + " = " + std::to_string(final_step()) +
           "; the budget needs steps to fall: lower tinit or tfinal, or raise total_step");
    if (deltaT < 1) fail("deltaT = " + std::to_string(deltaT) + "; mask at least every step (deltaT >= 1)");
    if (!(beta1 > 0.0 && beta1 < 1.0)) fail("beta1 = " + std::to_string(beta1) + "; need 0 < beta1 < 1");
    if (!(beta2 > 0.0 && beta2 < 1.0)) fail("beta2 = " + std::to_string(beta2) + "; need 0 < beta2 < 1");
    if (!std::isfinite(orth_reg_weight) || orth_reg_weight < 0.0)
      fail("orth_reg_weight = " + std::to_string(orth_reg_weight) + "; need a finite value >= 0");
    if (!std::isfinite(lora_alpha)) fail("lora_alpha is not finite");
    if (!std::isfinite(adapter_scaling(lora_alpha, static_cast<std::size_t>(init_r))))
      fail("lora_alpha = " + short_number(lora_alpha) + " with init_r = " + std::to_string(init_r) +
           " gives an infinite scaling lora_alpha / (init_r + 1e-5) in float32; use a lora_alpha within float's range");
    if (!(lora_dropout >= 0.0 && lora_dropout < 1.0))
      fail("lora_dropout = " + std::to_string(lora_dropout) + "; need 0 <= lora_dropout < 1");
  }
};

}  // namespace adalora
