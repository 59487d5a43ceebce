// Allocator configs the allocation tests share.
#pragma once

#include "adalora/core/config.hpp"

namespace adalora::testing {

/// Six ranks down to two over 30 steps: warm-up to step 3, a mask every 2 steps, the final phase from step 25,
/// β1 = 0.85, β2 = 0.7.
inline adalora_config small_allocator_config() {
  adalora_config c;
  c.init_r = 6;
  c.target_r = 2;
  c.tinit = 3;
  c.tfinal = 5;
  c.total_step = 30;
  c.deltaT = 2;
  c.beta1 = 0.85;
  c.beta2 = 0.7;
  return c;
}

/// Four ranks down to two over 12 steps: warm-up to step 1, a mask every step, the final phase from step 10 (the
/// error and hostile-input tests).
inline adalora_config error_allocator_config() {
  adalora_config c;
  c.init_r = 4;
  c.target_r = 2;
  c.tinit = 1;
  c.tfinal = 2;
  c.total_step = 12;
  c.deltaT = 1;
  return c;
}

}  // namespace adalora::testing
