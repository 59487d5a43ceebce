// Runs the same allocator steps and adapter passes on two backends and reports how far apart they are.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <sstream>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "adalora/adapters/svd_adapter.hpp"
#include "adalora/allocation/rank_allocator.hpp"
#include "adalora/backends/backend.hpp"
#include "adalora/core/error.hpp"

namespace adalora::validate {

/// The largest absolute difference seen for one quantity, and that difference relative to the largest magnitude
/// of the quantity on the reference backend (so that values near zero do not inflate it).
struct quantity_difference {
  std::string quantity;
  double max_abs = 0.0;
  double max_rel = 0.0;
  double reference_scale = 0.0;
  std::size_t compared = 0;

  void add(double ref, double test) {
    const double d = std::fabs(ref - test);
    reference_scale = std::max(reference_scale, std::fabs(ref));
    max_abs = std::isnan(d) ? std::numeric_limits<double>::infinity() : std::max(max_abs, d);
    max_rel = max_abs == 0.0 ? 0.0 : max_abs / std::max(reference_scale, std::numeric_limits<double>::min());
    ++compared;
  }
};

/// What a comparison found: per quantity, and whether the discrete decisions (budgets, masks) agree exactly.
struct comparison_report {
  std::vector<quantity_difference> quantities;
  bool compares_masks = true;  ///< false for comparisons without discrete decisions (adapter passes)
  bool masks_agree = true;
  std::string first_disagreement;  ///< where budgets or masks first differed ("step 12, adapter x, λ[3]")

  quantity_difference& at(std::string_view name) {
    for (auto& q : quantities)
      if (q.quantity == name) return q;
    quantities.push_back({std::string(name)});
    return quantities.back();
  }
  const quantity_difference* find(std::string_view name) const {
    for (const auto& q : quantities)
      if (q.quantity == name) return &q;
    return nullptr;
  }
  void disagree(std::string where) {
    if (masks_agree) first_disagreement = std::move(where);
    masks_agree = false;
  }
  /// True when the masks agree and every quantity's largest relative difference is within rtol.
  bool within(double rtol) const {
    if (!masks_agree) return false;
    for (const auto& q : quantities)
      if (q.max_rel > rtol) return false;
    return true;
  }
  /// One line per quantity, then the masks' verdict (when the comparison has masks).
  std::string to_string() const {
    std::ostringstream s;
    s.precision(3);
    for (const auto& q : quantities)
      s << q.quantity << ": max abs " << std::scientific << q.max_abs << ", max rel " << q.max_rel << " over "
        << q.compared << " values\n";
    if (compares_masks)
      s << "masks and budgets: " << (masks_agree ? "agree" : "DIFFER at " + first_disagreement) << "\n";
    return s.str();
  }
};

/// Two allocators, one per backend, fed the same host inputs every step: the way to check a fast backend (CUDA)
/// against the CPU reference (Eigen) on your own model's adapters.
///
///   allocator_comparison<eigen_backend, cuda_backend> cmp(cfg, eigen_backend{}, cuda_backend{stream});
///   cmp.add_adapter("layers.0.q", r, in, out);                 // once per adapter
///   cmp.set_inputs("layers.0.q", A, E, B, gA, gE, gB);          // host copies, each step
///   cmp.step(t);                                                // runs both, compares scores, λ and masks
///   std::cout << cmp.report().to_string();
template <Backend Ref, Backend Test, ImportanceMetric M = sensitivity_uncertainty, BudgetSchedule S = cubic_schedule>
class allocator_comparison {
public:
  allocator_comparison(const adalora_config& config, Ref ref = Ref{}, Test test = Test{})
      : ref_(std::move(ref)), test_(std::move(test)), ref_alloc_(config, ref_), test_alloc_(config, test_) {}

