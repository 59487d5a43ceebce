// The reference traces the repository keeps (ADALORA_TRACES_DIR, tests/data/traces/), listed by kind.
#pragma once

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

namespace adalora::testing {

/// The trace folder: $ADALORA_TRACES_DIR when it is set (a prebuilt test program run on another machine, such as
/// those of scripts/gpu-bundle's bundle), else the folder the build was configured with.
inline std::filesystem::path traces_dir() {
  const char* dir = std::getenv("ADALORA_TRACES_DIR");
  return dir && *dir ? std::filesystem::path(dir) : std::filesystem::path(ADALORA_TRACES_DIR);
}

/// Every `<prefix>*.safetensors` in the trace folder, sorted by name ("alloc-" or "layer-"; "" for all).
inline std::vector<std::filesystem::path> trace_files(const std::string& prefix) {
  std::vector<std::filesystem::path> out;
  for (const auto& entry : std::filesystem::directory_iterator(traces_dir())) {
    const std::string name = entry.path().filename().string();
    if (entry.path().extension() == ".safetensors" && name.rfind(prefix, 0) == 0) out.push_back(entry.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace adalora::testing
