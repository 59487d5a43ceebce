// Fuzz target: arbitrary text as adapter_config.json beside a valid weights file (one module "m": A (2, 3),
// E (2, 1), B (4, 2)), through the PEFT importer and adalora-inspect.
#include <vector>

#include "adalora/core/error.hpp"
#include "adalora/io/peft_adapter.hpp"
#include "fuzz_target.hpp"

ADALORA_FUZZ_TARGET(peft_config) {
  using namespace adalora;
  static const std::filesystem::path dir = [] {
    const auto d = fuzz::scratch("peft_config");
    io::safetensors_writer w;
    w.add("base_model.model.m.lora_A", {2, 3}, std::vector<float>(6, 0.5f));
    w.add("base_model.model.m.lora_E", {2, 1}, std::vector<float>(2, 1.0f));
    w.add("base_model.model.m.lora_B", {4, 2}, std::vector<float>(8, -0.25f));
    w.write(d / io::peft_weights_file);
    return d;
  }();
  fuzz::write_file(dir / io::peft_config_file, data, size);
  try {
    const auto ck = io::read_peft_adalora(dir);
    if (ck.modules.size() != 1 || ck.modules[0].rank() != 2) fuzz::broken("the module read back differs");
  } catch (const error&) {
  }
  fuzz::inspect_quietly(dir);
  return 0;
}
