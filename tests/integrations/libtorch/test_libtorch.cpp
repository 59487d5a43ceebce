// The libtorch integration: tensor views, attach() and its gradient rebinding, SVDLinear against svd_adapter and the
// PEFT layer traces, the differentiable regularizer, the PEFT export, and SVDLinear training reaching the masks the
// library's own adapters reach. One translation unit: libtorch's headers are heavy to compile.
#include <catch2/catch.hpp>

#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/optim/adamw.h>
#include <torch/utils.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "adalora/adalora.hpp"
#include "adalora/adapters/orthogonal_regularizer.hpp"
#include "adalora/adapters/svd_adapter.hpp"
#include "adalora/integrations/libtorch.hpp"
#include "adalora/io/peft_adapter.hpp"
#include "adalora/optim/adamw.hpp"
#include "adalora/validate/layer_trace.hpp"
#include "integrations/libtorch/require_throws.hpp"
#include "support/random_values.hpp"

using namespace adalora;
namespace lt = adalora::libtorch;
using adalora::testing::normal_values;
using adalora::testing::require_throws;
using adalora::testing::require_throws_exactly;
using lt::SVDLinear;
using lt::SVDLinearOptions;
using named_tensors = std::vector<std::pair<std::string, at::Tensor>>;

// ---- concepts ------------------------------------------------------------------------------------------------------
static_assert(lt::NamedTensorRange<torch::OrderedDict<std::string, at::Tensor>>);
static_assert(lt::NamedTensorRange<named_tensors>);
static_assert(!lt::NamedTensorRange<std::vector<at::Tensor>>);
static_assert(!lt::NamedTensorRange<std::vector<std::pair<int, at::Tensor>>>);
static_assert(lt::TorchModule<torch::nn::Module>);
static_assert(lt::TorchModule<SVDLinear>);
static_assert(lt::TorchModule<torch::nn::Sequential>);
static_assert(!lt::TorchModule<named_tensors>);
static_assert(!lt::TorchModule<at::Tensor>);
static_assert(lt::scalar_type_of<float> == at::kFloat && lt::scalar_type_of<const bfloat16> == at::kBFloat16);
static_assert(lt::device_type_of<host_space> == c10::DeviceType::CPU &&
              lt::device_type_of<cuda_device_space> == c10::DeviceType::CUDA);

namespace {

at::Tensor from_values(const std::vector<float>& v, at::IntArrayRef shape) {
  return at::tensor(v, at::kFloat).reshape(shape).clone();
}
std::vector<float> values_of(const at::Tensor& t) {
  return lt::host_copy(t);
}

/// max |a − b| / max(max |b|, tiny): the relative difference the tests bound.
double rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  double worst = 0.0, scale = 1e-30;
  for (std::size_t i = 0; i < a.size(); ++i) {
    worst = std::max(worst, std::fabs(double(a[i]) - double(b[i])));
    scale = std::max(scale, std::fabs(double(b[i])));
  }
  return worst / scale;
}

/// A model with adapters at nested paths: encoder.layers.{0,1}.{q,v} and head.
struct NestedImpl : torch::nn::Module {
  explicit NestedImpl(const std::string& adapter_name = "", double lora_alpha = 3.0) {
    auto opts = [&](std::int64_t in, std::int64_t out) {
      return SVDLinearOptions(in, out, 3).adapter_name(adapter_name).lora_alpha(lora_alpha);
    };
    layers = register_module("layers", torch::nn::ModuleList());
    for (int i = 0; i < 2; ++i) {
      auto block = std::make_shared<torch::nn::Module>();
      block->register_module("q", SVDLinear(opts(6, 6)));
      block->register_module("v", SVDLinear(opts(6, 6)));
      layers->push_back(block);
    }
    head = register_module("head", SVDLinear(opts(6, 2)));
  }
  at::Tensor forward(at::Tensor x) {
    for (const auto& block : *layers) {
      auto children = block->named_children();
      x = at::tanh(children["q"]->as<lt::SVDLinearImpl>()->forward(x) +
                   children["v"]->as<lt::SVDLinearImpl>()->forward(x));
    }
    return head->forward(x);
  }
  torch::nn::ModuleList layers{nullptr};
  SVDLinear head{nullptr};
};
TORCH_MODULE(Nested);

struct Wrapper : torch::nn::Module {
  Nested encoder;
  explicit Wrapper(const std::string& adapter_name = "", double lora_alpha = 3.0) : encoder(adapter_name, lora_alpha) {
    register_module("encoder", encoder);
  }
};

adalora_config small_config(std::int64_t total_step = 40) {
  adalora_config c;
  c.init_r = 3;
  c.target_r = 1;
  c.tinit = 2;
  c.tfinal = 10;
  c.deltaT = 2;
  c.total_step = total_step;
  c.lora_alpha = 3.0;
  return c;
}

/// Gives every adapter non-zero λ so that all three gradients are non-trivial.
void nudge_lambdas(torch::nn::Module& m, float value = 0.1f) {
  torch::NoGradGuard no_grad;
  for (auto& p : m.named_parameters())
    if (p.key().find("lora_E") != std::string::npos) p.value().fill_(value);
}

at::Tensor loss_of(Wrapper& w, const at::Tensor& x) {
  return w.encoder->forward(x).square().sum();
}

}  // namespace

// ---- tensor views ------------------------------------------------------------------------------------------------

TEST_CASE("views of torch tensors point at their memory", "[libtorch][views]") {
  at::Tensor m = at::arange(12, at::kFloat).reshape({3, 4});
  const auto v = lt::matrix_view_of<float>(m, "m");
  REQUIRE(v.data == m.data_ptr<float>());
  REQUIRE(v.extents == std::array<std::size_t, 2>{3, 4});
  REQUIRE(v(2, 1) == 9.0f);
  v(0, 0) = 42.0f;  // written through the view, seen by torch
  REQUIRE(m[0][0].item<float>() == 42.0f);

  at::Tensor column = at::arange(5, at::kFloat).reshape({5, 1});
  const auto c = lt::vector_view_of<const float>(column, "E");
  REQUIRE(c.extents[0] == 5);
  REQUIRE(c(4) == 4.0f);
  REQUIRE(lt::vector_view_of<float>(at::zeros({5}), "E").extents[0] == 5);

  at::Tensor half_row = at::arange(8, at::kFloat).reshape({2, 4}).slice(0, 1, 2);  // a contiguous slice with offset
  REQUIRE(lt::matrix_view_of<float>(half_row, "r")(0, 0) == 4.0f);

  at::Tensor b = at::tensor({1.5f, -2.0f, 3.25f}, at::kFloat).to(at::kBFloat16);
  const auto bv = lt::vector_view_of<bfloat16>(b, "b");
  REQUIRE(static_cast<float>(bv(1)) == -2.0f);
  REQUIRE(static_cast<void*>(bv.data) == b.data_ptr());

  at::Tensor empty = at::zeros({0, 4});
  REQUIRE(lt::matrix_view_of<float>(empty, "e").empty());
}

