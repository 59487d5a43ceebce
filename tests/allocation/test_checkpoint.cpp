// Checkpoint and resume: an allocator interrupted at any step and resumed gives bit-identical λ, masks, patterns.
#include <catch2/catch.hpp>

#include <cstring>
#include <filesystem>
#include <limits>
#include <tuple>

#include "adalora/allocation/rank_allocator.hpp"
#include "adalora/io/allocator_checkpoint.hpp"
#include "adalora/schedules/linear.hpp"
#include "support/adapter_fixture.hpp"
#include "support/backends_under_test.hpp"
#include "validate/trace_bytes.hpp"

using namespace adalora;
using adalora::testing::adapter_fixture;
using adalora::testing::backends_under_test;

namespace {
adalora_config resume_config() {
  adalora_config c;
  c.init_r = 5;
  c.target_r = 2;
  c.tinit = 4;
  c.tfinal = 6;
  c.total_step = 30;
  c.deltaT = 3;
  c.beta1 = 0.8;
  c.beta2 = 0.9;
  return c;
}
const std::vector<adalora::testing::adapter_shape> shapes = {{5, 9, 7}, {5, 4, 12}, {5, 8, 8}};

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  // memcmp must not see the null data() of an empty vector
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

/// Runs an allocator of state policy P from start to end, and a twin that is saved to a file after step `stop`, and
/// resumed from it by a new allocator of state policy Q; both must stay bit-identical throughout.
template <class B, StatePolicy P, StatePolicy Q = P>
void check_resume(std::int64_t stop) {
  const auto cfg = resume_config();
  const auto dir = std::filesystem::temp_directory_path();
  INFO("interrupted after step " << stop << ", state policy " << P::name << " resumed as " << Q::name);
  {
    using first = rank_allocator<B, sensitivity_uncertainty, cubic_schedule, float, self_communicator, P>;
    using second = rank_allocator<B, sensitivity_uncertainty, cubic_schedule, float, self_communicator, Q>;
    using TestType = B;
    adapter_fixture<TestType> whole(TestType{}, shapes, 55), split(TestType{}, shapes, 55);
    first a(cfg);
    auto b = std::make_unique<first>(cfg);
    std::unique_ptr<second> resumed;
    for (std::size_t k = 0; k < shapes.size(); ++k) {
      a.add_adapter(whole.name(k), whole.views(k));
      b->add_adapter(split.name(k), split.views(k));
    }
    const auto path = dir / ("adalora-resume-" + std::to_string(stop) + ".safetensors");
    for (std::int64_t t = 0; t < cfg.total_step + 3; ++t) {
      if (t == stop + 1) {
        io::save_checkpoint(*b, path);
        b.reset();  // the process dies; a new one starts
        resumed = std::make_unique<second>(cfg);
        for (std::size_t k = 0; k < shapes.size(); ++k) resumed->add_adapter(split.name(k), split.views(k));
        io::load_checkpoint(*resumed, path);
        REQUIRE(resumed->last_step() == a.last_step());
        const auto sa = a.save_state(), sb = resumed->save_state();
        REQUIRE(same_bits(sa.importance, sb.importance));
      }
      whole.perturb();
      split.perturb();
      whole.upload();
      split.upload();
      const auto ra = a.step(t);
      const auto rb = b ? b->step(t) : resumed->step(t);
      REQUIRE(ra.budget == rb.budget);
      REQUIRE(ra.masked == rb.masked);
      REQUIRE(ra.threshold == rb.threshold);
      for (std::size_t k = 0; k < shapes.size(); ++k) {
        REQUIRE(same_bits(whole.lambda(k), split.lambda(k)));
        const auto pattern = b ? b->rank_pattern(split.name(k)) : resumed->rank_pattern(split.name(k));
        REQUIRE(a.rank_pattern(whole.name(k)) == pattern);
        const auto scores = b ? b->triplet_scores(split.name(k)) : resumed->triplet_scores(split.name(k));
        REQUIRE(same_bits(a.triplet_scores(whole.name(k)), scores));
      }
    }
    REQUIRE(resumed->pattern_frozen());
    std::filesystem::remove(path);
  }
}
}  // namespace

