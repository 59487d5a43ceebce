// Test helper: a trace file's bytes, with in-place corruption of one float or of header text.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

#include "adalora/io/safetensors.hpp"

namespace adalora::testing {

inline std::vector<std::byte> read_bytes(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + p.string());
  std::vector<char> c((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::byte> b(c.size());
  std::memcpy(b.data(), c.data(), c.size());
  return b;
}

inline void write_bytes(const std::filesystem::path& p, const std::vector<std::byte>& b) {
  std::ofstream out(p, std::ios::binary);
  out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

/// Replaces element `index` of F32 tensor `name` with `value`, in the raw bytes of a safetensors file.
inline void poke_f32(std::vector<std::byte>& bytes, const std::string& name, std::size_t index, float value) {
  const auto file = io::safetensors_file::parse(bytes);
  std::uint64_t header = 0;
  for (int i = 7; i >= 0; --i) header = (header << 8) | std::to_integer<std::uint64_t>(bytes[static_cast<std::size_t>(i)]);
  const auto& info = file.info(name);
  std::memcpy(bytes.data() + 8 + header + info.begin + 4 * index, &value, 4);
}

/// Replaces the first occurrence of `from` in the file's JSON header by `to` of the same length.
inline void edit_header(std::vector<std::byte>& bytes, const std::string& from, const std::string& to) {
  if (from.size() != to.size()) throw std::invalid_argument("edit_header: lengths differ");
  std::string text(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  const auto pos = text.find(from);
  if (pos == std::string::npos) throw std::invalid_argument("edit_header: '" + from + "' not found");
  std::memcpy(bytes.data() + pos, to.data(), to.size());
}

}  // namespace adalora::testing