TEST_CASE("views of unsuitable tensors are refused with typed errors", "[libtorch][views][errors]") {
  using Catch::Contains;
  require_throws_exactly<usage_error>([&] { (void)lt::matrix_view_of<float>(at::Tensor(), "lora_A"); },
                                      "lora_A is an undefined tensor");
  REQUIRE_THROWS_WITH(
      lt::matrix_view_of<float>(at::zeros({2, 2}, at::kDouble), "lora_A"),
      Contains("lora_A is a Double tensor of shape (2, 2) on cpu") && Contains("element type is Float"));
  REQUIRE_THROWS_AS(lt::matrix_view_of<float>(at::zeros({2, 2}, at::kHalf), "x"), usage_error);
  REQUIRE_THROWS_WITH(lt::matrix_view_of<bfloat16>(at::zeros({2, 2}), "x"), Contains("element type is BFloat16"));
  REQUIRE_THROWS_WITH((lt::matrix_view_of<float, cuda_device_space>(at::zeros({2, 2}), "g")),
                      Contains("g is a Float tensor of shape (2, 2) on cpu, but the allocator's backend reads "
                               "cuda_device memory (cuda tensors)"));
  REQUIRE_THROWS_AS((lt::matrix_view_of<float, cuda_device_space>(at::zeros({2, 2}), "g")), usage_error);
  require_throws<shape_error>(
      [&] {
        (void)lt::matrix_view_of<float>(at::zeros({3, 2}).t(), "lora_B");
      },
      "not contiguous");
  require_throws<shape_error>([&] { (void)lt::matrix_view_of<float>(at::zeros({2, 2, 2}), "A"); }, "expected a matrix");
  require_throws<shape_error>(
      [&] {
        (void)lt::vector_view_of<float>(at::zeros({3, 2}), "lora_E");
      },
      "expected a vector (n) or a column (n, 1)");
  require_throws<usage_error>([&] { (void)lt::matrix_view_of<float>(at::zeros({2, 2}).to_sparse(), "s"); }, "layout");
}

TEST_CASE("adapter_views_of takes the gradients once they exist", "[libtorch][views]") {
  SVDLinear layer(SVDLinearOptions(5, 4, 3));
  auto before = lt::adapter_views_of<float>(layer->lora_A(), layer->lora_E(), layer->lora_B(), "m");
  REQUIRE(before.rank() == 3);
  REQUIRE(before.in_features() == 5);
  REQUIRE(before.out_features() == 4);
  REQUIRE_FALSE(before.has_gradients());
  layer->forward(at::randn({2, 5})).sum().backward();
  auto after = lt::adapter_views_of<float>(layer->lora_A(), layer->lora_E(), layer->lora_B(), "m");
  REQUIRE(after.has_gradients());
  REQUIRE(after.grad_E.data == layer->lora_E().grad().data_ptr<float>());
  REQUIRE(after.lora_B.data == layer->lora_B().data_ptr<float>());
  // shapes that disagree
  require_throws<shape_error>(
      [&] {
        (void)lt::adapter_views_of<float>(at::zeros({3, 5}), at::zeros({2, 1}), at::zeros({4, 3}), "bad");
      },
      "adapter 'bad': ranks disagree");
}

// ---- finding adapters by name --------------------------------------------------------------------------------------

TEST_CASE("PEFT parameter names are parsed with and without an adapter name", "[libtorch][attach]") {
  using lt::detail::parse_peft_parameter;
  auto p = parse_peft_parameter("model.layers.0.q.lora_A");
  REQUIRE(p);
  REQUIRE(p->module == "model.layers.0.q");
  REQUIRE(p->kind == 0);
  REQUIRE(p->adapter.empty());
  p = parse_peft_parameter("q.lora_E.default");
  REQUIRE(p);
  REQUIRE(p->module == "q");
  REQUIRE(p->kind == 1);
  REQUIRE(p->adapter == "default");
  p = parse_peft_parameter("lora_B");
  REQUIRE(p);
  REQUIRE(p->module.empty());
  REQUIRE_FALSE(parse_peft_parameter("q.lora_Ax"));
  REQUIRE_FALSE(parse_peft_parameter("q.lora_A.default.weight"));
  REQUIRE_FALSE(parse_peft_parameter("q.base_layer.weight"));
  REQUIRE_FALSE(parse_peft_parameter("q.lora_embedding_A.default"));
}

TEST_CASE("find_adapters finds nested SVDLinear layers under their paths", "[libtorch][attach]") {
  for (const std::string name : {"", "default"}) {
    INFO("adapter name '" << name << "'");
    Wrapper w(name);
    const auto found = lt::find_adapters(w);
    REQUIRE(found.size() == 5);
    const std::vector<std::string> expected{"encoder.layers.0.q", "encoder.layers.0.v", "encoder.layers.1.q",
                                            "encoder.layers.1.v", "encoder.head"};
    for (std::size_t k = 0; k < found.size(); ++k) {
      REQUIRE(found[k].module == expected[k]);
      REQUIRE(found[k].adapter_name == name);
    }
    REQUIRE(found[4].lora_B.size(0) == 2);
    // the tensors are the module's parameters themselves
    REQUIRE(found[4].lora_E.data_ptr() == w.encoder->head->lora_E().data_ptr());
  }
}

