// Fuzz target: arbitrary bytes as an allocation trace (adalora-trace/alloc/1), replayed on the Eigen backend as
// adalora-trace does. Any outcome is fine (pass, a mismatch, a typed error); a crash or an untyped exception is not.
#include <cstring>
#include <vector>

#include "adalora/backends/eigen/eigen_backend.hpp"
#include "adalora/core/error.hpp"
#include "adalora/validate/alloc_trace.hpp"
#include "fuzz_target.hpp"

ADALORA_FUZZ_TARGET(alloc_trace) {
  using namespace adalora;
  std::vector<std::byte> bytes(size);
  if (size) std::memcpy(bytes.data(), data, size);
  try {
    const auto file = io::safetensors_file::parse(std::move(bytes), "fuzz");
    (void)validate::replay_alloc_trace(file, eigen_backend{});
  } catch (const error&) {
  }
  return 0;
}
