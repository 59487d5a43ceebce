// Crafted files through every reader (safetensors headers, PEFT configs, alloc and layer traces): each is refused
// with a format_error that says what is wrong, quickly and without a crash, however large or deep it is.
#include <catch2/catch.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "adalora/adapters/svd_adapter.hpp"
#include "adalora/backends/eigen/eigen_backend.hpp"
#include "adalora/io/bounded_json.hpp"
#include "adalora/io/peft_adapter.hpp"
#include "adalora/io/safetensors.hpp"
#include "adalora/validate/alloc_trace.hpp"
#include "adalora/validate/layer_trace.hpp"

using namespace adalora;
namespace fs = std::filesystem;

namespace {

/// A safetensors file made by hand: its header text (not padded) and the data bytes.
std::vector<std::byte> hand_file(const std::string& header, std::size_t data_bytes = 0) {
  std::vector<std::byte> out(8 + header.size() + data_bytes, std::byte{0});
  for (int i = 0; i < 8; ++i) out[static_cast<std::size_t>(i)] = static_cast<std::byte>((header.size() >> (8 * i)) & 0xffu);
  for (std::size_t i = 0; i < header.size(); ++i) out[8 + i] = static_cast<std::byte>(header[i]);
  return out;
}

void expect_refused(const std::vector<std::byte>& bytes, const std::string& fragment) {
  INFO("expecting a format_error containing: " << fragment);
  REQUIRE_THROWS_AS(io::safetensors_file::parse(bytes, "crafted"), format_error);
  REQUIRE_THROWS_WITH(io::safetensors_file::parse(bytes, "crafted"), Catch::Contains(fragment));
}

/// A folder with a valid PEFT AdaLoRA adapter (one module "m": init_r 2, in 3, out 4), whose config the test rewrites.
struct peft_folder {
  fs::path dir;
  explicit peft_folder(const std::string& tag)
      : dir(fs::temp_directory_path() / ("adalora-hostile-" + tag + "-" +
                                         std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()))) {
    fs::create_directories(dir);
    io::safetensors_writer w;
    w.add("base_model.model.m.lora_A", {2, 3}, std::vector<float>(6, 0.5f));
    w.add("base_model.model.m.lora_E", {2, 1}, std::vector<float>(2, 1.0f));
    w.add("base_model.model.m.lora_B", {4, 2}, std::vector<float>(8, -0.25f));
    w.write(dir / io::peft_weights_file);
    config(R"({"peft_type": "ADALORA", "init_r": 2, "target_r": 1, "total_step": 10})");
  }
  ~peft_folder() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  void config(const std::string& text) const {
    std::ofstream(dir / io::peft_config_file, std::ios::binary | std::ios::trunc) << text;
  }
  /// The message of the format_error that reading the folder must give (checked to be short).
  std::string refusal() const {
    try {
      (void)io::read_peft_adalora(dir);
    } catch (const format_error& e) {
      const std::string what = e.what();
      REQUIRE(what.size() < 600);  // a value from the file is described, never copied whole
      return what;
    }
    FAIL("the folder was accepted");
    return {};
  }
};

std::string nested(std::size_t depth) {
  return std::string(depth, '[') + std::string(depth, ']');
}

}  // namespace