TEST_CASE("find_adapters refuses incomplete, unnamed, ambiguous or absent adapters", "[libtorch][attach][errors]") {
  using Catch::Contains;
  const auto t = at::zeros({2, 2});
  named_tensors params{{"a.lora_A", t}, {"a.lora_B", t}, {"b.lora_A", t}, {"b.lora_E", t}, {"b.lora_B", t}};
  require_throws<usage_error>([&] { (void)lt::find_adapters(params); },
                              "module 'a' has no lora_E; an AdaLoRA adapter is the triple");
  named_tensors only_b(params.begin() + 2, params.end());
  REQUIRE(lt::find_adapters(only_b).size() == 1);

  SVDLinear top(SVDLinearOptions(3, 3, 2));
  REQUIRE_THROWS_WITH(lt::find_adapters(top), Contains("parameter 'lora_A' belongs to the module passed itself"));

  torch::nn::Sequential plain(torch::nn::Linear(3, 3), torch::nn::Linear(3, 2));
  REQUIRE_THROWS_WITH(lt::find_adapters(plain), Contains("none of the module's 4 parameters is an AdaLoRA adapter"));

  // two adapters on one model: one must be chosen
  named_tensors two{{"a.lora_A.default", t}, {"a.lora_E.default", t}, {"a.lora_B.default", t},
                    {"a.lora_A.other", t},   {"a.lora_E.other", t},   {"a.lora_B.other", t}};
  REQUIRE_THROWS_WITH(lt::find_adapters(two), Contains("several adapters ('default', 'other'"));
  const auto other = lt::find_adapters(two, std::string("other"));
  REQUIRE(other.size() == 1);
  REQUIRE(other[0].adapter_name == "other");
  REQUIRE_THROWS_WITH(lt::find_adapters(two, std::string("third")), Contains("no adapter named 'third'"));
}

// ---- attach ------------------------------------------------------------------------------------------------------

TEST_CASE("attach registers every adapter and steps through backward passes", "[libtorch][attach]") {
  for (const std::string name : {"", "default"}) {
    INFO("adapter name '" << name << "'");
    torch::manual_seed(1);
    Wrapper w(name);
    nudge_lambdas(w);
    rank_allocator<eigen_backend> allocator(small_config());
    auto attached = lt::attach(allocator, w);
    REQUIRE(allocator.adapter_count() == 5);
    REQUIRE(allocator.adapter_name(0) == "encoder.layers.0.q");
    REQUIRE(allocator.initial_budget() == 15);
    REQUIRE(attached.adapters().size() == 5);
    REQUIRE(attached.device() == c10::Device(c10::DeviceType::CPU));
    torch::optim::AdamW opt(w.parameters(), torch::optim::AdamWOptions(0.01).weight_decay(0.0));
    const auto x = at::randn({4, 6});
    for (std::int64_t t = 0; t < 40; ++t) {
      (loss_of(w, x) + lt::orthogonal_regularization(attached)).backward();
      opt.step();
      const auto rep = attached.step(t);
      REQUIRE(rep.step == t);
      w.zero_grad(/*set_to_none=*/t % 2 == 0);  // new gradient tensors every other step
    }
    REQUIRE(allocator.pattern_frozen());
    const auto ranks = allocator.ranks();
    REQUIRE(std::accumulate(ranks.begin(), ranks.end(), std::int64_t{0}) == 5);
    // the allocator's masks are in the module's own λ
    for (const auto& a : attached.adapters()) {
      const auto keep = allocator.rank_pattern(a.module);
      for (std::size_t i = 0; i < keep.size(); ++i)
        if (!keep[i]) REQUIRE(a.lora_E[static_cast<std::int64_t>(i)][0].item<float>() == 0.0f);
    }
  }
}

TEST_CASE("attach refuses what would break later, and registers nothing then", "[libtorch][attach][errors]") {
  using Catch::Contains;
  Wrapper w;
  SECTION("an allocator that has run") {
    rank_allocator<eigen_backend> allocator(small_config());
    SVDLinear other(SVDLinearOptions(2, 2, 3));
    torch::nn::Sequential seq(other);
    auto first = lt::attach(allocator, seq);
    other->forward(at::randn({1, 2})).sum().backward();
    first.step(0);
    require_throws<usage_error>([&] { (void)lt::attach(allocator, w); }, "has already run step 0");
  }
  SECTION("a name the allocator holds") {
    rank_allocator<eigen_backend> allocator(small_config());
    lt::attach(allocator, w);
    require_throws<usage_error>([&] { (void)lt::attach(allocator, w); },
                                "already has an adapter named 'encoder.layers.0.q'");
    REQUIRE(allocator.adapter_count() == 5);
  }
  SECTION("a frozen adapter parameter") {
    rank_allocator<eigen_backend> allocator(small_config());
    w.encoder->head->lora_B().set_requires_grad(false);
    require_throws<usage_error>([&] { (void)lt::attach(allocator, w); },
                                "module 'encoder.head': lora_B does not require grad");
    REQUIRE(allocator.adapter_count() == 0);
  }
  SECTION("a dtype the allocator does not read") {
    rank_allocator<eigen_backend> allocator(small_config());
    w.to(at::kDouble);
    require_throws<usage_error>([&] { (void)lt::attach(allocator, w); },
                                "module 'encoder.layers.0.q': lora_A is a Double tensor");
    REQUIRE(allocator.adapter_count() == 0);
  }
  SECTION("a Float model with a bfloat16 allocator") {
    rank_allocator<eigen_backend, sensitivity_uncertainty, cubic_schedule, bfloat16> allocator(small_config());
    REQUIRE_THROWS_WITH(lt::attach(allocator, w), Contains("element type is BFloat16"));
    REQUIRE(allocator.adapter_count() == 0);
  }
}

TEST_CASE("a bfloat16 model attaches to a bfloat16 allocator", "[libtorch][attach]") {
  torch::manual_seed(3);
  Wrapper w;
  w.to(at::kBFloat16);
  nudge_lambdas(w);
  rank_allocator<eigen_backend, sensitivity_uncertainty, cubic_schedule, bfloat16> allocator(small_config());
  auto attached = lt::attach(allocator, w);
  const auto x = at::randn({4, 6}).to(at::kBFloat16);
  for (std::int64_t t = 0; t < 40; ++t) {
    loss_of(w, x).backward();
    attached.step(t);
    w.zero_grad(true);
  }
  const auto ranks = allocator.ranks();
  REQUIRE(std::accumulate(ranks.begin(), ranks.end(), std::int64_t{0}) == 5);
}

