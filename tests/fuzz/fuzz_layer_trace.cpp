// Fuzz target: arbitrary bytes as a layer trace (adalora-trace/layer/1), replayed on the Eigen backend as
// adalora-trace does: every size in the metadata is checked against the file's tensors before anything is allocated.
#include <cstring>
#include <vector>

#include "adalora/backends/eigen/eigen_backend.hpp"
#include "adalora/core/error.hpp"
#include "adalora/validate/layer_trace.hpp"
#include "fuzz_target.hpp"

ADALORA_FUZZ_TARGET(layer_trace) {
  using namespace adalora;
  std::vector<std::byte> bytes(size);
  if (size) std::memcpy(bytes.data(), data, size);
  try {
    const auto file = io::safetensors_file::parse(std::move(bytes), "fuzz");
    (void)validate::replay_layer_trace(file, eigen_backend{});
  } catch (const error&) {
  }
  return 0;
}