TEMPLATE_LIST_TEST_CASE("a resumed run is bit-identical to an uninterrupted one", "[checkpoint]",
                        backends_under_test) {
  // interruption points: warm-up, budgeting (on and off mask steps), the step before the final one, the final
  // phase itself, and before any step at all
  for (std::int64_t stop : {-1, 2, 9, 10, 23, 24, 27}) check_resume<TestType, in_place_state>(stop);
  for (std::int64_t stop : {2, 10, 24}) {
    check_resume<TestType, double_buffered_state>(stop);
    check_resume<TestType, in_place_bf16_state>(stop);
    // the two float32 policies hold the same numbers: a checkpoint of one resumes as the other, bit for bit
    check_resume<TestType, double_buffered_state, in_place_state>(stop);
    check_resume<TestType, in_place_state, double_buffered_state>(stop);
  }
}

TEMPLATE_LIST_TEST_CASE("a checkpoint of another state value type is refused", "[checkpoint]", backends_under_test) {
  const auto cfg = resume_config();
  adapter_fixture<TestType> fx(TestType{}, shapes, 1);
  rank_allocator<TestType, sensitivity_uncertainty, cubic_schedule, float, self_communicator, in_place_bf16_state> bf16(cfg);
  rank_allocator<TestType> f32(cfg);
  for (std::size_t k = 0; k < shapes.size(); ++k) {
    bf16.add_adapter(fx.name(k), fx.views(k));
    f32.add_adapter(fx.name(k), fx.views(k));
  }
  fx.perturb();
  fx.upload();
  bf16.step(0);
  f32.step(0);
  const auto from_bf16 = bf16.save_state(), from_f32 = f32.save_state();
  REQUIRE(from_bf16.state_policy == "in_place_bf16");
  REQUIRE(from_bf16.state_type == "bfloat16");
  REQUIRE(from_f32.state_policy == "in_place");
  REQUIRE(from_f32.state_type == "float32");
  rank_allocator<TestType> fresh_f32(cfg);
  rank_allocator<TestType, sensitivity_uncertainty, cubic_schedule, float, self_communicator, in_place_bf16_state> fresh_bf16(cfg);
  for (std::size_t k = 0; k < shapes.size(); ++k) {
    fresh_f32.add_adapter(fx.name(k), fx.views(k));
    fresh_bf16.add_adapter(fx.name(k), fx.views(k));
  }
  REQUIRE_THROWS_AS(fresh_f32.restore_state(from_bf16), usage_error);
  REQUIRE_THROWS_WITH(fresh_f32.restore_state(from_bf16),
                      Catch::Contains("its importance state is stored as bfloat16 (state policy 'in_place_bf16') and "
                                      "this allocator stores float32 (state policy 'in_place')"));
  REQUIRE_THROWS_WITH(fresh_bf16.restore_state(from_f32),
                      Catch::Contains("stored as float32 (state policy 'in_place') and this allocator stores bfloat16"));
  REQUIRE_FALSE(fresh_f32.last_step().has_value());  // unchanged
  REQUIRE_FALSE(fresh_bf16.importance_live());
  // a float32 state that claims to be bfloat16 is caught value by value
  auto forged = from_f32;
  forged.state_type = "bfloat16";
  forged.importance.at(0) = 1.0f + 0x1p-20f;
  REQUIRE_THROWS_WITH(fresh_bf16.restore_state(forged), Catch::Contains("importance value 0"));
  REQUIRE_THROWS_WITH(fresh_bf16.restore_state(forged), Catch::Contains("is not a bfloat16 number"));
  REQUIRE_FALSE(fresh_bf16.importance_live());
}

TEMPLATE_LIST_TEST_CASE("each state policy holds the bytes it says", "[checkpoint][memory]", backends_under_test) {
  const auto cfg = resume_config();
  adapter_fixture<TestType> fx(TestType{}, shapes, 1);
  std::size_t parameters = 0;
  for (const auto& s : shapes) parameters += s.r * (s.in + 1 + s.out);
  auto held = [&]<StatePolicy P>(std::size_t per_parameter) {
    rank_allocator<TestType, sensitivity_uncertainty, cubic_schedule, float, self_communicator, P> a(cfg);
    STATIC_REQUIRE(decltype(a)::state_bytes_per_parameter == adalora::state_bytes_per_parameter<P>(2));
    REQUIRE(decltype(a)::state_bytes_per_parameter == per_parameter);
    for (std::size_t k = 0; k < shapes.size(); ++k) a.add_adapter(fx.name(k), fx.views(k));
    REQUIRE(a.state_bytes() == 0);
    fx.perturb();
    fx.upload();
    a.step(0);
    a.step(1);  // double-buffered: both arenas exist from the second step on
    REQUIRE(a.state_bytes() == per_parameter * parameters);
  };
  held.template operator()<double_buffered_state>(16);
  held.template operator()<in_place_state>(8);
  held.template operator()<in_place_bf16_state>(4);
}

