// How a fuzz target is declared: libFuzzer's entry point in a fuzz build, a named function that fuzz_replay runs over
// the seed corpus and the regressions in the test suite (so every crash ever found stays fixed in every build).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>
#include <unistd.h>

#include "adalora/core/error.hpp"
#include "inspect.hpp"

#if defined(ADALORA_FUZZ_REPLAY)
#define ADALORA_FUZZ_TARGET(name) int adalora_fuzz_##name(const std::uint8_t* data, std::size_t size)
#else
#define ADALORA_FUZZ_TARGET(name) extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
#endif

namespace adalora::fuzz {

/// A folder of this process's own under the temp folder, for a target whose reader takes a path.
inline std::filesystem::path scratch(std::string_view target) {
  auto d = std::filesystem::temp_directory_path() /
           ("adalora-fuzz-" + std::string(target) + "-" + std::to_string(::getpid()));
  std::filesystem::create_directories(d);
  return d;
}

/// Writes bytes to a file, replacing it.
inline void write_file(const std::filesystem::path& path, const void* data, std::size_t size) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
}

/// adalora-inspect's printer on a path, into a string: an adalora::error is a fine outcome, anything else escapes.
inline void inspect_quietly(const std::filesystem::path& path) {
  std::ostringstream out;
  try {
    tools::inspect(path, out);
  } catch (const error&) {
  }
}

/// Stops the run as a crash: an invariant of an accepted input does not hold.
[[noreturn]] inline void broken(const char* what) {
  std::fprintf(stderr, "fuzz invariant broken: %s\n", what);
  __builtin_trap();
}

}  // namespace adalora::fuzz