TEST_CASE("step() names the module whose gradients are missing or all zero", "[libtorch][attach][errors]") {
  using Catch::Contains;
  torch::manual_seed(2);
  Wrapper w;
  nudge_lambdas(w);
  rank_allocator<eigen_backend> allocator(small_config());
  auto attached = lt::attach(allocator, w);
  const auto x = at::randn({4, 6});

  // before any backward: no gradient at all
  require_throws<missing_gradient_error>([&] { (void)attached.step(0); },
                                         "step(0): module 'encoder.layers.0.q': lora_A has no gradient (.grad() is "
                                         "undefined)");
  REQUIRE_FALSE(allocator.last_step());

  // one module not used in forward: only it lacks gradients
  auto& block1 = *w.encoder->layers[1];
  (w.encoder->layers[0]->named_children()["q"]->as<lt::SVDLinearImpl>()->forward(x).sum() +
   w.encoder->head->forward(block1.named_children()["v"]->as<lt::SVDLinearImpl>()->forward(x)).sum() +
   w.encoder->layers[0]->named_children()["v"]->as<lt::SVDLinearImpl>()->forward(x).sum())
      .backward();
  require_throws<missing_gradient_error>([&] { (void)attached.step(0); }, "module 'encoder.layers.1.q'");
  REQUIRE_FALSE(allocator.last_step());

  // gradients zeroed (not set to none) before step(): all zero
  w.zero_grad(/*set_to_none=*/true);
  loss_of(w, x).backward();
  w.zero_grad(/*set_to_none=*/false);
  require_throws<missing_gradient_error>(
      [&] { (void)attached.step(0); },
      "module 'encoder.layers.0.q': the gradients of lora_A, lora_E and lora_B are all "
      "zero");
  REQUIRE_FALSE(allocator.last_step());

  // an all-zero gradient on one tensor only is fine (λ = 0 gives P and Q no task gradient at first)
  loss_of(w, x).backward();
  w.encoder->head->lora_A().mutable_grad().zero_();
  w.encoder->head->lora_B().mutable_grad().zero_();
  REQUIRE(attached.step(0).step == 0);

  // and the check can be turned off
  rank_allocator<eigen_backend> lenient(small_config());
  lt::attach_options o;
  o.check_zero_gradients = false;
  auto relaxed = lt::attach(lenient, w, o);
  w.zero_grad(false);
  REQUIRE(relaxed.step(0).step == 0);
}

TEST_CASE("gradients are rebound every step: a re-allocated gradient is read, the stale one is not",
          "[libtorch][attach]") {
  // Two allocators see the same numbers: one through attach() on the module, one through views of separate copies
  // refreshed every step. If attach() kept reading an old gradient buffer (poisoned below), their scores would part.
  torch::manual_seed(4);
  Wrapper w;
  nudge_lambdas(w);
  const adalora_config cfg = small_config();
  rank_allocator<eigen_backend> attached_alloc(cfg), reference(cfg);
  auto attached = lt::attach(attached_alloc, w);
  struct copies {
    at::Tensor A, E, B, gA, gE, gB;
  };
  std::vector<copies> ref;
  for (const auto& a : attached.adapters()) {
    copies c{a.lora_A.clone(),         a.lora_E.clone(),         a.lora_B.clone(),
             at::zeros_like(a.lora_A), at::zeros_like(a.lora_E), at::zeros_like(a.lora_B)};
    reference.add_adapter(
        a.module, svd_adapter_views<float>{
                      lt::matrix_view_of<float>(c.A, "A"), lt::vector_view_of<float>(c.E, "E"),
                      lt::matrix_view_of<float>(c.B, "B"), lt::matrix_view_of<const float>(c.gA, "gA"),
                      lt::vector_view_of<const float>(c.gE, "gE"), lt::matrix_view_of<const float>(c.gB, "gB")});
    ref.push_back(c);
  }
  torch::optim::AdamW opt(w.parameters(), torch::optim::AdamWOptions(0.02).weight_decay(0.0));
  std::vector<at::Tensor> stale;  // old gradients kept alive (so their memory is not reused) and poisoned
  const auto x = at::randn({5, 6});
  std::size_t masks_compared = 0;
  for (std::int64_t t = 0; t < cfg.total_step; ++t) {
    loss_of(w, x).backward();
    opt.step();
    for (const auto& a : attached.adapters())
      for (const at::Tensor* p : {&a.lora_A, &a.lora_E, &a.lora_B}) {
        at::Tensor old = p->grad();
        p->mutable_grad() = old.clone();  // a new tensor at a new address
        old.fill_(1.0e3f);
        stale.push_back(old);
      }
    torch::NoGradGuard no_grad;
    for (std::size_t k = 0; k < ref.size(); ++k) {
      const auto& a = attached.adapters()[k];
      ref[k].A.copy_(a.lora_A);
      ref[k].E.copy_(a.lora_E);
      ref[k].B.copy_(a.lora_B);
      ref[k].gA.copy_(a.lora_A.grad());
      ref[k].gE.copy_(a.lora_E.grad());
      ref[k].gB.copy_(a.lora_B.grad());
    }
    const auto got = attached.step(t);
    const auto want = reference.step(t);
    REQUIRE(got.budget == want.budget);
    REQUIRE(got.masked == want.masked);
    if (got.masked) {
      ++masks_compared;
      for (const auto& a : attached.adapters()) {
        REQUIRE(attached_alloc.triplet_scores(a.module) == reference.triplet_scores(a.module));
        REQUIRE(attached_alloc.rank_pattern(a.module) == reference.rank_pattern(a.module));
      }
    }
    w.zero_grad(/*set_to_none=*/true);
  }
  REQUIRE(masks_compared > 10);
}

TEST_CASE("parameters whose storage moved are rebound too", "[libtorch][attach]") {
  torch::manual_seed(5);
  Wrapper w;
  nudge_lambdas(w, 0.5f);
  adalora_config cfg = small_config(12);
  cfg.tinit = 0;
  cfg.tfinal = 2;
  cfg.deltaT = 1;
  rank_allocator<eigen_backend> allocator(cfg);
  auto attached = lt::attach(allocator, w);
  const auto x = at::randn({4, 6});
  const at::Tensor& E = w.encoder->head->lora_E();
  for (std::int64_t t = 0; t < cfg.total_step; ++t) {
    loss_of(w, x).backward();
    // what module->to(device) does: the parameter keeps its identity, its storage is new
    const at::Tensor before = E.detach();
    E.set_data(E.detach().clone());
    REQUIRE(E.data_ptr() != before.data_ptr());
    const auto rep = attached.step(t);
    if (rep.masked) {
      const auto keep = allocator.rank_pattern("encoder.head");
      for (std::size_t i = 0; i < keep.size(); ++i) {
        const float now = E[static_cast<std::int64_t>(i)][0].item<float>();
        if (!keep[i]) REQUIRE(now == 0.0f);  // the mask went to the new storage
      }
      REQUIRE(at::equal(before, before));  // (kept alive until here)
    }
    w.zero_grad(true);
  }
  REQUIRE(allocator.ranks()[4] < 3);
}

