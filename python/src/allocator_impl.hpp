// allocator_impl<Backend, T>: a rank_allocator (PEFT's metric and schedule) behind allocator_iface. Included by the
// host bindings (core.cpp) and, for the CUDA backend, by cuda_allocators.cu.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "adalora/allocation/allocator_kernels.hpp"
#include "adalora/allocation/rank_allocator.hpp"
#include "adalora/core/error.hpp"
#include "adalora/core/host_device.hpp"
#include "adalora/importance/sensitivity_uncertainty.hpp"
#include "adalora/schedules/cubic.hpp"
#include "allocator_iface.hpp"

namespace adalora::python {

namespace detail {

/// True where element i (row-major) of a view is not zero (NaN counts as not zero).
template <class View>
struct nonzero_element_fn {
  adalora::detail::flat_accessor<View> values;
  ADALORA_HOST_DEVICE bool operator()(std::size_t i) const noexcept { return static_cast<float>(values(i)) != 0.0f; }
};

inline std::string dims_text(const raw_tensor& t) {
  std::string s = "(";
  for (std::size_t d = 0; d < t.ndim; ++d) s += (d ? ", " : "") + std::to_string(t.extents[d]);
  return s + (t.ndim == 1 ? ",)" : ")");
}

}  // namespace detail

template <class Backend, class T>
class allocator_impl final : public allocator_iface {
public:
  using allocator_type = rank_allocator<Backend, sensitivity_uncertainty, cubic_schedule, T>;
  using space = typename Backend::memory_space;
  using views_type = svd_adapter_views<T, space>;

  allocator_impl(const adalora_config& config, Backend backend, dtype_kind dtype)
      : alloc_(config, std::move(backend)), dtype_(dtype) {}

  const char* backend_name() const noexcept override { return Backend::name; }
  dtype_kind dtype() const noexcept override { return dtype_; }
  bool on_device() const noexcept override { return !std::is_same_v<space, host_space>; }

  std::size_t add_adapter(std::string name, const raw_adapter& a) override {
    const views_type v = to_views(name, a);
    const std::size_t i = alloc_.add_adapter(std::move(name), v);
    views_.push_back(v);
    return i;
  }

  void rebind(std::size_t index, const raw_adapter& a) override {
    const std::string& name = alloc_.adapter_name(index);
    const views_type v = to_views(name, a);
    alloc_.rebind(name, v);
    views_[index] = v;
  }

  void rebind_gradients(std::size_t index, const raw_tensor& gA, const raw_tensor& gE, const raw_tensor& gB) override {
    const std::string& name = alloc_.adapter_name(index);
    views_type v = views_.at(index);
    v.grad_A = matrix(name, "grad_A", gA);
    v.grad_E = vector(name, "grad_E", gE);
    v.grad_B = matrix(name, "grad_B", gB);
    alloc_.rebind(name, v);
    views_[index] = v;
  }

  step_report step(std::int64_t t) override { return alloc_.step(t); }
  allocation_phase phase_of(std::int64_t t) const noexcept override { return alloc_.phase_of(t); }

  const adalora_config& config() const noexcept override { return alloc_.config(); }
  std::size_t adapter_count() const noexcept override { return alloc_.adapter_count(); }
  const std::string& adapter_name(std::size_t i) const override { return alloc_.adapter_name(i); }
  std::size_t adapter_index(std::string_view name) const override { return alloc_.adapter_index(name); }
  std::int64_t initial_budget() const noexcept override { return alloc_.initial_budget(); }
  std::int64_t target_budget() const noexcept override { return alloc_.target_budget(); }
  std::int64_t budget() const noexcept override { return alloc_.budget(); }
  std::optional<float> threshold() const noexcept override { return alloc_.threshold(); }
  std::optional<std::int64_t> last_step() const noexcept override { return alloc_.last_step(); }
  bool pattern_frozen() const noexcept override { return alloc_.pattern_frozen(); }
  bool importance_live() const noexcept override { return alloc_.importance_live(); }
  std::vector<bool> rank_pattern(std::string_view name) const override { return alloc_.rank_pattern(name); }
  std::vector<std::int64_t> ranks() const override { return alloc_.ranks(); }
  std::vector<float> triplet_scores(std::string_view name) const override { return alloc_.triplet_scores(name); }

  allocator_state save_state() const override { return alloc_.save_state(); }
  void restore_state(const allocator_state& s) override { alloc_.restore_state(s); }

  bool gradients_all_zero() const override {
    for (const views_type& v : views_)
      if (nonzero(v.grad_E)) return false;
    for (const views_type& v : views_)
      if (nonzero(v.grad_A) || nonzero(v.grad_B)) return false;
    return true;
  }

private:
  template <class View>
  bool nonzero(const View& v) const {
    if (v.data == nullptr || v.empty()) return false;
    return alloc_.backend().count_if(v.size(), detail::nonzero_element_fn<View>{adalora::detail::flat_accessor<View>(v)}) != 0;
  }

  // A gradient with null data is absent (an empty view); a parameter keeps its extents (check_shapes then names a
  // non-empty one without data).
  static matrix_view<T, space> matrix(const std::string& adapter, const char* what, const raw_tensor& t,
                                      bool gradient = true) {
    if (gradient && t.data == nullptr) return {};
    if (t.ndim != 2)
      throw shape_error("adapter '" + adapter + "': " + what + " has shape " + detail::dims_text(t) +
                        "; expected a matrix (2 dimensions)");
    return {static_cast<T*>(t.data), {t.extents[0], t.extents[1]}, {t.strides[0], t.strides[1]}};
  }

  // lora_E: PEFT's (r, 1) tensor or a plain (r,) vector.
  static vector_view<T, space> vector(const std::string& adapter, const char* what, const raw_tensor& t,
                                      bool gradient = true) {
    if (gradient && t.data == nullptr) return {};
    if (!(t.ndim == 1 || (t.ndim == 2 && t.extents[1] == 1)))
      throw shape_error("adapter '" + adapter + "': " + what + " has shape " + detail::dims_text(t) +
                        "; expected (r,) or (r, 1)");
    return {static_cast<T*>(t.data), {t.extents[0]}, {t.strides[0]}};
  }

  static views_type to_views(const std::string& adapter, const raw_adapter& a) {
    views_type v;
    v.lora_A = matrix(adapter, "lora_A", a.A, false);
    v.lora_E = vector(adapter, "lora_E", a.E, false);
    v.lora_B = matrix(adapter, "lora_B", a.B, false);
    v.grad_A = matrix(adapter, "grad_A", a.gA);
    v.grad_E = vector(adapter, "grad_E", a.gE);
    v.grad_B = matrix(adapter, "grad_B", a.gB);
    return v;
  }

  allocator_type alloc_;
  dtype_kind dtype_;
  std::vector<views_type> views_;
};

}  // namespace adalora::python
