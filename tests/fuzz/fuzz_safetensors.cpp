// libFuzzer target: arbitrary bytes through the safetensors reader, the trace reader and the checkpoint reader.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "adalora/core/error.hpp"
#include "adalora/io/allocator_checkpoint.hpp"
#include "adalora/io/safetensors.hpp"
#include "adalora/validate/alloc_trace.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::vector<std::byte> bytes(size);
  if (size) std::memcpy(bytes.data(), data, size);
  try {
    const auto file = adalora::io::safetensors_file::parse(std::move(bytes), "fuzz");
    // every tensor the header admits must be readable in bounds
    for (const auto& t : file.tensors()) {
      const auto v = file.read_f32(t.name);
      if (v.size() != t.numel()) __builtin_trap();
    }
    try {
      (void)adalora::io::read_allocator_checkpoint(file);
    } catch (const adalora::error&) {
    }
    try {
      (void)adalora::validate::detail::trace_config(file);
    } catch (const adalora::error&) {
    }
  } catch (const adalora::error&) {
    // rejected with a clear error: fine
  }
  return 0;
}
