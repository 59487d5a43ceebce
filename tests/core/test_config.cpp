// Tests of adalora_config validation: every invalid field is named in the message.
#include <catch2/catch.hpp>

#include "adalora/core/config.hpp"

using adalora::adalora_config;
using adalora::config_error;

namespace {
adalora_config valid() {
  adalora_config c;
  c.total_step = 100;
  c.tinit = 10;
  c.tfinal = 20;
  return c;
}
}  // namespace

TEST_CASE("a valid config passes validation", "[config]") {
  REQUIRE_NOTHROW(valid().validate());
}

TEST_CASE("total_step is required", "[config]") {
  adalora_config c;
  REQUIRE_THROWS_WITH(c.validate(), Catch::Contains("total_step = 0"));
}

TEST_CASE("each invalid field is reported by name", "[config]") {
  struct bad_case {
    const char* expect;
    void (*edit)(adalora_config&);
  };
  const bad_case cases[] = {
      {"target_r = 13", [](adalora_config& c) { c.target_r = 13; }},
      {"target_r = -1", [](adalora_config& c) { c.target_r = -1; }},
      {"init_r = -2", [](adalora_config& c) { c.init_r = -2; }},
      {"tinit = 80 is not below total_step - tfinal", [](adalora_config& c) { c.tinit = 80; }},
      {"tinit = -1", [](adalora_config& c) { c.tinit = -1; }},
      {"tfinal = -3", [](adalora_config& c) { c.tfinal = -3; }},
      {"deltaT = 0", [](adalora_config& c) { c.deltaT = 0; }},
      {"beta1 = 1.0", [](adalora_config& c) { c.beta1 = 1.0; }},
      {"beta2 = 0.0", [](adalora_config& c) { c.beta2 = 0.0; }},
      {"orth_reg_weight = -0.5", [](adalora_config& c) { c.orth_reg_weight = -0.5; }},
      {"lora_dropout = 1.0", [](adalora_config& c) { c.lora_dropout = 1.0; }},
  };
  for (const auto& bc : cases) {
    adalora_config c = valid();
    bc.edit(c);
    INFO("expecting: " << bc.expect);
    REQUIRE_THROWS_AS(c.validate(), config_error);
    REQUIRE_THROWS_WITH(c.validate(), Catch::Contains(bc.expect));
  }
}

TEST_CASE("boundary values are accepted", "[config]") {
  adalora_config c = valid();
  c.target_r = 0;  // every rank may be pruned
  REQUIRE_NOTHROW(c.validate());
  c.target_r = c.init_r;  // nothing to prune
  REQUIRE_NOTHROW(c.validate());
  c.tinit = 0;
  c.tfinal = 0;
  c.total_step = 1;
  REQUIRE_NOTHROW(c.validate());
  c.tinit = 79;
  c.tfinal = 20;
  c.total_step = 100;
  REQUIRE_NOTHROW(c.validate());
}