// ---- SVDLinear -----------------------------------------------------------------------------------------------------

TEST_CASE("SVDLinear has PEFT's names, init, frozen base and scaling", "[libtorch][svd_linear]") {
  torch::manual_seed(7);
  SVDLinear plain(SVDLinearOptions(64, 48, 12).lora_alpha(16.0));
  const auto names = plain->named_parameters().keys();
  REQUIRE(names == std::vector<std::string>{"lora_A", "lora_E", "lora_B", "base_layer.weight", "base_layer.bias"});
  REQUIRE_FALSE(plain->base_layer->weight.requires_grad());
  REQUIRE_FALSE(plain->base_layer->bias.requires_grad());
  REQUIRE(plain->lora_A().requires_grad());
  REQUIRE(plain->lora_E().sizes() == at::IntArrayRef({12, 1}));
  REQUIRE(at::all(plain->lora_E() == 0).item<bool>());
  REQUIRE(plain->lora_A().std().item<double>() == Approx(0.02).epsilon(0.05));
  REQUIRE(plain->lora_B().std().item<double>() == Approx(0.02).epsilon(0.05));
  const auto x = at::randn({3, 64});
  REQUIRE(at::equal(plain->forward(x), plain->base_layer->forward(x)));  // a new adapter changes nothing

  SVDLinear named(SVDLinearOptions(4, 3, 2).adapter_name("default").bias(false));
  REQUIRE(named->named_parameters().keys() ==
          std::vector<std::string>{"base_layer.weight", "lora_A.default", "lora_E.default", "lora_B.default"});

  // scaling α/(init_r + 1e-5), exactly svd_adapter's, fixed by init_r, α ≤ 0 meaning init_r
  for (const double alpha : {16.0, 1.0, 0.0, -2.0}) {
    for (const std::int64_t init_r : {0, 12}) {
      SVDLinear l(SVDLinearOptions(4, 3, 5).lora_alpha(alpha).init_r(init_r));
      adapter_options o;
      o.lora_alpha = alpha;
      o.init_r = static_cast<std::size_t>(init_r);
      REQUIRE(l->scaling() == svd_adapter<eigen_backend>(4, 3, 5, o).scaling());
      REQUIRE(l->scaling() == io::peft_adalora_scaling(alpha, static_cast<std::size_t>(init_r ? init_r : 5)));
    }
  }
  // wrapping an existing Linear shares its weight
  torch::nn::Linear base(torch::nn::LinearOptions(4, 3).bias(false));
  SVDLinear wrapped(base, small_config());
  REQUIRE(wrapped->base_layer->weight.data_ptr() == base->weight.data_ptr());
  REQUIRE(wrapped->rank() == 3);
  REQUIRE_FALSE(wrapped->options().bias());
  REQUIRE_THROWS_AS(SVDLinear(base, SVDLinearOptions(5, 3, 2)), shape_error);
  REQUIRE_THROWS_AS(SVDLinear(SVDLinearOptions(4, 3, 2).lora_dropout(1.0)), config_error);
  REQUIRE_THROWS_AS(SVDLinear(SVDLinearOptions(0, 3, 2)), shape_error);
}

TEST_CASE("SVDLinear's forward and backward equal svd_adapter's", "[libtorch][svd_linear]") {
  const std::size_t in = 24, out = 20, r = 6, batch = 9;
  for (const double alpha : {6.0, 32.0}) {
    INFO("lora_alpha " << alpha);
    adapter_options o;
    o.lora_alpha = alpha;
    o.seed = 11;
    svd_adapter<eigen_backend> lib(in, out, r, o);
    const auto A = normal_values(r * in, 1u, 0.3f), E = normal_values(r, 2u), B = normal_values(out * r, 3u, 0.3f);
    const auto W = normal_values(out * in, 4u, 0.2f), bias = normal_values(out, 5u), x = normal_values(batch * in, 6u);
    const auto dy = normal_values(batch * out, 7u);
    lib.load(A, E, B);

    // the library: y = x Wᵀ + b + adapter, dx = dy W + adapter's part
    std::vector<float> y(batch * out), dx(batch * in, 0.0f);
    eigen_backend be;
    be.gemm(transpose::no, transpose::yes, batch, out, in, 1.0f, x.data(), in, W.data(), in, 0.0f, y.data(), out);
    for (std::size_t b = 0; b < batch; ++b)
      for (std::size_t j = 0; j < out; ++j) y[b * out + j] += bias[j];
    be.gemm(transpose::no, transpose::no, batch, in, out, 1.0f, dy.data(), out, W.data(), in, 0.0f, dx.data(), in);
    lib.zero_grad();
    lib.forward(make_matrix_view(static_cast<const float*>(x.data()), batch, in),
                make_matrix_view(y.data(), batch, out));
    lib.backward(make_matrix_view(static_cast<const float*>(dy.data()), batch, out),
                 make_matrix_view(dx.data(), batch, in));

    // the module, from the same values
    SVDLinear layer(SVDLinearOptions(std::int64_t(in), std::int64_t(out), std::int64_t(r)).lora_alpha(alpha));
    {
      torch::NoGradGuard no_grad;
      layer->base_layer->weight.copy_(from_values(W, {std::int64_t(out), std::int64_t(in)}));
      layer->base_layer->bias.copy_(from_values(bias, {std::int64_t(out)}));
      layer->lora_A().copy_(from_values(A, {std::int64_t(r), std::int64_t(in)}));
      layer->lora_E().copy_(from_values(E, {std::int64_t(r), 1}));
      layer->lora_B().copy_(from_values(B, {std::int64_t(out), std::int64_t(r)}));
    }
    const at::Tensor tx = from_values(x, {std::int64_t(batch), std::int64_t(in)}).requires_grad_(true);
    const at::Tensor ty = layer->forward(tx);
    ty.backward(from_values(dy, {std::int64_t(batch), std::int64_t(out)}));

    auto host = [&](float* p, std::size_t n) { return std::vector<float>(p, p + n); };
    CHECK(rel_diff(values_of(ty), y) < 1e-5);
    CHECK(rel_diff(values_of(layer->lora_A().grad()), host(lib.grad_A().data, r * in)) < 1e-5);
    CHECK(rel_diff(values_of(layer->lora_E().grad()), host(lib.grad_E().data, r)) < 1e-5);
    CHECK(rel_diff(values_of(layer->lora_B().grad()), host(lib.grad_B().data, out * r)) < 1e-5);
    CHECK(rel_diff(values_of(tx.grad()), dx) < 1e-5);
    // the base layer stays frozen
    CHECK_FALSE(layer->base_layer->weight.grad().defined());

    // leading dimensions: (3, 3, in) gives the rows of (9, in)
    const at::Tensor y3 = layer->forward(tx.detach().reshape({3, 3, std::int64_t(in)}));
    CHECK(rel_diff(values_of(y3), values_of(ty)) == 0.0);

    // ΔW, merge and unmerge
    const auto delta = lib.delta_weight();
    CHECK(rel_diff(values_of(layer->delta_weight()), delta) < 1e-5);
    const auto w_before = values_of(layer->base_layer->weight);
    layer->merge();
    CHECK(layer->merged());
    CHECK(rel_diff(values_of(layer->forward(tx.detach())), y) < 1e-5);
    REQUIRE_THROWS_AS(layer->merge(), usage_error);
    layer->unmerge();
    CHECK(rel_diff(values_of(layer->base_layer->weight), w_before) < 1e-6);
    REQUIRE_THROWS_AS(layer->unmerge(), usage_error);
  }
}

