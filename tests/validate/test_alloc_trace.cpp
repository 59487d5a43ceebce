// Replaying the PEFT allocation traces on every backend; corrupted traces must fail with the first mismatch.
#include <catch2/catch.hpp>

#include <filesystem>

#include "adalora/validate/alloc_trace.hpp"
#include "support/backends_under_test.hpp"
#include "validate/trace_bytes.hpp"
#include "support/trace_files.hpp"

using namespace adalora;
using adalora::testing::backends_under_test;

namespace {
std::filesystem::path trace(const char* name) { return std::filesystem::path(ADALORA_TRACES_DIR) / name; }
}  // namespace

TEMPLATE_LIST_TEST_CASE("every PEFT allocation trace replays exactly", "[trace]", backends_under_test) {
  const auto files = adalora::testing::trace_files("alloc-");
  REQUIRE(files.size() >= 7);  // the scenarios of tools/record_peft_traces.py
  // both float32 state policies: in place (the default) and double-buffered
  auto replay_all = [&]<StatePolicy P>() {
    for (const auto& path : files) {
      INFO(path.filename().string() << ", state policy " << P::name);
      const auto file = io::safetensors_file::open(path);
      const auto steps = nlohmann::json::parse(file.metadata().at("steps"));
      const auto r = validate::replay_alloc_trace<TestType, P>(file, TestType{});
      INFO(r.detail);
      REQUIRE(r.passed());
      REQUIRE(r.checked == steps.size());
    }
  };
  replay_all.template operator()<in_place_state>();
  replay_all.template operator()<double_buffered_state>();
}

TEMPLATE_LIST_TEST_CASE("a corrupted trace fails at its first mismatch", "[trace]", backends_under_test) {
  const auto original = adalora::testing::read_bytes(trace("alloc-edge.safetensors"));

  SECTION("a masked singular value that should have been kept") {
    auto bytes = original;
    // at step 3 adapter layers.0.q keeps λ[0] (non-zero in the trace); claim it was pruned
    const auto f = io::safetensors_file::parse(original);
    const auto out = f.read_f32("3/layers.0.q/out/lora_E");
    std::size_t kept = 0;
    while (kept < out.size() && out[kept] == 0.0f) ++kept;
    REQUIRE(kept < out.size());
    adalora::testing::poke_f32(bytes, "3/layers.0.q/out/lora_E", kept, 0.0f);
    const auto r = validate::replay_alloc_trace(io::safetensors_file::parse(bytes), TestType{});
    REQUIRE_FALSE(r.passed());
    REQUIRE_THAT(r.detail, Catch::StartsWith("step 3, adapter layers.0.q, lora_E[" + std::to_string(kept) +
                                             "]: expected 0, got"));
  }
  SECTION("a budget off by one") {
    auto bytes = original;
    // metadata values are JSON text inside JSON strings, so their quotes are escaped in the header
    adalora::testing::edit_header(bytes, R"(\"t\": 4, \"budget\": 17)", R"(\"t\": 4, \"budget\": 16)");
    const auto r = validate::replay_alloc_trace(io::safetensors_file::parse(bytes), TestType{});
    REQUIRE(r.detail == "step 4: budget expected 16, got 17");
  }
  SECTION("a gradient that changes the importance") {
    auto bytes = original;
    adalora::testing::poke_f32(bytes, "2/layers.1.v/grad/lora_E", 1, 1.0e3f);
    const auto r = validate::replay_alloc_trace(io::safetensors_file::parse(bytes), TestType{});
    REQUIRE_FALSE(r.passed());
    REQUIRE_THAT(r.detail, Catch::StartsWith("step 2"));
  }
}

TEST_CASE("a malformed trace is a format error", "[trace]") {
  auto bytes = adalora::testing::read_bytes(trace("alloc-edge.safetensors"));
  adalora::testing::edit_header(bytes, R"(\"tinit\": 0)", R"(\"tinot\": 0)");
  REQUIRE_THROWS_WITH(validate::replay_alloc_trace(io::safetensors_file::parse(bytes), eigen_backend{}),
                      Catch::Contains("config lacks the field 'tinit'"));
}
