// adalora-trace: replays PEFT reference traces through the library and prints PASS/FAIL per file.
//
//   adalora-trace [--backend NAME] FILE...
//
// One line per file, then "N passed, M failed" (", K skipped" for trace kinds this build cannot replay yet).
// Exit status: 0 when nothing failed, 1 when something failed, 2 on a usage error.
#include <cstring>
#include <exception>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "adalora/backends/eigen/eigen_backend.hpp"
#include "adalora/io/safetensors.hpp"
#include "adalora/validate/alloc_trace.hpp"
#include "adalora/validate/layer_trace.hpp"

namespace {

using adalora::validate::trace_result;

const char* const backend_names[] = {"eigen"};

void usage(std::ostream& os) {
  os << "usage: adalora-trace [--backend NAME] FILE...\n"
        "Replays reference traces (formats adalora-trace/alloc/1, adalora-trace/layer/1) and compares every step.\n"
        "backends:";
  for (const char* b : backend_names) os << ' ' << b;
  os << "\n";
}

trace_result replay(const std::string& path, const std::string& backend) {
  const auto file = adalora::io::safetensors_file::open(path);
  const auto& md = file.metadata();
  const auto fmt = md.find("format");
  if (fmt == md.end()) throw adalora::format_error("no __metadata__.format: not an adalora trace");
  if (fmt->second == "adalora-trace/alloc/1") {
    if (backend == "eigen") return adalora::validate::replay_alloc_trace(file, adalora::eigen_backend{});
  } else if (fmt->second == "adalora-trace/layer/1") {
    if (backend == "eigen") return adalora::validate::replay_layer_trace(file, adalora::eigen_backend{});
  } else {
    throw adalora::format_error("unknown trace format '" + fmt->second + "'");
  }
  throw adalora::usage_error("backend '" + backend + "' is not built");
}

}  // namespace

int main(int argc, char** argv) {
  std::string backend = "eigen";
  std::vector<std::string> files;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      usage(std::cout);
      return 0;
    } else if (a == "--backend" && i + 1 < argc) {
      backend = argv[++i];
    } else if (a.rfind("--backend=", 0) == 0) {
      backend = a.substr(std::strlen("--backend="));
    } else if (a.rfind("--", 0) == 0) {
      std::cerr << "adalora-trace: unknown option '" << a << "'\n";
      usage(std::cerr);
      return 2;
    } else {
      files.push_back(a);
    }
  }
  bool known = false;
  for (const char* b : backend_names) known = known || backend == b;
  if (!known) {
    std::cerr << "adalora-trace: unknown backend '" << backend << "'\n";
    usage(std::cerr);
    return 2;
  }
  if (files.empty()) {
    usage(std::cerr);
    return 2;
  }

  int passed = 0, failed = 0, skipped = 0;
  for (const auto& f : files) {
    const std::string shown = std::filesystem::path(f).filename().string();
    try {
      const trace_result r = replay(f, backend);
      switch (r.outcome) {
        case trace_result::status::passed:
          ++passed;
          std::cout << "PASS " << shown << " (" << r.checked << (r.kind == "layer" ? " cases" : " steps")
                    << ", backend " << backend << ")\n";
          break;
        case trace_result::status::failed:
          ++failed;
          std::cout << "FAIL " << shown << ": " << r.detail << "\n";
          break;
        case trace_result::status::unsupported:
          ++skipped;
          std::cout << "SKIP " << shown << ": " << r.detail << "\n";
          break;
      }
    } catch (const std::exception& e) {
      ++failed;
      std::cout << "FAIL " << shown << ": " << e.what() << "\n";
    }
  }
  std::cout << passed << " passed, " << failed << " failed";
  if (skipped) std::cout << ", " << skipped << " skipped";
  std::cout << "\n";
  return failed ? 1 : 0;
}