TEST_CASE("SVDLinear refuses to merge a broken adapter and keeps the weight", "[libtorch][svd_linear][errors]") {
  SVDLinear layer(SVDLinearOptions(3, 2, 2));
  {
    torch::NoGradGuard no_grad;
    layer->lora_E().fill_(1.0f);
    layer->lora_B()[0][0] = std::numeric_limits<float>::infinity();
  }
  const auto w = layer->base_layer->weight.clone();
  REQUIRE_THROWS_AS(layer->merge(), non_finite_error);
  REQUIRE(at::equal(w, layer->base_layer->weight));
  REQUIRE_FALSE(layer->merged());
}

TEST_CASE("SVDLinear's dropout reaches only the adapter branch, in training mode", "[libtorch][svd_linear]") {
  torch::manual_seed(8);
  SVDLinear layer(SVDLinearOptions(16, 8, 4).lora_dropout(0.5));
  const auto x = at::randn({32, 16});
  // λ = 0: the adapter adds nothing, dropout or not
  REQUIRE(at::equal(layer->forward(x), layer->base_layer->forward(x)));
  {
    torch::NoGradGuard no_grad;
    layer->lora_E().fill_(1.0f);
  }
  SVDLinear no_dropout(SVDLinearOptions(16, 8, 4));
  {
    torch::NoGradGuard no_grad;
    for (const auto& p : layer->named_parameters()) no_dropout->named_parameters()[p.key()].copy_(p.value());
  }
  const auto train_out = layer->forward(x);
  REQUIRE_FALSE(at::allclose(train_out, no_dropout->forward(x)));
  layer->eval();
  REQUIRE(at::allclose(layer->forward(x), no_dropout->forward(x)));
}

TEST_CASE("SVDLinear matches the PEFT layer traces", "[libtorch][svd_linear][trace]") {
  // layer-basic: 12 adapters of several shapes and lora_alpha; layer-edge: 1 × 1 and vector shapes, lora_alpha 0
  for (const char* trace : {"layer-basic.safetensors", "layer-edge.safetensors"}) {
    INFO(trace);
    const auto file = io::safetensors_file::open(std::filesystem::path(ADALORA_TRACES_DIR) / trace);
    const auto cases = validate::detail::parse_metadata_json(file, "cases");
    REQUIRE(cases.size() >= 4);
    std::size_t checked = 0;
    for (const auto& c : cases) {
      const auto id = std::to_string(c.at("case").get<long long>());
      INFO("case " << id);
      const auto in = c.at("d_in").get<std::int64_t>(), out = c.at("d_out").get<std::int64_t>();
      const auto r = c.at("r").get<std::int64_t>(), batch = c.at("batch").get<std::int64_t>();
      auto read = [&](const std::string& key, at::IntArrayRef shape) {
        return from_values(file.read_f32(id + "/" + key), shape);
      };
      SVDLinear layer(SVDLinearOptions(in, out, r).lora_alpha(c.at("alpha").get<double>()).bias(false));
      {
        torch::NoGradGuard no_grad;
        layer->base_layer->weight.copy_(read("W", {out, in}));
        layer->lora_A().copy_(read("A", {r, in}));
        layer->lora_E().copy_(read("E", {r, 1}));
        layer->lora_B().copy_(read("B", {out, r}));
      }
      const at::Tensor x = read("x", {batch, in}).requires_grad_(true);
      const at::Tensor y = layer->forward(x);
      y.backward(read("dy", {batch, out}));
      auto check = [&](const std::string& key, const at::Tensor& got) {
        const auto why = validate::detail::compare_tensor(file.read_f32(id + "/" + key), values_of(got), 1e-4);
        INFO(key << why);
        CHECK(why.empty());
      };
      check("y", y);
      check("grad/A", layer->lora_A().grad());
      check("grad/E", layer->lora_E().grad());
      check("grad/B", layer->lora_B().grad());
      check("grad/x", x.grad());
      // the regularizer of this adapter alone, γ = 1: (‖AAᵀ − I‖ + ‖BᵀB − I‖) / 2
      layer->zero_grad(true);
      const at::Tensor R = layer->orthogonal_penalty() / 2.0;
      R.backward();
      check("orth/R", R);
      check("orth/grad/A", layer->lora_A().grad());
      check("orth/grad/B", layer->lora_B().grad());
      ++checked;
    }
    REQUIRE(checked == cases.size());
  }
}

// ---- the regularizer -----------------------------------------------------------------------------------------------

