// Fuzz target: arbitrary bytes as a safetensors file. An accepted file must be readable in bounds in every way the
// library offers (every tensor as floats, BF16 ones bit for bit, the raw bytes, lookups by name).
#include <cstring>
#include <vector>

#include "adalora/core/error.hpp"
#include "adalora/io/safetensors.hpp"
#include "fuzz_target.hpp"

ADALORA_FUZZ_TARGET(safetensors) {
  using namespace adalora;
  std::vector<std::byte> bytes(size);
  if (size) std::memcpy(bytes.data(), data, size);
  try {
    const auto file = io::safetensors_file::parse(std::move(bytes), "fuzz");
    std::size_t covered = 0;
    for (const auto& t : file.tensors()) {
      if (&file.info(t.name) != &t || !file.contains(t.name)) fuzz::broken("a tensor is not found by its name");
      if (file.read_f32(t.name).size() != t.numel()) fuzz::broken("read_f32 size");
      if (file.raw(t.name).size() != t.numel() * io::dtype_size(t.type)) fuzz::broken("raw size");
      if (t.type == io::dtype::bf16 && file.read_bf16(t.name).size() != t.numel()) fuzz::broken("read_bf16 size");
      covered += t.end - t.begin;
    }
    if (covered != file.data_size()) fuzz::broken("the tensors do not tile the data buffer");
    if (file.tensors().size() > io::max_tensors || file.metadata().size() > io::max_metadata_entries)
      fuzz::broken("a limit was not applied");
  } catch (const error&) {
    // refused with a typed error: fine
  }
  return 0;
}