TEMPLATE_LIST_TEST_CASE("a checkpoint of other adapters or another config is refused", "[checkpoint]",
                        backends_under_test) {
  const auto cfg = resume_config();
  adapter_fixture<TestType> fx(TestType{}, shapes, 1);
  rank_allocator<TestType> a(cfg);
  for (std::size_t k = 0; k < shapes.size(); ++k) a.add_adapter(fx.name(k), fx.views(k));
  fx.perturb();
  fx.upload();
  a.step(0);
  const auto state = a.save_state();

  auto other_cfg = cfg;
  other_cfg.deltaT = 4;
  rank_allocator<TestType> b(other_cfg);
  for (std::size_t k = 0; k < shapes.size(); ++k) b.add_adapter(fx.name(k), fx.views(k));
  REQUIRE_THROWS_WITH(b.restore_state(state), Catch::Contains("the configs differ"));
  REQUIRE_FALSE(b.last_step().has_value());  // unchanged

  rank_allocator<TestType> c(cfg);
  c.add_adapter(fx.name(1), fx.views(1));
  c.add_adapter(fx.name(0), fx.views(0));
  c.add_adapter(fx.name(2), fx.views(2));
  REQUIRE_THROWS_WITH(c.restore_state(state), Catch::Contains("adapter 0 is 'layers.0.q'"));

  rank_allocator<TestType, sensitivity_uncertainty, linear_schedule> d(cfg);
  for (std::size_t k = 0; k < shapes.size(); ++k) d.add_adapter(fx.name(k), fx.views(k));
  REQUIRE_THROWS_WITH(d.restore_state(state), Catch::Contains("schedule 'cubic' vs 'linear'"));
}

TEST_CASE("malformed checkpoints are format errors", "[checkpoint]") {
  allocator_state s;
  s.config = resume_config();
  s.metric = "sensitivity_uncertainty";
  s.schedule = "cubic";
  s.state_policy = "in_place_bf16";
  s.state_type = "bfloat16";
  s.adapters = {{"a", 2, 3, 4}};
  s.keep = {1, 0};
  s.scores = {0.5f, 0.25f};
  s.threshold = 0.25f;
  s.last_step = 7;
  s.budget = 2;
  s.importance_live = true;            // from the first step until the pattern is frozen
  s.importance.assign(2 * 2 * 8, 0.5f);  // two planes of r·(in + 1 + out) = 16 values
  const auto bytes = io::allocator_checkpoint_bytes(s);
  const auto back = io::read_allocator_checkpoint(io::safetensors_file::parse(bytes));
  REQUIRE(back.adapters == s.adapters);
  REQUIRE(back.keep == s.keep);
  REQUIRE(back.threshold == s.threshold);
  REQUIRE(back.last_step == s.last_step);
  REQUIRE(back.state_policy == "in_place_bf16");
  REQUIRE(back.state_type == "bfloat16");

  // a checkpoint from before state policies (no state_policy, state_type) held float32 state
  auto old = bytes;
  const std::string recorded = R"(,\"state_policy\":\"in_place_bf16\",\"state_type\":\"bfloat16\")";
  adalora::testing::edit_header(old, recorded, std::string(recorded.size(), ' '));
  const auto back_old = io::read_allocator_checkpoint(io::safetensors_file::parse(old));
  REQUIRE(back_old.state_policy.empty());
  REQUIRE(back_old.state_type == "float32");
  auto odd = bytes;
  adalora::testing::edit_header(odd, R"(\"state_type\":\"bfloat16\")", R"(\"state_type\":\"float128\")");
  REQUIRE_THROWS_WITH(io::read_allocator_checkpoint(io::safetensors_file::parse(odd)),
                      Catch::Contains("progress.state_type is 'float128'; expected float32 or bfloat16"));

  io::safetensors_writer w;
  w.add_metadata("format", "adalora-trace/alloc/1");
  REQUIRE_THROWS_WITH(io::read_allocator_checkpoint(io::safetensors_file::parse(w.to_bytes())),
                      Catch::Contains("not an allocator checkpoint"));
  io::safetensors_writer w2;
  w2.add_metadata("format", io::allocator_checkpoint_format);
  w2.add_metadata("config", "{\"init_r\": 4}");
  w2.add_metadata("adapters", "[]");
  w2.add_metadata("progress", "{}");
  REQUIRE_THROWS_WITH(io::read_allocator_checkpoint(io::safetensors_file::parse(w2.to_bytes())),
                      Catch::Contains("__metadata__.config lacks the field 'target_r'"));
}

