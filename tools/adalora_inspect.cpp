// adalora-inspect: says what an adapter folder, allocator checkpoint or safetensors file holds, without a trainer.
//
//   adalora-inspect PATH...
//
// PATH is a PEFT adapter folder (AdaLoRA or LoRA), an allocator checkpoint or any other safetensors file (what each
// shows: tools/inspect.hpp). Every file is read whole and checked as the library reads it: a malformed one is
// reported with a message that says what is wrong, and the exit status is 1 (0 when every path was read, 2 on a
// usage error). No input makes it die of a signal: that is what the fuzz targets over tools/inspect.hpp check.
#include <exception>
#include <filesystem>
#include <iostream>
#include <new>
#include <string_view>

#include "inspect.hpp"

int main(int argc, char** argv) {
  const std::string_view usage =
      "usage: adalora-inspect PATH...\n"
      "  PATH: a PEFT adapter folder (AdaLoRA or LoRA), an allocator checkpoint, or any .safetensors file\n";
  if (argc < 2) {
    std::cerr << usage;
    return 2;
  }
  int status = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      std::cout << usage;
      return 0;
    }
    try {
      adalora::tools::inspect(std::filesystem::path(arg), std::cout);
    } catch (const std::bad_alloc&) {
      std::cerr << "adalora-inspect: " << arg << ": out of memory while reading it\n";
      status = 1;
    } catch (const std::exception& e) {
      std::cerr << "adalora-inspect: " << e.what() << "\n";
      status = 1;
    } catch (...) {
      std::cerr << "adalora-inspect: " << arg << ": unknown error while reading it\n";
      status = 1;
    }
  }
  return status;
}
