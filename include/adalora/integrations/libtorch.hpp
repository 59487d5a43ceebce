// The libtorch integration in one include: tensor views, attach(), SVDLinear, the regularizer, the PEFT export, and
// the library's CPU umbrella (adalora/adalora.hpp: rank_allocator, eigen_backend, adalora_config, the errors).
//
//   adalora::rank_allocator<adalora::eigen_backend> allocator(cfg);
//   auto attached = adalora::libtorch::attach(allocator, model);  // every SVDLinear (PEFT-named triple) in the model
//   for (std::int64_t t = 0; t < cfg.total_step; ++t) {
//     auto loss = task_loss(model, batch) + adalora::libtorch::orthogonal_regularization(attached);
//     loss.backward();
//     optimizer.step();
//     attached.step(t);              // after the optimizer step, before zero_grad
//     optimizer.zero_grad();
//   }
//   adalora::libtorch::write_peft_adalora("adapter", attached);  // PeftModel.from_pretrained loads it
//
// Needs the adalora::libtorch CMake target (Torch found). Host code: a CUDA trainer compiles it with the host
// compiler; only tensor_views.hpp and attach.hpp also compile with nvcc (see the README's libtorch section).
#pragma once

#include "adalora/adalora.hpp"
#include "adalora/integrations/libtorch/attach.hpp"
#include "adalora/integrations/libtorch/orthogonal_regularizer.hpp"
#include "adalora/integrations/libtorch/peft_export.hpp"
#include "adalora/integrations/libtorch/svd_linear.hpp"
#include "adalora/integrations/libtorch/tensor_views.hpp"