  void add_adapter(std::string name, std::size_t r, std::size_t in, std::size_t out) {
    slots_.push_back(slot{name, r, in, out, mirror<Ref>(ref_, r, in, out), mirror<Test>(test_, r, in, out)});
    auto& s = slots_.back();
    ref_alloc_.add_adapter(name, s.ref.views(r, in, out));
    test_alloc_.add_adapter(std::move(name), s.test.views(r, in, out));
  }

  /// The step's parameters (after the optimizer update) and gradients of one adapter, in PEFT's layout.
  void set_inputs(std::string_view name, std::span<const float> A, std::span<const float> E,
                  std::span<const float> B, std::span<const float> gA, std::span<const float> gE,
                  std::span<const float> gB) {
    auto& s = find(name);
    if (A.size() != s.r * s.in || E.size() != s.r || B.size() != s.out * s.r || gA.size() != A.size() ||
        gE.size() != E.size() || gB.size() != B.size())
      throw shape_error("allocator_comparison::set_inputs('" + s.name + "'): sizes do not match r " +
                        std::to_string(s.r) + ", in " + std::to_string(s.in) + ", out " + std::to_string(s.out));
    s.ref.upload(ref_, A, E, B, gA, gE, gB);
    s.test.upload(test_, A, E, B, gA, gE, gB);
  }

  /// Runs step t on both backends and folds the differences into report().
  void step(std::int64_t t) {
    const auto a = ref_alloc_.step(t);
    const auto b = test_alloc_.step(t);
    const std::string at = "step " + std::to_string(t);
    if (a.budget != b.budget) report_.disagree(at + ": budget " + std::to_string(a.budget) + " vs " +
                                               std::to_string(b.budget));
    if (a.threshold.has_value() != b.threshold.has_value())
      report_.disagree(at + ": a threshold on one backend only");
    else if (a.threshold)
      report_.at("threshold").add(*a.threshold, *b.threshold);
    for (auto& s : slots_) {
      const auto sa = ref_alloc_.triplet_scores(s.name), sb = test_alloc_.triplet_scores(s.name);
      for (std::size_t i = 0; i < std::min(sa.size(), sb.size()); ++i) report_.at("triplet scores").add(sa[i], sb[i]);
      const auto la = s.ref.lambda(ref_, s.r), lb = s.test.lambda(test_, s.r);
      for (std::size_t i = 0; i < s.r; ++i) {
        report_.at("lambda").add(la[i], lb[i]);
        if ((la[i] == 0.0f) != (lb[i] == 0.0f))
          report_.disagree(at + ", adapter " + s.name + ", λ[" + std::to_string(i) + "] masked on one backend only");
      }
      if (ref_alloc_.rank_pattern(s.name) != test_alloc_.rank_pattern(s.name))
        report_.disagree(at + ", adapter " + s.name + ": rank patterns differ");
    }
  }

  const comparison_report& report() const noexcept { return report_; }

private:
  template <Backend B>
  struct mirror {
    buffer_t<B, float> A, E, Bm, gA, gE, gB;
    mirror(B& b, std::size_t r, std::size_t in, std::size_t out)
        : A(b.template allocate<float>(r * in)),
          E(b.template allocate<float>(r)),
          Bm(b.template allocate<float>(out * r)),
          gA(b.template allocate<float>(r * in)),
          gE(b.template allocate<float>(r)),
          gB(b.template allocate<float>(out * r)) {}
    svd_adapter_views<float, typename B::memory_space> views(std::size_t r, std::size_t in, std::size_t out) {
      using S2 = typename B::memory_space;
      return {make_matrix_view<S2>(A.data(), r, in),
              make_vector_view<S2>(E.data(), r),
              make_matrix_view<S2>(Bm.data(), out, r),
              make_matrix_view<S2>(static_cast<const float*>(gA.data()), r, in),
              make_vector_view<S2>(static_cast<const float*>(gE.data()), r),
              make_matrix_view<S2>(static_cast<const float*>(gB.data()), out, r)};
    }
    void upload(B& b, std::span<const float> a, std::span<const float> e, std::span<const float> bm,
                std::span<const float> ga, std::span<const float> ge, std::span<const float> gb) {
      b.copy_from_host(a.data(), a.size(), A.data());
      b.copy_from_host(e.data(), e.size(), E.data());
      b.copy_from_host(bm.data(), bm.size(), Bm.data());
      b.copy_from_host(ga.data(), ga.size(), gA.data());
      b.copy_from_host(ge.data(), ge.size(), gE.data());
      b.copy_from_host(gb.data(), gb.size(), gB.data());
    }
    std::vector<float> lambda(B& b, std::size_t r) {
      std::vector<float> h(r);
      b.copy_to_host(E.data(), r, h.data());
      return h;
    }
  };
  struct slot {
    std::string name;
    std::size_t r, in, out;
    mirror<Ref> ref;
    mirror<Test> test;
  };
  slot& find(std::string_view name) {
    for (auto& s : slots_)
      if (s.name == name) return s;
    throw usage_error("allocator_comparison: no adapter named '" + std::string(name) + "'");
  }

