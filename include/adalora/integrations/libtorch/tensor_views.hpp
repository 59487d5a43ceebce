// Views of torch tensors for the allocator: definedness, dtype, device and layout checked, nothing copied.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "adalora/adapters/svd_adapter_views.hpp"
#include "adalora/core/bfloat16.hpp"
#include "adalora/core/error.hpp"
#include "adalora/core/memory_space.hpp"
#include "adalora/core/view.hpp"

// Only ATen's Tensor class is used here (not torch/nn), so that this header also compiles with nvcc in C++20, for
// the CUDA backend's device views (torch 1.13's torch/nn headers do not: see the README's libtorch section).

namespace adalora::libtorch {

namespace detail {

template <class T>
struct torch_scalar;
template <>
struct torch_scalar<float> {
  static constexpr at::ScalarType value = at::kFloat;
};
template <>
struct torch_scalar<adalora::bfloat16> {
  static constexpr at::ScalarType value = at::kBFloat16;
};

template <MemorySpace S>
struct torch_device;
template <>
struct torch_device<host_space> {
  static constexpr c10::DeviceType value = c10::DeviceType::CPU;
};
template <>
struct torch_device<cuda_device_space> {
  static constexpr c10::DeviceType value = c10::DeviceType::CUDA;
};

}  // namespace detail

/// The torch dtype of a view's element type: float is at::kFloat, adalora::bfloat16 is at::kBFloat16 (the same two
/// bytes as c10::BFloat16). Other element types do not compile.
template <class T>
inline constexpr at::ScalarType scalar_type_of = detail::torch_scalar<std::remove_const_t<T>>::value;

/// The torch device type of a memory space: host_space is CPU, cuda_device_space is CUDA.
template <MemorySpace S>
inline constexpr c10::DeviceType device_type_of = detail::torch_device<S>::value;

/// "a Float tensor of shape (3, 4) on cpu", for messages; "an undefined tensor" when it is not defined.
inline std::string describe(const at::Tensor& t) {
  if (!t.defined()) return "an undefined tensor";
  std::string shape = "(";
  for (std::size_t d = 0; d < static_cast<std::size_t>(t.dim()); ++d) {
    if (d) shape += ", ";
    shape += std::to_string(t.size(static_cast<std::int64_t>(d)));
  }
  return std::string("a ") + c10::toString(t.scalar_type()) + " tensor of shape " + shape + ") on " + t.device().str();
}

/// Checks that `t` can be viewed, without a copy, as elements of T in memory space Space: it is defined
/// (usage_error), strided (usage_error), of T's dtype (usage_error), on Space's device (usage_error) and
/// contiguous (shape_error: a view of a copy would not write back). `what` names the tensor in the message.
template <class T, MemorySpace Space = host_space>
void check_viewable(const at::Tensor& t, std::string_view what) {
  const std::string name(what);
  if (!t.defined()) throw usage_error(name + " is an undefined tensor");
  if (t.layout() != c10::kStrided)
    throw usage_error(name + " is " + describe(t) + " with a " + c10::str(t.layout()) +
                      " layout; the allocator needs a dense (strided) tensor");
  if (t.scalar_type() != scalar_type_of<T>)
    throw usage_error(name + " is " + describe(t) + ", but the allocator's element type is " +
                      c10::toString(scalar_type_of<T>) +
                      "; use rank_allocator<..., float> for Float tensors and rank_allocator<..., adalora::bfloat16> "
                      "for BFloat16 ones, or convert the module (module->to(torch::kFloat))");
  if (t.device().type() != device_type_of<Space>)
    throw usage_error(name + " is " + describe(t) + ", but the allocator's backend reads " + Space::name + " memory (" +
                      c10::DeviceTypeName(device_type_of<Space>, true) +
                      " tensors); move the module (module->to(...)) or use a backend of that device");
  if (!t.is_contiguous())
    throw shape_error(name + " is " + describe(t) +
                      " and not contiguous; the allocator writes parameters in "
                      "place, so it cannot work on a contiguous copy: make the parameter contiguous when the model "
                      "is built");
}

/// A matrix view (rows × cols, row-major) of a 2-D tensor; the checks of check_viewable, and shape_error unless it
/// has 2 dimensions. T may be const (for gradients, which the allocator only reads).
template <class T, MemorySpace Space = host_space>
matrix_view<T, Space> matrix_view_of(const at::Tensor& t, std::string_view what = "tensor") {
  check_viewable<T, Space>(t, what);
  if (t.dim() != 2) throw shape_error(std::string(what) + " is " + describe(t) + "; expected a matrix (2 dimensions)");
  return make_matrix_view<Space>(static_cast<T*>(t.data_ptr()), static_cast<std::size_t>(t.size(0)),
                                 static_cast<std::size_t>(t.size(1)));
}

/// A vector view of a tensor of shape (n) or (n, 1) (PEFT's lora_E is (r, 1)); the checks of check_viewable, and
/// shape_error for any other shape.
template <class T, MemorySpace Space = host_space>
vector_view<T, Space> vector_view_of(const at::Tensor& t, std::string_view what = "tensor") {
  check_viewable<T, Space>(t, what);
  if (!(t.dim() == 1 || (t.dim() == 2 && t.size(1) == 1)))
    throw shape_error(std::string(what) + " is " + describe(t) + "; expected a vector (n) or a column (n, 1)");
  return make_vector_view<Space>(static_cast<T*>(t.data_ptr()), static_cast<std::size_t>(t.size(0)));
}

/// A float32 host copy of a tensor's values in row-major order, from any device and dtype (for files and checks).
inline std::vector<float> host_copy(const at::Tensor& t) {
  const at::Tensor h = t.detach().to(c10::Device(c10::DeviceType::CPU), at::kFloat).contiguous();
  std::vector<float> v(static_cast<std::size_t>(h.numel()));
  if (!v.empty()) std::memcpy(v.data(), h.data_ptr(), v.size() * sizeof(float));
  return v;
}

/// Views of one adapter's lora_A (r, in), lora_E (r, 1) and lora_B (out, r) and of their gradients (`.grad()`; a
/// null view where a parameter has none yet, as before the first backward pass). Throws as check_viewable for any
/// tensor that cannot be viewed, and shape_error (svd_adapter_views::check_shapes) when the shapes disagree; `module`
/// names the adapter in every message.
template <class T, MemorySpace Space = host_space>
svd_adapter_views<T, Space> adapter_views_of(const at::Tensor& lora_A, const at::Tensor& lora_E,
                                             const at::Tensor& lora_B, const std::string& module) {
  const std::string m = "module '" + module + "': ";
  svd_adapter_views<T, Space> v;
  v.lora_A = matrix_view_of<T, Space>(lora_A, m + "lora_A");
  v.lora_E = vector_view_of<T, Space>(lora_E, m + "lora_E");
  v.lora_B = matrix_view_of<T, Space>(lora_B, m + "lora_B");
  if (const auto& g = lora_A.grad(); g.defined()) v.grad_A = matrix_view_of<const T, Space>(g, m + "lora_A.grad()");
  if (const auto& g = lora_E.grad(); g.defined()) v.grad_E = vector_view_of<const T, Space>(g, m + "lora_E.grad()");
  if (const auto& g = lora_B.grad(); g.defined()) v.grad_B = matrix_view_of<const T, Space>(g, m + "lora_B.grad()");
  v.check_shapes(module);
  return v;
}

}  // namespace adalora::libtorch