TEST_CASE("the differentiable regularizer equals the library's value and gradient", "[libtorch][regularizer]") {
  for (const auto form : {orth_reg_form::peft, orth_reg_form::paper_squared}) {
    INFO("form " << int(form));
    torch::manual_seed(9);
    Wrapper w;
    {
      torch::NoGradGuard no_grad;
      for (auto& p : w.named_parameters()) p.value().mul_(10.0);  // well away from orthogonal
    }
    const auto adapters = lt::find_adapters(w);
    const double gamma = 0.3;
    const at::Tensor R = lt::orthogonal_regularization(adapters, gamma, form);
    R.backward();

    eigen_backend be;
    std::vector<std::vector<float>> A, B, gA, gB;
    std::vector<orthogonal_views<host_space>> views;
    for (const auto& a : adapters) {
      A.push_back(values_of(a.lora_A));
      B.push_back(values_of(a.lora_B));
      gA.emplace_back(A.back().size(), 0.0f);
      gB.emplace_back(B.back().size(), 0.0f);
    }
    for (std::size_t k = 0; k < adapters.size(); ++k) {
      const auto r = std::size_t(adapters[k].lora_A.size(0)), in = std::size_t(adapters[k].lora_A.size(1));
      const auto out = std::size_t(adapters[k].lora_B.size(0));
      views.push_back({make_matrix_view(static_cast<const float*>(A[k].data()), r, in),
                       make_matrix_view(static_cast<const float*>(B[k].data()), out, r),
                       make_matrix_view(gA[k].data(), r, in), make_matrix_view(gB[k].data(), out, r)});
    }
    const double expected =
        orthogonal_regularization(be, std::span<const orthogonal_views<host_space>>(views), gamma, form);
    CHECK(R.item<double>() == Approx(expected).epsilon(1e-5));
    for (std::size_t k = 0; k < adapters.size(); ++k) {
      CHECK(rel_diff(values_of(adapters[k].lora_A.grad()), gA[k]) < 1e-5);
      CHECK(rel_diff(values_of(adapters[k].lora_B.grad()), gB[k]) < 1e-5);
    }
  }
  // at QQᵀ = I exactly the gradient is 0, not NaN
  at::Tensor q = at::tensor({1.0f, 0.0f, 0.0f}).reshape({1, 3}).requires_grad_(true);
  at::Tensor p = at::tensor({0.0f, 1.0f}).reshape({2, 1}).requires_grad_(true);
  const at::Tensor zero = lt::orthogonal_penalty(q, p);
  zero.backward();
  REQUIRE(zero.item<float>() == 0.0f);
  REQUIRE(at::all(q.grad() == 0).item<bool>());
  REQUIRE(at::all(p.grad() == 0).item<bool>());
  REQUIRE_THROWS_AS(lt::orthogonal_regularization(std::span<const lt::adapter_tensors>(), -1.0), config_error);
  REQUIRE(lt::orthogonal_regularization(std::span<const lt::adapter_tensors>(), 0.5).item<float>() == 0.0f);
}

// ---- the PEFT export -----------------------------------------------------------------------------------------------

TEST_CASE("the attached adapters export in PEFT's format with the allocator's ranks", "[libtorch][peft]") {
  torch::manual_seed(10);
  Wrapper w;
  nudge_lambdas(w);
  const adalora_config cfg = small_config();
  rank_allocator<eigen_backend> allocator(cfg);
  auto attached = lt::attach(allocator, w);
  const auto x = at::randn({4, 6});
  for (std::int64_t t = 0; t < cfg.total_step; ++t) {
    loss_of(w, x).backward();
    attached.step(t);
    w.zero_grad(true);
  }
  const auto dir = std::filesystem::temp_directory_path() / "adalora_test_libtorch_export";
  std::filesystem::remove_all(dir);
  lt::write_peft_adalora(dir, attached);
  const auto back = io::read_peft_adalora(dir);
  REQUIRE(back.modules.size() == 5);
  for (const auto& m : back.modules) {
    INFO(m.name);
    const auto k = allocator.adapter_index(m.name);
    REQUIRE(std::int64_t(m.rank()) == allocator.ranks()[k]);
    // the kept rows of lora_A, in order
    const auto keep = allocator.rank_pattern(m.name);
    const auto A = values_of(attached.adapters()[k].lora_A);
    std::size_t row = 0;
    for (std::size_t i = 0; i < keep.size(); ++i)
      if (keep[i]) {
        REQUIRE(std::equal(m.A.begin() + std::ptrdiff_t(row * 6), m.A.begin() + std::ptrdiff_t((row + 1) * 6),
                           A.begin() + std::ptrdiff_t(i * 6)));
        ++row;
      }
    REQUIRE(m.scaling);
    REQUIRE(*m.scaling == w.encoder->head->scaling());
  }
  // an SVDLinear as a module keeps its init_r and scaling
  const auto m = lt::to_peft_module("head", *w.encoder->head, allocator.rank_pattern("encoder.head"));
  REQUIRE(m.init_r == 3);
  REQUIRE(m.scaling == w.encoder->head->scaling());
  std::filesystem::remove_all(dir);

  // modules whose scaling the config would not rebuild (lora_alpha 8 in the modules, 3 in the config): refused,
  // nothing written
  Wrapper other("", 8.0);
  rank_allocator<eigen_backend> other_allocator(cfg);
  auto other_attached = lt::attach(other_allocator, other);
  REQUIRE(other_attached.adapters()[0].scaling == other.encoder->head->scaling());
  require_throws<config_error>([&] { lt::write_peft_adalora(dir, other_attached); }, "has scaling 2.666");
  REQUIRE_FALSE(std::filesystem::exists(dir));
}

// ---- the same training through the library's adapters and through SVDLinear -----------------------------------------

