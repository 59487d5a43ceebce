// The owning low-rank adapter both layers share: parameters, gradients, forward/backward, merge/unmerge.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "adalora/adapters/adapter_concept.hpp"
#include "adalora/adapters/detail/adapter_kernels.hpp"
#include "adalora/adapters/detail/low_rank_math.hpp"
#include "adalora/backends/backend.hpp"
#include "adalora/core/checked_size.hpp"
#include "adalora/core/error.hpp"
#include "adalora/core/view.hpp"

namespace adalora::detail {

/// y += s·((drop(x) Aᵀ) ⊙ λ) Bᵀ with A (r × in), B (out × r) and, when `HasLambda`, λ (r).
template <Backend B, bool HasLambda>
class low_rank_adapter {
public:
  using memory_space = typename B::memory_space;
  using adapter_concept = adapter_tag;

  std::size_t rank() const noexcept { return r_; }
  std::size_t in_features() const noexcept { return in_; }
  std::size_t out_features() const noexcept { return out_; }
  float scaling() const noexcept { return scaling_; }
  float dropout() const noexcept { return dropout_; }
  bool training() const noexcept { return training_; }
  /// Dropout applies only in training mode (the default).
  void train(bool on = true) noexcept { training_ = on; }
  bool merged() const noexcept { return merged_; }
  const B& backend() const noexcept { return backend_; }

  void forward(matrix_view<const float, memory_space> x, matrix_view<float, memory_space> y) {
    if (merged_) throw usage_error("forward(): the adapter is merged into the base weight; unmerge() it first");
    math_.forward(backend_, raw(), x, y, training_ ? dropout_ : 0.0f, seed_);
  }
  void backward(matrix_view<const float, memory_space> dy, matrix_view<float, memory_space> dx = {}) {
    math_.backward(backend_, raw(), dy, dx);
  }

  void zero_grad() {
    zero(grad_A_);
    zero(grad_E_);
    zero(grad_B_);
  }

  std::vector<parameter_span> parameters() {
    std::vector<parameter_span> p{{A_.data(), grad_A_.data(), A_.size()}};
    if constexpr (HasLambda) p.push_back({E_.data(), grad_E_.data(), E_.size()});
    p.push_back({B_.data(), grad_B_.data(), B_.size()});
    return p;
  }

  /// W (out × in, any strides) += s·B diag(λ) A. Refuses (non_finite_error, W untouched) if W would hold NaN/inf.
  void merge(matrix_view<float, memory_space> W) {
    if (merged_) throw usage_error("merge(): the adapter is already merged");
    apply_delta(W, 1.0f, "merge");
    merged_ = true;
  }
  /// W −= the same ΔW (computed from the current parameters).
  void unmerge(matrix_view<float, memory_space> W) {
    if (!merged_) throw usage_error("unmerge(): the adapter is not merged");
    apply_delta(W, -1.0f, "unmerge");
    merged_ = false;
  }

  /// ΔW = s·B diag(λ) A as a host matrix (out × in), for inspection and tests.
  std::vector<float> delta_weight() {
    auto d = delta();
    std::vector<float> h(out_ * in_);
    backend_.copy_to_host(d.data(), h.size(), h.data());
    return h;
  }

  matrix_view<float, memory_space> lora_A() noexcept { return make_matrix_view<memory_space>(A_.data(), r_, in_); }
  matrix_view<float, memory_space> lora_B() noexcept { return make_matrix_view<memory_space>(B_.data(), out_, r_); }
  matrix_view<float, memory_space> grad_A() noexcept { return make_matrix_view<memory_space>(grad_A_.data(), r_, in_); }
  matrix_view<float, memory_space> grad_B() noexcept {
    return make_matrix_view<memory_space>(grad_B_.data(), out_, r_);
  }

