// Fuzz target: a whole PEFT adapter folder, adapter_config.json and adapter_model.safetensors, as one input: the
// config's text up to the first NUL byte (JSON text has none), the weights file after it. Through the importer and
// adalora-inspect (AdaLoRA and LoRA folders); an imported AdaLoRA adapter must export and import back unchanged.
#include <cstring>

#include "adalora/backends/eigen/eigen_backend.hpp"
#include "adalora/core/error.hpp"
#include "adalora/io/peft_adapter.hpp"
#include "fuzz_target.hpp"

ADALORA_FUZZ_TARGET(peft_folder) {
  using namespace adalora;
  const auto* nul = static_cast<const std::uint8_t*>(std::memchr(data, 0, size));
  const std::size_t config_size = nul ? static_cast<std::size_t>(nul - data) : size;
  const auto dir = fuzz::scratch("peft_folder") / "in";
  std::filesystem::create_directories(dir);
  fuzz::write_file(dir / io::peft_config_file, data, config_size);
  fuzz::write_file(dir / io::peft_weights_file, data + config_size + (nul ? 1 : 0), size - config_size - (nul ? 1 : 0));
  try {
    const auto ck = io::read_peft_adalora(dir);
    // an accepted folder exports as PEFT saves it and reads back to the same modules (the training fields are
    // returned as found, unvalidated: the export gets valid ones)
    adalora_config c;
    c.init_r = ck.config.init_r;
    c.target_r = 0;
    c.total_step = 10;
    c.lora_alpha = ck.config.lora_alpha;
    c.lora_dropout = ck.config.lora_dropout;
    const auto out = fuzz::scratch("peft_folder") / "out";
    io::write_peft_adalora(out, ck.modules, c);
    const auto back = io::read_peft_adalora(out);
    if (back.modules.size() != ck.modules.size()) fuzz::broken("the module count changed in a round trip");
    const std::vector<bool> all(static_cast<std::size_t>(c.init_r), true);  // no pattern: every component kept
    for (std::size_t i = 0; i < back.modules.size(); ++i) {
      const auto &x = ck.modules[i], &y = back.modules[i];
      if (x.name != y.name || x.A != y.A || x.E != y.E || x.B != y.B ||
          x.rank_pattern.value_or(all) != y.rank_pattern.value_or(all))
        fuzz::broken("a module changed in a round trip");
    }
    (void)io::import_peft_adalora<eigen_backend>(dir);
  } catch (const error&) {
  }
  fuzz::inspect_quietly(dir);
  return 0;
}
