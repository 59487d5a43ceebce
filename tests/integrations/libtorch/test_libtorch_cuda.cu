// attach() on CUDA tensors with the CUDA backend (nvcc; needs a GPU to run). Debian's libtorch has no CUDA, so the
// tensors are made with at::for_blob over cudaMalloc'ed memory and a CUDA device: enough for what the integration
// reads (dtype, device, shape, data pointer, .grad()), with no CUDA kernel of torch's. Only tensor_views.hpp and
// attach.hpp are included: with torch 1.13, torch/nn (SVDLinear) does not compile under nvcc in C++20.
#include <catch2/catch.hpp>

#include <ATen/core/Tensor.h>
#include <ATen/ops/from_blob.h>
#include <cuda_runtime.h>

#include <random>
#include <string>
#include <utility>
#include <vector>

#include "adalora/allocation/rank_allocator.hpp"
#include "adalora/backends/cuda/cuda_backend.cuh"
#include "adalora/backends/eigen/eigen_backend.hpp"
#include "adalora/integrations/libtorch/attach.hpp"
#include "adalora/integrations/libtorch/tensor_views.hpp"
#include "integrations/libtorch/require_throws.hpp"
#include "support/random_values.hpp"

using namespace adalora;
namespace lt = adalora::libtorch;

namespace {

/// A float32 CUDA tensor (device `index`) over new device memory holding `values`, freed with the tensor.
at::Tensor device_tensor(const std::vector<float>& values, std::vector<std::int64_t> shape, int index = 0) {
  void* p = nullptr;
  detail::cuda_check(cudaMalloc(&p, values.size() * sizeof(float) + 1), "cudaMalloc");
  detail::cuda_check(cudaMemcpy(p, values.data(), values.size() * sizeof(float), cudaMemcpyHostToDevice), "cudaMemcpy");
  const c10::Device device(c10::DeviceType::CUDA, static_cast<c10::DeviceIndex>(index));
  return at::for_blob(p, shape)
      .deleter([](void* q) { cudaFree(q); })
      .options(at::TensorOptions().dtype(at::kFloat).device(device))
      .target_device(device)
      .make_tensor();
}

std::vector<float> host_values(const at::Tensor& t) {
  std::vector<float> v(static_cast<std::size_t>(t.numel()));
  detail::cuda_check(cudaMemcpy(v.data(), t.data_ptr(), v.size() * sizeof(float), cudaMemcpyDeviceToHost),
                     "cudaMemcpy");
  return v;
}

struct host_adapter {
  std::vector<float> A, E, B, gA, gE, gB;
};

adalora_config config() {
  adalora_config c;
  c.init_r = 4;
  c.target_r = 2;
  c.tinit = 1;
  c.tfinal = 3;
  c.deltaT = 1;
  c.total_step = 12;
  return c;
}

/// Three adapters (r 4) of random values as device parameters with device gradients, named layers.<k>.q.
struct device_model {
  std::vector<std::pair<std::string, at::Tensor>> params;
  std::vector<host_adapter> host;

  explicit device_model(unsigned seed) {
    std::mt19937 rng(seed);
    for (int k = 0; k < 3; ++k) {
      const std::int64_t r = 4, in = 6 + k, out = 5;
      host_adapter h{
          testing::normal_values(std::size_t(r * in), rng),  testing::normal_values(std::size_t(r), rng),
          testing::normal_values(std::size_t(out * r), rng), testing::normal_values(std::size_t(r * in), rng),
          testing::normal_values(std::size_t(r), rng),       testing::normal_values(std::size_t(out * r), rng)};
      const std::string path = "layers." + std::to_string(k) + ".q";
      auto param = [&](const std::vector<float>& v, const std::vector<float>& g, std::vector<std::int64_t> shape) {
        at::Tensor t = device_tensor(v, shape);
        t.set_requires_grad(true);
        t.mutable_grad() = device_tensor(g, shape);
        return t;
      };
      params.emplace_back(path + ".lora_A", param(h.A, h.gA, {r, in}));
      params.emplace_back(path + ".lora_E", param(h.E, h.gE, {r, 1}));
      params.emplace_back(path + ".lora_B", param(h.B, h.gB, {out, r}));
      host.push_back(std::move(h));
    }
  }
};

}  // namespace

