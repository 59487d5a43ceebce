// The reference traces the repository keeps (ADALORA_TRACES_DIR, tests/data/traces/), listed by kind.
#pragma once

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

namespace adalora::testing {

/// Every `<prefix>*.safetensors` in the trace folder, sorted by name ("alloc-" or "layer-"; "" for all).
inline std::vector<std::filesystem::path> trace_files(const std::string& prefix) {
  std::vector<std::filesystem::path> out;
  for (const auto& entry : std::filesystem::directory_iterator(ADALORA_TRACES_DIR)) {
    const std::string name = entry.path().filename().string();
    if (entry.path().extension() == ".safetensors" && name.rfind(prefix, 0) == 0) out.push_back(entry.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace adalora::testing