TEST_CASE("training SVDLinear with libtorch reaches the masks the library's adapters reach", "[libtorch][masks]") {
  // Three adapted maps y_j = x_j W_jᵀ + adapter_j(x_j) towards targets with planted low-rank changes of ranks 3, 1, 0;
  // loss Σ_j mean((y_j − t_j)²) + γ R (σ 1.5, 1.2, 0.9 for the first, 0.3 for the second). Run once with
  // svd_adapter<eigen_backend>, the library's regularizer and AdamW, and once with SVDLinear, torch's autograd, the
  // differentiable regularizer and torch's AdamW, from the same seeds (the same initial adapters, data and targets).
  // Every mask step must keep the same singular values.
  constexpr std::size_t n = 3, in = 12, out = 10, batch = 32;
  adalora_config cfg;
  cfg.init_r = 4;
  cfg.target_r = 1;
  cfg.tinit = 20;
  cfg.tfinal = 20;
  cfg.deltaT = 5;
  cfg.total_step = 120;
  cfg.lora_alpha = 4.0;
  cfg.orth_reg_weight = 0.1;
  const std::size_t r = std::size_t(cfg.init_r);
  const std::vector<std::vector<float>> planted{{1.5f, 1.2f, 0.9f}, {0.3f}, {}};  // σ of each rank-one change
  const float lr = 0.01f;

  std::vector<std::vector<float>> W, X, T;
  std::mt19937 rng(2024);
  for (std::size_t j = 0; j < n; ++j) {
    W.push_back(normal_values(out * in, rng, 0.3f));
    X.push_back(normal_values(batch * in, rng));
    std::vector<float> target_w = W.back();
    for (const float sigma : planted[j]) {
      const auto u = normal_values(out, rng, 1.0f / std::sqrt(float(out))),
                 v = normal_values(in, rng, 1.0f / std::sqrt(float(in)));
      for (std::size_t o = 0; o < out; ++o)
        for (std::size_t i = 0; i < in; ++i) target_w[o * in + i] += sigma * u[o] * v[i];
    }
    std::vector<float> t(batch * out, 0.0f);
    eigen_backend().gemm(transpose::no, transpose::yes, batch, out, in, 1.0f, X.back().data(), in, target_w.data(), in,
                         0.0f, t.data(), out);
    // noise: no residual is exactly zero (else Adam turns the two pipelines' different roundings into steps)
    const auto noise = normal_values(t.size(), rng, 0.05f);
    for (std::size_t i = 0; i < t.size(); ++i) t[i] += noise[i];
    T.push_back(t);
  }

  // ---- the library's adapters ----
  std::vector<svd_adapter<eigen_backend>> lib;
  for (std::size_t j = 0; j < n; ++j) lib.push_back(svd_adapter<eigen_backend>::from_config(in, out, cfg, 100 + j));
  // the same initial values in the modules (λ = 0 and P, Q from the library's seeds)
  std::vector<SVDLinear> mods;
  for (std::size_t j = 0; j < n; ++j) {
    SVDLinear m(torch::nn::Linear(torch::nn::LinearOptions(std::int64_t(in), std::int64_t(out)).bias(false)), cfg);
    torch::NoGradGuard no_grad;
    m->base_layer->weight.copy_(from_values(W[j], {std::int64_t(out), std::int64_t(in)}));
    m->lora_A().copy_(from_values(std::vector<float>(lib[j].lora_A().data, lib[j].lora_A().data + r * in),
                                  {std::int64_t(r), std::int64_t(in)}));
    m->lora_B().copy_(from_values(std::vector<float>(lib[j].lora_B().data, lib[j].lora_B().data + out * r),
                                  {std::int64_t(out), std::int64_t(r)}));
    REQUIRE(at::all(m->lora_E() == 0).item<bool>());
    mods.push_back(m);
  }
  rank_allocator<eigen_backend> lib_alloc(cfg), torch_alloc(cfg);
  std::vector<parameter_span> spans;
  for (std::size_t j = 0; j < n; ++j) {
    lib_alloc.add_adapter("m" + std::to_string(j), lib[j].allocator_views());
    for (const auto& p : lib[j].parameters()) spans.push_back(p);
  }
  adamw_options ao;
  ao.lr = lr;
  ao.weight_decay = 0.0;
  adamw<eigen_backend> lib_opt(spans, ao);

  torch::nn::Module model;
  for (std::size_t j = 0; j < n; ++j) model.register_module("m" + std::to_string(j), mods[j]);
  auto attached = lt::attach(torch_alloc, model);
  torch::optim::AdamW torch_opt(model.parameters(), torch::optim::AdamWOptions(lr).weight_decay(0.0));

  std::size_t compared = 0;
  double worst_lambda = 0.0;
  eigen_backend be;
  for (std::int64_t t = 0; t < cfg.total_step; ++t) {
    // library: forward, dy = 2 (y − t) / (batch · out), backward, regularizer gradient, AdamW, allocator
    for (auto& a : lib) a.zero_grad();
    for (std::size_t j = 0; j < n; ++j) {
      std::vector<float> y(batch * out);
      be.gemm(transpose::no, transpose::yes, batch, out, in, 1.0f, X[j].data(), in, W[j].data(), in, 0.0f, y.data(),
              out);
      lib[j].forward(make_matrix_view(static_cast<const float*>(X[j].data()), batch, in),
                     make_matrix_view(y.data(), batch, out));
      for (std::size_t i = 0; i < y.size(); ++i) y[i] = 2.0f * (y[i] - T[j][i]) / float(batch * out);
      lib[j].backward(make_matrix_view(static_cast<const float*>(y.data()), batch, out));
    }
    std::vector<svd_adapter<eigen_backend>*> ptrs;
    for (auto& a : lib) ptrs.push_back(&a);
    orthogonal_regularization(std::span<svd_adapter<eigen_backend>* const>(ptrs), cfg.orth_reg_weight);
    lib_opt.step();
    const auto lib_rep = lib_alloc.step(t);

    // torch: the same loss through autograd
    at::Tensor loss = lt::orthogonal_regularization(attached);
    for (std::size_t j = 0; j < n; ++j) {
      const auto y = mods[j]->forward(from_values(X[j], {std::int64_t(batch), std::int64_t(in)}));
      loss = loss + (y - from_values(T[j], {std::int64_t(batch), std::int64_t(out)})).square().mean();
    }
    loss.backward();
    torch_opt.step();
    const auto torch_rep = attached.step(t);
    model.zero_grad(true);

    REQUIRE(torch_rep.budget == lib_rep.budget);
    REQUIRE(torch_rep.masked == lib_rep.masked);
    if (lib_rep.masked) {
      ++compared;
      for (std::size_t j = 0; j < n; ++j) {
        const auto name = "m" + std::to_string(j);
        INFO("step " << t << ", adapter " << name);
        REQUIRE(torch_alloc.rank_pattern(name) == lib_alloc.rank_pattern(name));
      }
    }
    for (std::size_t j = 0; j < n; ++j) {
      const auto E = lib[j].lora_E();
      worst_lambda =
          std::max(worst_lambda, rel_diff(values_of(mods[j]->lora_E()), std::vector<float>(E.data, E.data + r)));
    }
  }
  REQUIRE(compared >= 15);
  // the final budget of 3 goes to the three strongest planted directions
  REQUIRE(torch_alloc.ranks() == std::vector<std::int64_t>{3, 0, 0});
  // (6.5e-4 here: Adam's normalised steps carry the pipelines' rounding differences along)
  INFO("largest relative difference of λ over the run: " << worst_lambda);
  CHECK(worst_lambda < 1e-2);
}