TEST_CASE("a checkpoint whose arrays disagree with its adapters, or hold NaN, is a format error",
          "[checkpoint][hostile]") {
  allocator_state s;
  s.config = resume_config();
  s.metric = "sensitivity_uncertainty";
  s.schedule = "cubic";
  s.adapters = {{"a", 2, 3, 4}, {"b", 3, 2, 2}};
  s.keep = {1, 0, 1, 1, 0};
  s.scores = {0.5f, 0.25f, 0.75f, 1.0f, 0.125f};
  s.threshold = 0.25f;
  s.last_step = 9;
  s.budget = 4;
  s.importance_live = true;
  s.importance.assign(2 * (2 * 8 + 3 * 5), 0.5f);
  const auto good = io::allocator_checkpoint_bytes(s);
  REQUIRE(io::read_allocator_checkpoint(io::safetensors_file::parse(good)).adapters == s.adapters);
  auto refused = [](const allocator_state& bad, const char* message) {
    INFO(message);
    // the bytes are made without the writer's read-back check, as a crafted file would be
    const auto from = io::safetensors_file::parse(io::allocator_checkpoint_bytes(bad));
    REQUIRE_THROWS_AS(io::read_allocator_checkpoint(from), format_error);
    REQUIRE_THROWS_WITH(io::read_allocator_checkpoint(from), Catch::Contains(message));
  };
  // issue 17: metadata that claims an adapter rank of 1e8 (adalora-inspect then read the pattern out of bounds)
  auto huge_rank = s;
  huge_rank.adapters[1].r = 100'000'000;
  refused(huge_rank, "the rank pattern (keep) has 5 entries; the adapters' ranks sum to 100000002");
  auto overflow = s;
  overflow.adapters[0].out = std::numeric_limits<std::size_t>::max();
  refused(overflow, "adapter 0 ('a') (r 2, in 3, out 18446744073709551615) makes the adapters' sizes overflow");
  // issue 17: an importance edited to NaN was saved and restored, and the next mask step pruned everything
  auto nan = s;
  nan.importance[5] = std::numeric_limits<float>::quiet_NaN();
  refused(nan, "the importance holds 1 NaN or infinite values");
  auto twice = s;
  twice.adapters[1].name = "a";
  refused(twice, "adapter 1 ('a') appears twice");
  // and what a text editor can do to the metadata: a negative size, a rank that is a string, a deep nest
  for (const auto& [from, to, message] :
       {std::tuple{std::string("\"r\":3"), std::string("\"r\":-3"), "adapters[1].r is number -3; expected an integer in [0, "},
        std::tuple{std::string("\"r\":3"), std::string("\"r\":\"3\""), "adapters[1].r is string \"3\"; expected a non-negative integer"},
        std::tuple{std::string("\"metric\":\"sensitivity_uncertainty\""),
                   std::string("\"metric\":") + std::string(200, '[') + std::string(200, ']'),
                   "__metadata__.progress nests arrays and objects more than 64 deep"}}) {
    INFO(message);
    const auto file = io::safetensors_file::parse(good);
    auto edited_meta = file.metadata();
    for (auto& [key, value] : edited_meta)
      if (const auto pos = value.find(from); pos != std::string::npos) value.replace(pos, from.size(), to);
    io::safetensors_writer w;
    for (const auto& [key, value] : edited_meta) w.add_metadata(key, value);
    for (const auto& t : file.tensors()) w.add(t.name, t.shape, file.read_f32(t.name));
    REQUIRE_THROWS_WITH(io::read_allocator_checkpoint(io::safetensors_file::parse(w.to_bytes())), Catch::Contains(message));
  }
}