  Ref ref_;
  Test test_;
  rank_allocator<Ref, M, S> ref_alloc_;
  rank_allocator<Test, M, S> test_alloc_;
  std::vector<slot> slots_;
  comparison_report report_;
};

/// Runs one SVD adapter's forward and backward on two backends from the same host inputs and reports the
/// differences of y, ∂A, ∂λ, ∂B and ∂x.
template <Backend Ref, Backend Test>
comparison_report compare_adapter_passes(std::size_t in, std::size_t out, std::size_t r, float lora_alpha,
                                         const std::vector<float>& A, const std::vector<float>& E,
                                         const std::vector<float>& B, const std::vector<float>& x,
                                         const std::vector<float>& dy, Ref ref = Ref{}, Test test = Test{}) {
  const std::size_t batch = in ? x.size() / in : 0;
  if (x.size() != batch * in || dy.size() != batch * out)
    throw shape_error("compare_adapter_passes: x must be (batch, in) and dy (batch, out)");
  auto run = [&](auto backend) {
    using BK = decltype(backend);
    using S2 = typename BK::memory_space;
    adapter_options o;
    o.lora_alpha = lora_alpha;
    svd_adapter<BK> layer(in, out, r, o, backend);
    layer.load(A, E, B);
    auto put = [&](const std::vector<float>& h) {
      auto d = backend.template allocate<float>(h.size());
      backend.copy_from_host(h.data(), h.size(), d.data());
      return d;
    };
    auto get = [&](const float* p, std::size_t n) {
      std::vector<float> h(n);
      backend.copy_to_host(p, n, h.data());
      return h;
    };
    auto xd = put(x), dyd = put(dy);
    auto y = backend.template allocate<float>(batch * out), dx = backend.template allocate<float>(batch * in);
    layer.forward(make_matrix_view<S2>(static_cast<const float*>(xd.data()), batch, in),
                  make_matrix_view<S2>(y.data(), batch, out));
    layer.backward(make_matrix_view<S2>(static_cast<const float*>(dyd.data()), batch, out),
                   make_matrix_view<S2>(dx.data(), batch, in));
    return std::vector<std::vector<float>>{get(y.data(), batch * out), get(layer.grad_A().data, r * in),
                                           get(layer.grad_E().data, r), get(layer.grad_B().data, out * r),
                                           get(dx.data(), batch * in)};
  };
  const auto a = run(std::move(ref)), b = run(std::move(test));
  comparison_report rep;
  rep.compares_masks = false;
  const char* names[] = {"y", "grad_A", "grad_E", "grad_B", "grad_x"};
  for (std::size_t q = 0; q < a.size(); ++q) {
    auto& d = rep.at(names[q]);
    for (std::size_t i = 0; i < a[q].size(); ++i) d.add(a[q][i], b[q][i]);
  }
  return rep;
}

}  // namespace adalora::validate
