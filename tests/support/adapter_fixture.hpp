// Test fixture: random adapters held on the host and mirrored into a backend's memory, with their views.
#pragma once

#include <cstddef>
#include <random>
#include <string>
#include <vector>

#include "adalora/adapters/svd_adapter_views.hpp"
#include "adalora/backends/backend.hpp"
#include "adalora/reference/allocator_reference.hpp"

namespace adalora::testing {

struct adapter_shape {
  std::size_t r, in, out;
};

/// Host tensors (the truth the reference sees) and backend copies (what the allocator sees) of several adapters.
template <Backend B>
class adapter_fixture {
public:
  using tensors = reference::adapter_tensors;

  adapter_fixture(B backend, const std::vector<adapter_shape>& shapes, unsigned seed)
      : backend_(std::move(backend)), rng_(seed) {
    for (const auto& s : shapes) {
      host.emplace_back(s.r, s.in, s.out);
      device_.push_back(mirror{backend_.template allocate<float>(s.r * s.in), backend_.template allocate<float>(s.r),
                               backend_.template allocate<float>(s.out * s.r),
                               backend_.template allocate<float>(s.r * s.in), backend_.template allocate<float>(s.r),
                               backend_.template allocate<float>(s.out * s.r)});
    }
    for (auto& h : host) {
      fill(h.A, 1.0f);
      fill(h.E, 1.0f);
      fill(h.B, 1.0f);
    }
  }

  std::size_t size() const { return host.size(); }
  std::string name(std::size_t k) const { return "layers." + std::to_string(k / 3) + "." + "qvf"[k % 3]; }

  svd_adapter_views<float, typename B::memory_space> views(std::size_t k) {
    auto& d = device_[k];
    const auto& h = host[k];
    using S = typename B::memory_space;
    return {make_matrix_view<S>(d.pA.data(), h.r, h.in),      make_vector_view<S>(d.pE.data(), h.r),
            make_matrix_view<S>(d.pB.data(), h.out, h.r),     make_matrix_view<S>(cptr(d.gA), h.r, h.in),
            make_vector_view<S>(cptr(d.gE), h.r),            make_matrix_view<S>(cptr(d.gB), h.out, h.r)};
  }

  /// A pretend optimizer step: parameters move a little (pruned λ regrow), gradients are fresh.
  void perturb(float param_scale = 0.05f, float grad_scale = 1.0f) {
    for (auto& h : host) {
      add_noise(h.A, param_scale);
      add_noise(h.E, param_scale);
      add_noise(h.B, param_scale);
      fill(h.grad_A, grad_scale);
      fill(h.grad_E, grad_scale);
      fill(h.grad_B, grad_scale);
    }
  }

  void upload() {
    for (std::size_t k = 0; k < host.size(); ++k) {
      auto& d = device_[k];
      auto& h = host[k];
      put(h.A, d.pA);
      put(h.E, d.pE);
      put(h.B, d.pB);
      put(h.grad_A, d.gA);
      put(h.grad_E, d.gE);
      put(h.grad_B, d.gB);
    }
  }

  /// λ of adapter k as the backend holds it.
  std::vector<float> lambda(std::size_t k) {
    std::vector<float> out(host[k].r);
    backend_.copy_to_host(device_[k].pE.data(), out.size(), out.data());
    return out;
  }

  /// Writes one value of the backend's copy of tensor `which` ("A","E","B","gA","gE","gB") of adapter k.
  void poke(std::size_t k, const std::string& which, std::size_t i, float v) {
    auto& d = device_[k];
    auto& buf = which == "A" ? d.pA : which == "E" ? d.pE : which == "B" ? d.pB : which == "gA" ? d.gA
                                                                         : which == "gE" ? d.gE : d.gB;
    backend_.copy_from_host(&v, 1, buf.data() + i);
  }

  std::vector<tensors> host;

private:
  using buf = buffer_t<B, float>;
  struct mirror {
    buf pA, pE, pB, gA, gE, gB;
  };
  static const float* cptr(buf& b) { return b.data(); }
  void fill(std::vector<float>& v, float scale) {
    std::normal_distribution<float> n(0.0f, scale);
    for (auto& x : v) x = n(rng_);
  }
  void add_noise(std::vector<float>& v, float scale) {
    std::normal_distribution<float> n(0.0f, scale);
    for (auto& x : v) x += n(rng_);
  }
  void put(const std::vector<float>& h, buf& d) { backend_.copy_from_host(h.data(), h.size(), d.data()); }

  B backend_;
  std::mt19937 rng_;
  std::vector<mirror> device_;
};

}  // namespace adalora::testing
