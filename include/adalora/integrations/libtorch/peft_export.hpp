// PEFT export of a libtorch model's adapters: host copies with the allocator's rank patterns, written by io/.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstddef>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "adalora/integrations/libtorch/attach.hpp"
#include "adalora/integrations/libtorch/svd_linear.hpp"
#include "adalora/io/peft_adapter.hpp"

namespace adalora::libtorch {

/// One adapter's tensors as a PEFT module named `name` (host float32 copies at the adapter's rank), with its scaling
/// and init_r when known (else the export takes the config's) and an optional rank pattern (init_r entries, e.g. the
/// allocator's rank_pattern(name)).
inline io::peft_svd_module to_peft_module(std::string name, const adapter_tensors& a,
                                          std::optional<std::vector<bool>> rank_pattern = std::nullopt) {
  io::peft_svd_module m;
  m.name = std::move(name);
  m.in_features = static_cast<std::size_t>(a.lora_A.size(1));
  m.out_features = static_cast<std::size_t>(a.lora_B.size(0));
  m.A = host_copy(a.lora_A);
  m.E = host_copy(a.lora_E);
  m.B = host_copy(a.lora_B);
  m.rank_pattern = std::move(rank_pattern);
  m.scaling = a.scaling;
  if (a.init_r) m.init_r = static_cast<std::size_t>(*a.init_r);
  return m;
}

/// An SVDLinear as a PEFT module named `name`, with its init_r and scaling (which the export checks against the
/// config) and an optional rank pattern.
inline io::peft_svd_module to_peft_module(std::string name, const SVDLinearImpl& layer,
                                          std::optional<std::vector<bool>> rank_pattern = std::nullopt) {
  return to_peft_module(
      std::move(name),
      adapter_tensors{{}, {}, layer.lora_A(), layer.lora_E(), layer.lora_B(), layer.scaling(), layer.init_r()},
      std::move(rank_pattern));
}

/// Every attached adapter as a PEFT module under its module path, with the allocator's current rank pattern.
template <class Allocator>
std::vector<io::peft_svd_module> to_peft_modules(const attached_allocator<Allocator>& attached) {
  std::vector<io::peft_svd_module> modules;
  for (const auto& a : attached.adapters())
    modules.push_back(to_peft_module(a.module, a, attached.allocator().rank_pattern(a.module)));
  return modules;
}

/// Writes the attached adapters as PEFT saves an AdaLoRA adapter (io::write_peft_adalora: adapter_model.safetensors
/// and adapter_config.json, each module shrunk to its kept components), with the allocator's config and rank
/// patterns, so that PeftModel.from_pretrained(model, dir) on the same torch.nn model rebuilds them. Its errors are
/// io::write_peft_adalora's; nothing is written when one is thrown.
template <class Allocator>
void write_peft_adalora(const std::filesystem::path& dir, const attached_allocator<Allocator>& attached,
                        const io::peft_export_options& options = {}) {
  const auto modules = to_peft_modules(attached);
  io::write_peft_adalora(dir, modules, attached.allocator().config(), options);
}

}  // namespace adalora::libtorch
