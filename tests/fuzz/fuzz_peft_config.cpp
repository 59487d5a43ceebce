// libFuzzer target: arbitrary adapter_config.json text (beside a valid weights file) through the PEFT importer.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <unistd.h>
#include <vector>

#include "adalora/core/error.hpp"
#include "adalora/io/peft_adapter.hpp"

namespace {
std::filesystem::path scratch_dir() {
  static const std::filesystem::path dir = [] {
    auto d = std::filesystem::temp_directory_path() / ("adalora-fuzz-peft-" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    // one module "m": A (2, 3), E (2, 1), B (4, 2)
    adalora::io::safetensors_writer w;
    const std::vector<float> a(6, 0.5f), e(2, 1.0f), b(8, -0.25f);
    w.add("base_model.model.m.lora_A", {2, 3}, a);
    w.add("base_model.model.m.lora_E", {2, 1}, e);
    w.add("base_model.model.m.lora_B", {4, 2}, b);
    w.write(d / "adapter_model.safetensors");
    return d;
  }();
  return dir;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto dir = scratch_dir();
  {
    std::ofstream out(dir / "adapter_config.json", std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  try {
    (void)adalora::io::read_peft_adalora(dir);
  } catch (const adalora::error&) {
    // rejected with a clear error: fine
  }
  return 0;
}