TEST_CASE("attach() drives the CUDA backend on CUDA tensors as the host backend on host copies", "[libtorch][cuda]") {
  device_model model(1);
  rank_allocator<cuda_backend> device_alloc(config());
  auto attached = lt::attach(device_alloc, model.params);
  REQUIRE(device_alloc.adapter_count() == 3);
  REQUIRE(attached.device() == c10::Device(c10::DeviceType::CUDA, 0));

  rank_allocator<eigen_backend> host_alloc(config());
  for (std::size_t k = 0; k < 3; ++k) {
    auto& h = model.host[k];
    const std::size_t r = 4, in = 6 + k, out = 5;
    host_alloc.add_adapter(
        "layers." + std::to_string(k) + ".q",
        {make_matrix_view(h.A.data(), r, in), make_vector_view(h.E.data(), r), make_matrix_view(h.B.data(), out, r),
         make_matrix_view<host_space, const float>(h.gA.data(), r, in),
         make_vector_view<host_space, const float>(h.gE.data(), r),
         make_matrix_view<host_space, const float>(h.gB.data(), out, r)});
  }
  std::mt19937 rng(7);
  for (std::int64_t t = 0; t < 12; ++t) {
    // fresh gradients, as new tensors (what zero_grad(set_to_none) and the next backward do)
    for (std::size_t k = 0; k < 3; ++k) {
      auto& h = model.host[k];
      h.gA = testing::normal_values(h.gA.size(), rng);
      h.gE = testing::normal_values(h.gE.size(), rng);
      h.gB = testing::normal_values(h.gB.size(), rng);
      auto& [nA, A] = model.params[3 * k];
      auto& [nE, E] = model.params[3 * k + 1];
      auto& [nB, B] = model.params[3 * k + 2];
      A.mutable_grad() = device_tensor(h.gA, A.sizes().vec());
      E.mutable_grad() = device_tensor(h.gE, E.sizes().vec());
      B.mutable_grad() = device_tensor(h.gB, B.sizes().vec());
    }
    const auto d = attached.step(t);
    const auto e = host_alloc.step(t);
    REQUIRE(d.budget == e.budget);
    for (std::size_t k = 0; k < 3; ++k) {
      const auto name = "layers." + std::to_string(k) + ".q";
      REQUIRE(device_alloc.rank_pattern(name) == host_alloc.rank_pattern(name));
      REQUIRE(host_values(model.params[3 * k + 1].second) == model.host[k].E);  // the same λ, masked in place
    }
  }
}

TEST_CASE("attach() refuses host tensors, mixed devices and missing or zero device gradients",
          "[libtorch][cuda][errors]") {
  using adalora::testing::require_throws;
  SECTION("a host tensor for a device backend") {
    rank_allocator<cuda_backend> alloc(config());
    std::vector<float> host(12, 1.0f);
    const at::Tensor t = at::for_blob(host.data(), {3, 4}).options(at::TensorOptions().dtype(at::kFloat)).make_tensor();
    std::vector<std::pair<std::string, at::Tensor>> params{{"m.lora_A", t}, {"m.lora_E", t}, {"m.lora_B", t}};
    require_throws<usage_error>([&] { (void)lt::attach(alloc, params); }, "backend reads cuda_device memory");
    REQUIRE(alloc.adapter_count() == 0);
  }
  SECTION("two devices") {
    device_model model(2);
    at::Tensor& B = model.params[8].second;
    at::Tensor elsewhere =
        at::for_blob(B.data_ptr(), B.sizes())
            .options(at::TensorOptions().dtype(at::kFloat).device(c10::Device(c10::DeviceType::CUDA, 1)))
            .target_device(c10::Device(c10::DeviceType::CUDA, 1))
            .make_tensor();
    elsewhere.set_requires_grad(true);
    model.params[8].second = elsewhere;
    rank_allocator<cuda_backend> alloc(config());
    require_throws<usage_error>([&] { (void)lt::attach(alloc, model.params); },
                                "module 'layers.2.q': lora_B is on cuda:1 but the first adapter's parameters are on "
                                "cuda:0");
    REQUIRE(alloc.adapter_count() == 0);
  }
  SECTION("gradients missing or all zero") {
    device_model model(3);
    rank_allocator<cuda_backend> alloc(config());
    auto attached = lt::attach(alloc, model.params);
    model.params[4].second.mutable_grad() = at::Tensor();
    require_throws<missing_gradient_error>([&] { (void)attached.step(0); },
                                           "module 'layers.1.q': lora_E has no gradient");
    for (std::size_t i = 3; i < 6; ++i) {
      const at::Tensor& p = model.params[i].second;
      p.mutable_grad() = device_tensor(std::vector<float>(std::size_t(p.numel()), 0.0f), p.sizes().vec());
    }
    require_throws<missing_gradient_error>(
        [&] { (void)attached.step(0); },
        "module 'layers.1.q': the gradients of lora_A, lora_E and lora_B are all zero");
    REQUIRE_FALSE(alloc.last_step());
  }
}
