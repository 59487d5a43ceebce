// adalora-trace: replays PEFT reference traces through the library and prints PASS/FAIL per file.
//
//   adalora-trace [--backend eigen|xtensor|thrust|cuda] [--state-policy in_place|double_buffered] FILE...
//
// One line per file, then "N passed, M failed" (", K skipped" for trace kinds this build cannot replay yet).
// Exit status: 0 when nothing failed, 1 when something failed, 2 on a usage error (among them a backend that this
// build does not have: `--help` lists the ones it has).
#include <cstring>
#include <exception>
#include <filesystem>
#include <iostream>
#include <new>
#include <string>
#include <string_view>
#include <vector>

#include "adalora/backends/eigen/eigen_backend.hpp"
#include "trace_backends.hpp"

namespace adalora::tools {

validate::trace_result replay_eigen(const io::safetensors_file& file, trace_kind kind, trace_state state) {
  return replay_on<eigen_backend>(file, kind, state);
}

}  // namespace adalora::tools

namespace {

using adalora::tools::trace_kind;
using adalora::tools::trace_state;
using adalora::validate::trace_result;

/// A backend adalora-trace knows: its replay function when this build has it, else how to get it.
struct trace_backend {
  std::string_view name;
  trace_result (*replay)(const adalora::io::safetensors_file&, trace_kind, trace_state);
  std::string_view how_to_build;
};

// ADALORA_TRACE_<NAME> come from tools/CMakeLists.txt, one per backend target the build has.
constexpr trace_backend trace_backends[] = {
    {"eigen", &adalora::tools::replay_eigen, ""},
#if defined(ADALORA_TRACE_XTENSOR)
    {"xtensor", &adalora::tools::replay_xtensor, ""},
#else
    {"xtensor", nullptr, "install xtensor >= 0.24 (Debian: libxtensor-dev) and configure again"},
#endif
#if defined(ADALORA_TRACE_THRUST)
    {"thrust", &adalora::tools::replay_thrust, ""},
#else
    {"thrust", nullptr, "needs CCCL (the CUDA toolkit's Thrust) and OpenMP; configure with -DADALORA_WITH_THRUST=ON"},
#endif
#if defined(ADALORA_TRACE_CUDA)
    {"cuda", &adalora::tools::replay_cuda, ""},
#else
    {"cuda", nullptr, "configure with -DADALORA_ENABLE_CUDA=ON (needs nvcc)"},
#endif
};

std::string built_backends() {
  std::string s;
  for (const auto& b : trace_backends)
    if (b.replay) s += (s.empty() ? "" : ", ") + std::string(b.name);
  return s;
}

void usage(std::ostream& os) {
  os << "usage: adalora-trace [--backend NAME] [--state-policy in_place|double_buffered] FILE...\n"
        "Replays reference traces (formats adalora-trace/alloc/1, adalora-trace/layer/1) and compares every step.\n"
        "backends in this build: "
     << built_backends()
     << " (default: eigen)\n"
        "state policies (the allocator's importance state; both PEFT-exact): in_place (default), double_buffered\n";
}

trace_result replay(const std::string& path, const trace_backend& backend, trace_state state) {
  const auto file = adalora::io::safetensors_file::open(path);
  const auto& md = file.metadata();
  const auto fmt = md.find("format");
  if (fmt == md.end()) throw adalora::format_error("no __metadata__.format: not an adalora trace");
  if (fmt->second == "adalora-trace/alloc/1") return backend.replay(file, trace_kind::alloc, state);
  if (fmt->second == "adalora-trace/layer/1") return backend.replay(file, trace_kind::layer, state);
  throw adalora::format_error("unknown trace format '" + fmt->second + "'");
}

}  // namespace

int main(int argc, char** argv) {
  std::string backend = "eigen", policy = "in_place";
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
    } else if (a == "--state-policy" && i + 1 < argc) {
      policy = argv[++i];
    } else if (a.rfind("--state-policy=", 0) == 0) {
      policy = a.substr(std::strlen("--state-policy="));
    } else if (a.rfind("--", 0) == 0) {
      std::cerr << "adalora-trace: unknown option '" << a << "'\n";
      usage(std::cerr);
      return 2;
    } else {
      files.push_back(a);
    }
  }
  if (policy != "in_place" && policy != "double_buffered") {
    std::cerr << "adalora-trace: unknown state policy '" << policy << "'; use in_place or double_buffered\n";
    return 2;
  }
  const trace_state state = policy == "double_buffered" ? trace_state::double_buffered : trace_state::in_place;
  const trace_backend* chosen = nullptr;
  for (const auto& b : trace_backends)
    if (b.name == backend) chosen = &b;
  if (!chosen) {
    std::cerr << "adalora-trace: unknown backend '" << backend << "'; this build has: " << built_backends() << "\n";
    return 2;
  }
  if (!chosen->replay) {
    std::cerr << "adalora-trace: backend '" << backend << "' is not built into this adalora-trace ("
              << chosen->how_to_build << "); this build has: " << built_backends() << "\n";
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
      const trace_result r = replay(f, *chosen, state);
      switch (r.outcome) {
        case trace_result::status::passed:
          ++passed;
          std::cout << "PASS " << shown << " (" << r.checked << (r.kind == "layer" ? " cases" : " steps")
                    << ", backend " << backend << (r.kind == "layer" ? "" : ", state " + policy) << ")\n";
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
    } catch (const std::bad_alloc&) {
      ++failed;
      std::cout << "FAIL " << shown << ": out of memory while replaying it\n";
    } catch (const std::exception& e) {
      ++failed;
      std::cout << "FAIL " << shown << ": " << e.what() << "\n";
    } catch (...) {
      ++failed;
      std::cout << "FAIL " << shown << ": unknown error\n";
    }
  }
  std::cout << passed << " passed, " << failed << " failed";
  if (skipped) std::cout << ", " << skipped << " skipped";
  std::cout << "\n";
  return failed ? 1 : 0;
}
