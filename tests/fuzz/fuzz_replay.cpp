// fuzz_replay: runs every fuzz target over its seed corpus and its regressions (inputs that once crashed it), in the
// ordinary test builds (Release, ASan/UBSan) and without libFuzzer, so that every crash ever found stays fixed.
//
//   fuzz_replay FUZZ_DIR [TARGET...]
//
// FUZZ_DIR holds corpus/<target>/ and regressions/<target>/. An input that crashes or throws anything but
// adalora::error ends the run with that failure; the exit status is 0 when every input was run.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>
#include <string_view>
#include <unistd.h>
#include <vector>

#define ADALORA_FUZZ_DECLARE(name) int adalora_fuzz_##name(const std::uint8_t* data, std::size_t size);
ADALORA_FUZZ_DECLARE(safetensors)
ADALORA_FUZZ_DECLARE(checkpoint)
ADALORA_FUZZ_DECLARE(alloc_trace)
ADALORA_FUZZ_DECLARE(layer_trace)
ADALORA_FUZZ_DECLARE(peft_config)
ADALORA_FUZZ_DECLARE(peft_folder)

namespace {

struct target {
  std::string_view name;
  int (*run)(const std::uint8_t*, std::size_t);
};
constexpr target targets[] = {{"safetensors", adalora_fuzz_safetensors}, {"checkpoint", adalora_fuzz_checkpoint},
                              {"alloc_trace", adalora_fuzz_alloc_trace}, {"layer_trace", adalora_fuzz_layer_trace},
                              {"peft_config", adalora_fuzz_peft_config}, {"peft_folder", adalora_fuzz_peft_folder}};

std::vector<std::uint8_t> read_all(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  if (argc < 2) {
    std::cerr << "usage: fuzz_replay FUZZ_DIR [TARGET...]\n";
    return 2;
  }
  const fs::path root = argv[1];
  const std::vector<std::string_view> only(argv + 2, argv + argc);
  int status = 0;
  for (const target& t : targets) {
    if (!only.empty() && std::find(only.begin(), only.end(), t.name) == only.end()) continue;
    std::size_t inputs = 0;
    for (const char* kind : {"corpus", "regressions"}) {
      const fs::path dir = root / kind / t.name;
      if (!fs::is_directory(dir)) continue;
      std::vector<fs::path> files;
      for (const auto& e : fs::directory_iterator(dir))
        if (e.is_regular_file() && e.path().filename() != "README.md") files.push_back(e.path());
      std::sort(files.begin(), files.end());
      for (const auto& f : files) {
        const auto bytes = read_all(f);
        std::cout << t.name << ": " << f.lexically_relative(root).string() << " (" << bytes.size() << " bytes)\n"
                  << std::flush;
        t.run(bytes.data(), bytes.size());
        ++inputs;
      }
    }
    std::cout << t.name << ": " << inputs << " inputs, no crash\n";
    if (inputs == 0) {
      std::cerr << t.name << ": no seed corpus under " << (root / "corpus" / t.name).string() << "\n";
      status = 1;
    }
    std::error_code ec;
    fs::remove_all(fs::temp_directory_path() / ("adalora-fuzz-" + std::string(t.name) + "-" +
                                                std::to_string(::getpid())), ec);
  }
  return status;
}