  /// Copies host values into the parameters (sizes must match: A r·in, E r, B out·r).
  void load(const std::vector<float>& A, const std::vector<float>& E, const std::vector<float>& Bm) {
    if (A.size() != A_.size() || Bm.size() != B_.size() || (HasLambda && E.size() != E_.size()))
      throw shape_error("load(): sizes A " + std::to_string(A.size()) + ", E " + std::to_string(E.size()) + ", B " +
                        std::to_string(Bm.size()) + " do not match the adapter (r " + std::to_string(r_) + ", in " +
                        std::to_string(in_) + ", out " + std::to_string(out_) + ")");
    backend_.copy_from_host(A.data(), A.size(), A_.data());
    if constexpr (HasLambda) backend_.copy_from_host(E.data(), E.size(), E_.data());
    backend_.copy_from_host(Bm.data(), Bm.size(), B_.data());
  }

protected:
  low_rank_adapter(std::size_t in, std::size_t out, std::size_t r, float scaling, float dropout, std::uint64_t seed,
                   B backend)
      : backend_(std::move(backend)), in_(in), out_(out), r_(r), scaling_(scaling), dropout_(dropout), seed_(seed) {
    if (in == 0 || out == 0)
      throw shape_error("an adapter needs in_features and out_features > 0, got in " + std::to_string(in) + ", out " +
                        std::to_string(out));
    if (!(dropout >= 0.0f && dropout < 1.0f))
      throw config_error("lora_dropout = " + std::to_string(dropout) + "; need 0 <= lora_dropout < 1");
    if (!std::isfinite(scaling))
      throw config_error("the adapter scaling (lora_alpha / r) is " + std::to_string(scaling) +
                         "; lora_alpha must be a finite float32 value");
    for (const auto& [rows, cols, what] : {std::tuple{r, in, "r × in"}, std::tuple{out, r, "out × r"}}) {
      const auto n = checked_mul(rows, cols);
      if (!n || *n > max_elements_of<float>)
        throw shape_error(std::string("an adapter of in ") + std::to_string(in) + ", out " + std::to_string(out) +
                          ", r " + std::to_string(r) + ": " + what + " is more elements than one object can hold");
    }
    A_ = backend_.template allocate<float>(r * in);
    B_ = backend_.template allocate<float>(out * r);
    grad_A_ = backend_.template allocate<float>(r * in);
    grad_B_ = backend_.template allocate<float>(out * r);
    if constexpr (HasLambda) {
      E_ = backend_.template allocate<float>(r);
      grad_E_ = backend_.template allocate<float>(r);
    }
  }

  /// Fills a parameter with seeded host random numbers.
  template <class Dist>
  void init(buffer_t<B, float>& buf, Dist dist, std::uint64_t stream) {
    std::mt19937_64 rng(seed_ * 0x9E3779B97F4A7C15ull + stream);
    std::vector<float> h(buf.size());
    for (auto& v : h) v = static_cast<float>(dist(rng));
    backend_.copy_from_host(h.data(), h.size(), buf.data());
  }

  low_rank_params raw() noexcept {
    return {A_.data(), HasLambda ? E_.data() : nullptr, B_.data(), grad_A_.data(),
            HasLambda ? grad_E_.data() : nullptr, grad_B_.data(), r_, in_, out_, scaling_};
  }

  void zero(buffer_t<B, float>& b) { backend_.for_each(b.size(), fill_fn{b.data(), 0.0f}); }

  B backend_;
  std::size_t in_, out_, r_;
  float scaling_;
  float dropout_;
  std::uint64_t seed_;
  bool training_ = true;
  bool merged_ = false;
  buffer_t<B, float> A_{}, E_{}, B_{}, grad_A_{}, grad_E_{}, grad_B_{};
  low_rank_math<B> math_;

private:
  buffer_t<B, float> delta() {
    auto d = backend_.template allocate<float>(out_ * in_);
    if (r_ == 0) return d;
    auto scaled_B = backend_.template allocate<float>(out_ * r_);  // s · B diag(λ)
    backend_.for_each(out_ * r_, scale_columns_fn{B_.data(), HasLambda ? E_.data() : nullptr, scaling_, r_,
                                                  scaled_B.data()});
    backend_.gemm(transpose::no, transpose::no, out_, in_, r_, 1.0f, scaled_B.data(), r_, A_.data(), in_, 0.0f,
                  d.data(), in_);
    return d;
  }

  void apply_delta(matrix_view<float, memory_space> W, float sign, const char* what) {
    if (W.extents[0] != out_ || W.extents[1] != in_)
      throw shape_error(std::string(what) + "(): the base weight is " + extents_string(W) + ", expected (out, in) = (" +
                        std::to_string(out_) + ", " + std::to_string(in_) + ")");
    const auto d = delta();
    const std::size_t bad = backend_.count_if(
        out_ * in_, merged_non_finite_fn{d.data(), in_, W.data, W.strides[0], W.strides[1], sign});
    if (bad)
      throw non_finite_error(std::string(what) + "(): " + std::to_string(bad) +
                             " weights would become NaN or infinite; the adapter seems broken, W is left unchanged");
    backend_.for_each(out_ * in_, add_into_strided_fn{d.data(), in_, W.data, W.strides[0], W.strides[1], sign});
  }
};

}  // namespace adalora::detail