TEST_CASE("bounded JSON: depth, NUL bytes, repeated keys, kept members and short descriptions", "[io][json][hostile]") {
  REQUIRE(io::parse_json("[1, {\"a\": [true, null]}]", "t") == nlohmann::json::parse("[1, {\"a\": [true, null]}]"));
  REQUIRE_NOTHROW(io::parse_json(nested(io::max_json_depth), "t"));
  // issue 17: 100,000 nested '[' overflowed the stack of the code that described the value in its error
  REQUIRE_THROWS_WITH(io::parse_json(nested(io::max_json_depth + 1), "t"),
                      Catch::Contains("t nests arrays and objects more than 64 deep"));
  REQUIRE_THROWS_AS(io::parse_json(nested(100'000), "t"), format_error);
  // nlohmann's reader takes a NUL for the end and would accept what follows it unread
  REQUIRE_THROWS_WITH(io::parse_json(std::string("{}\0garbage", 10), "t"), Catch::Contains("NUL byte at offset 2"));
  REQUIRE_THROWS_WITH(io::parse_json(R"({"a": 1, "a": 2})", "t"), Catch::Contains("has the key \"a\" twice"));
  REQUIRE_THROWS_WITH(io::parse_json("[1, 2", "t"), Catch::Contains("t is not valid JSON"));
  // members not kept are read (and must be JSON) but not stored, whatever their size or depth within the limit
  static constexpr std::string_view keep[] = {"a"};
  const auto kept = io::parse_json(R"({"b": [[1, {"c": 2}], "x"], "a": 3, "d": {"e": null}})", "t", keep);
  REQUIRE(kept == nlohmann::json{{"a", 3}});
  REQUIRE_THROWS_AS(io::parse_json(R"({"b": [1, }, "a": 3})", "t", keep), format_error);
  REQUIRE_THROWS_AS(io::parse_json("{\"b\": " + nested(100) + ", \"a\": 3}", "t", keep), format_error);
  // descriptions never print an array or object, and clip strings
  REQUIRE(io::describe_json(nlohmann::json::array({1, 2, 3})) == "array of 3 values");
  REQUIRE(io::describe_json(nlohmann::json{{"k", 1}}) == "object of 1 members");
  REQUIRE(io::describe_json(std::string(1000, 'x')).size() < 60);
  REQUIRE(io::describe_json(2.5) == "number 2.5");
}

TEST_CASE("bounded JSON: a text of more values than the limit is refused", "[io][json][hostile]") {
  std::string many = "[";
  for (int i = 0; i < 1000; ++i) many += "0,";
  many += "0]";  // 1001 numbers and the array
  REQUIRE(io::parse_json(many, "t", {}, 1002).size() == 1001);
  REQUIRE_THROWS_WITH(io::parse_json(many, "t", {}, 1001), Catch::Contains("t holds more than 1001 values"));
  // values of members that are not kept do not count
  static constexpr std::string_view keep[] = {"a"};
  REQUIRE(io::parse_json("{\"b\": " + many + ", \"a\": 1}", "t", keep, 10) == nlohmann::json{{"a", 1}});
  REQUIRE(io::max_json_values == 4'194'304);
}

TEST_CASE("safetensors: a header with a NUL byte, or more entries than the limits, is refused", "[io][hostile]") {
  // issue 17: "{}" then bytes no tensor covers, hidden behind a NUL inside the header
  expect_refused(hand_file(std::string("{}\0\0\0\0\0\0", 8)), "the header holds a NUL byte at offset 2");
  expect_refused(hand_file(std::string("{}\0garbage", 10)), "NUL byte at offset 2");
  // metadata entries beyond the limit
  std::string meta = "{\"__metadata__\": {";
  for (std::size_t i = 0; i <= io::max_metadata_entries; ++i) meta += (i ? ",\"k" : "\"k") + std::to_string(i) + "\":\"\"";
  meta += "}}";
  expect_refused(hand_file(meta), "__metadata__ has more than 65536 entries");
  // a name, a number or a dtype from the header is clipped in messages
  expect_refused(hand_file("{\"" + std::string(100'000, 'n') + "\": {\"dtype\": \"F64\"}}"),
                 "tensor '" + std::string(64, 'n') + "...': unsupported dtype");
  try {
    io::safetensors_file::parse(hand_file("{\"w\": {\"dtype\": \"" + std::string(100'000, 'd') + "\"}}"));
  } catch (const format_error& e) {
    REQUIRE(std::string(e.what()).size() < 300);
  }
}

TEST_CASE("safetensors: more tensors than max_tensors are refused while the header is read", "[io][hostile]") {
  std::string header = "{";
  header.reserve(60 * (io::max_tensors + 1));
  for (std::size_t i = 0; i <= io::max_tensors; ++i)
    header += (i ? ",\"" : "\"") + std::to_string(i) + R"(":{"dtype":"F32","shape":[0],"data_offsets":[0,0]})";
  header += "}";
  expect_refused(hand_file(header), "the header lists more than 1048576 tensors");
}

TEST_CASE("PEFT configs: deep, huge, oddly typed or out-of-range fields give short format errors", "[io][peft][hostile]") {
  peft_folder f("config");
  REQUIRE(io::read_peft_adalora(f.dir).modules.size() == 1);
  // issue 17: 100,000 nested '[' (as a field we read, or one we do not) crashed the reader and adalora-inspect
  f.config(R"({"peft_type": "ADALORA", "init_r": 2, "target_modules": )" + nested(100'000) + "}");
  REQUIRE_THAT(f.refusal(), Catch::Contains("adapter_config.json nests arrays and objects more than 64 deep"));
  f.config(R"({"peft_type": "ADALORA", "init_r": 2, "loftq_config": )" + nested(100'000) + "}");
  REQUIRE_THAT(f.refusal(), Catch::Contains("more than 64 deep"));
  // issue 17: lora_alpha = 1e300 gave an infinite scaling and non-finite outputs
  f.config(R"({"peft_type": "ADALORA", "init_r": 2, "lora_alpha": 1e300})");
  REQUIRE_THAT(f.refusal(), Catch::Contains("lora_alpha = ") && Catch::Contains("infinite in float32"));
  // issue 17: a peft_type that is an array surfaced as nlohmann's type_error
  f.config(R"({"peft_type": ["ADALORA"], "init_r": 2})");
  REQUIRE_THAT(f.refusal(), Catch::Contains("\"peft_type\" is array of 1 values; expected a string or null"));
  // values are described, not copied into the message
  f.config(R"({"peft_type": ")" + std::string(1'000'000, 'X') + R"("})");
  REQUIRE_THAT(f.refusal(), Catch::Contains("peft_type is \"XXXX"));
  std::string ones;
  for (int i = 0; i < 100'000; ++i) ones += "1,";
  f.config(R"({"peft_type": "ADALORA", "init_r": 2, "target_modules": {"k": [)" + ones + "1]}}");
  REQUIRE_THAT(f.refusal(), Catch::Contains("target_modules is object of 1 members"));
  f.config(R"({"peft_type": "ADALORA", "init_r": 2, "rank_pattern": {")" + std::string(10'000, 'k') + R"(": []}})");
  REQUIRE_THAT(f.refusal(), Catch::Contains("names no lora_E"));
  f.config(std::string(R"({"peft_type": "ADALORA", "init_r": 2})") + '\0' + "{garbage");
  REQUIRE_THAT(f.refusal(), Catch::Contains("NUL byte"));
  f.config(R"({"peft_type": "ADALORA", "init_r": 2, "init_r": 3})");
  REQUIRE_THAT(f.refusal(), Catch::Contains("has the key \"init_r\" twice"));
  f.config(R"({"peft_type": "ADALORA", "init_r": 18446744073709551615})");
  REQUIRE_THAT(f.refusal(), Catch::Contains("expected an integer below 2^63"));
}

TEST_CASE("PEFT configs: fields the reader does not use are not kept, however many", "[io][peft][hostile]") {
  // issue 17: 99 MB of keys took 26 s and 1.8 GB; unused fields are now read as JSON and dropped
  peft_folder f("keys");
  std::string text = R"({"peft_type": "ADALORA", "init_r": 2, "target_r": 1, "total_step": 10, "junk": {)";
  for (int i = 0; i < 200'000; ++i) text += (i ? ",\"k" : "\"k") + std::to_string(i) + "\":[" + std::to_string(i) + "]";
  text += "}}";
  f.config(text);
  const auto ck = io::read_peft_adalora(f.dir);
  REQUIRE(ck.modules.size() == 1);
  REQUIRE(ck.config.total_step == 10);
}

TEST_CASE("target_modules of 20,000 names match 20,000 modules in O(n log n)", "[io][peft][hostile]") {
  // issue 17 (registration class): each module was matched against every target, n² string comparisons
  peft_folder f("targets");
  constexpr int n = 20'000;
  io::safetensors_writer w;
  nlohmann::json targets = nlohmann::json::array();
  const std::vector<float> a(3, 0.5f), e(1, 1.0f), b(2, 0.25f);
  for (int i = 0; i < n; ++i) {
    const std::string m = "model.experts." + std::to_string(i) + ".up";
    w.add("base_model.model." + m + ".lora_A", {1, 3}, a);
    w.add("base_model.model." + m + ".lora_E", {1, 1}, e);
    w.add("base_model.model." + m + ".lora_B", {2, 1}, b);
    targets.push_back(i % 2 ? m : "experts." + std::to_string(i) + ".up");  // full paths and suffixes
  }
  w.write(f.dir / io::peft_weights_file);
  f.config(nlohmann::json{{"peft_type", "ADALORA"}, {"init_r", 1}, {"target_modules", targets}}.dump());
  REQUIRE(io::read_peft_adalora(f.dir).modules.size() == n);
  // a suffix must end at a component boundary
  targets[0] = "xperts.0.up";
  f.config(nlohmann::json{{"peft_type", "ADALORA"}, {"init_r", 1}, {"target_modules", targets}}.dump());
  REQUIRE_THAT(f.refusal(), Catch::Contains("target_modules does not cover module 'model.experts.0.up'"));
}

TEST_CASE("a layer trace whose case sizes overflow is a format error before anything is allocated",
          "[validate][hostile]") {
  // issue 17: d_in = d_out = batch = 2^32 and r = 0 made adalora-trace die with SIGSEGV (d_out × d_in wrapped to 0)
  auto trace = [](const nlohmann::json& cases, std::vector<std::size_t> shape) {
    io::safetensors_writer w;
    w.add_metadata("format", "adalora-trace/layer/1");
    w.add_metadata("cases", cases.dump());
    for (const char* k : {"W", "A", "E", "B", "x", "dy", "y", "grad/A", "grad/E", "grad/B", "grad/x", "orth/R",
                          "orth/grad/A", "orth/grad/B"})
      w.add(std::string("0/") + k, shape, std::vector<float>{});
    return io::safetensors_file::parse(w.to_bytes(), "crafted-layer");
  };
  const std::uint64_t big = std::uint64_t{1} << 32;
  const auto overflow = trace({{{"case", 0}, {"d_in", big}, {"d_out", big}, {"r", 0}, {"batch", big}, {"alpha", 1}}}, {0});
  REQUIRE_THROWS_AS(validate::replay_layer_trace(overflow, eigen_backend{}), format_error);
  REQUIRE_THROWS_WITH(validate::replay_layer_trace(overflow, eigen_backend{}),
                      Catch::Contains("case 0: the size of W overflows"));
  const auto mismatch = trace({{{"case", 0}, {"d_in", 3}, {"d_out", 2}, {"r", 1}, {"batch", 1}, {"alpha", 1}}}, {0});
  REQUIRE_THROWS_WITH(validate::replay_layer_trace(mismatch, eigen_backend{}),
                      Catch::Contains("0/W has shape [0], 0 values; expected 6"));
  const auto zero = trace({{{"case", 0}, {"d_in", 0}, {"d_out", 2}, {"r", 1}, {"batch", 1}, {"alpha", 1}}}, {0});
  REQUIRE_THROWS_WITH(validate::replay_layer_trace(zero, eigen_backend{}), Catch::Contains("both must be positive"));
  const auto negative = trace({{{"case", 0}, {"d_in", -1}, {"d_out", 2}, {"r", 1}, {"batch", 1}, {"alpha", 1}}}, {0});
  REQUIRE_THROWS_WITH(validate::replay_layer_trace(negative, eigen_backend{}),
                      Catch::Contains("d_in is number -1; expected an integer in [0, "));
}

TEST_CASE("an adapter whose scaling would be infinite, or whose sizes overflow, is refused", "[adapters][hostile]") {
  adapter_options huge;
  huge.lora_alpha = 1e300;  // the layer trace's alpha, or a PEFT config's lora_alpha
  REQUIRE_THROWS_AS(svd_adapter<eigen_backend>(3, 2, 1, huge), config_error);
  REQUIRE_THROWS_WITH(svd_adapter<eigen_backend>(3, 2, 1, huge), Catch::Contains("the adapter scaling"));
  REQUIRE_THROWS_AS(svd_adapter<eigen_backend>(std::size_t{1} << 40, 2, std::size_t{1} << 40), shape_error);
  REQUIRE_THROWS_WITH(svd_adapter<eigen_backend>(3, std::size_t{1} << 62, 4),
                      Catch::Contains("out × r is more elements than one object can hold"));
}

TEST_CASE("an alloc trace with fields of the wrong type is a format error, not nlohmann's", "[validate][hostile]") {
  auto trace = [](const std::string& adapters, const std::string& steps) {
    io::safetensors_writer w;
    w.add_metadata("format", "adalora-trace/alloc/1");
    w.add_metadata("config", R"({"init_r": 2, "target_r": 1, "tinit": 0, "tfinal": 0, "total_step": 4,)"
                             R"( "deltaT": 1, "beta1": 0.85, "beta2": 0.85})");
    w.add_metadata("adapters", adapters);
    w.add_metadata("steps", steps);
    for (const char* k : {"lora_A", "grad/lora_A"}) w.add(std::string("0/a/") + k, {2, 3}, std::vector<float>(6, 0.5f));
    for (const char* k : {"lora_E", "grad/lora_E", "out/lora_E"}) w.add(std::string("0/a/") + k, {2, 1}, std::vector<float>(2, 1.0f));
    for (const char* k : {"lora_B", "grad/lora_B"}) w.add(std::string("0/a/") + k, {4, 2}, std::vector<float>(8, 0.25f));
    return io::safetensors_file::parse(w.to_bytes(), "crafted-alloc");
  };
  const std::string step = R"([{"t": 0, "budget": 2, "masked": false, "threshold": null, "phase": "update"}])";
  REQUIRE(validate::replay_alloc_trace(trace(R"(["a"])", step), eigen_backend{}).passed());
  auto refused = [&](const std::string& adapters, const std::string& steps, const char* message) {
    INFO(message);
    const auto f = trace(adapters, steps);
    REQUIRE_THROWS_AS(validate::replay_alloc_trace(f, eigen_backend{}), format_error);
    REQUIRE_THROWS_WITH(validate::replay_alloc_trace(f, eigen_backend{}), Catch::Contains(message));
  };
  refused("[5]", step, "an adapter name is number 5; expected a string");
  refused(R"(["a"])", R"([{"t": "0"}])", "steps[0].t is string \"0\"; expected an integer");
  refused(R"(["a"])", R"([{"t": 0, "budget": 2.5, "masked": false, "threshold": null, "phase": "update"}])",
          "step 0: budget is number 2.5");
  refused(R"(["a"])", R"([{"t": 0, "budget": 2, "masked": 0, "threshold": null, "phase": "update"}])",
          "step 0: masked is number 0; expected true or false");
  refused(R"(["a"])", R"([{"t": 0, "budget": 2, "masked": false, "threshold": [], "phase": "update"}])",
          "step 0: threshold is array of 0 values; expected a number");
  refused(R"(["a"])", R"([{"t": 0, "budget": 2, "masked": false, "threshold": null, "phase": 1}])",
          "step 0: phase is number 1; expected a string");
  refused(R"(["a"])", R"([7])", "steps[0] is number 7, not an object");
  refused(R"(["a"])", "[" + nested(100) + "]", "more than 64 deep");
}
