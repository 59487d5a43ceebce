// Non-owning views of one SVD-form adapter (P Λ Q) and its gradients, in PEFT's names and layout.
#pragma once

#include "adalora/core/error.hpp"
#include "adalora/core/memory_space.hpp"
#include "adalora/core/view.hpp"

#include <string>

namespace adalora {

/// The tensors of one adapter ΔW = P Λ Q as the trainer holds them (SPEC §1), each a view in memory space `Space`:
/// `lora_A` = Q (r × in), `lora_E` = λ (r; PEFT's (r, 1) tensor), `lora_B` = P (out × r), and their gradients.
/// A gradient view may be empty (null data) until the trainer has run its first backward pass.
template <class T, MemorySpace Space = host_space>
struct svd_adapter_views {
  matrix_view<T, Space> lora_A;
  vector_view<T, Space> lora_E;
  matrix_view<T, Space> lora_B;
  matrix_view<const T, Space> grad_A;
  vector_view<const T, Space> grad_E;
  matrix_view<const T, Space> grad_B;

  std::size_t rank() const noexcept { return lora_E.extent(0); }
  std::size_t in_features() const noexcept { return lora_A.extent(1); }
  std::size_t out_features() const noexcept { return lora_B.extent(0); }
  /// True when every non-empty parameter has a gradient view with data.
  bool has_gradients() const noexcept {
    return (grad_A.data || lora_A.empty()) && (grad_E.data || lora_E.empty()) && (grad_B.data || lora_B.empty());
  }

  /// Throws shape_error unless every view describes memory that can exist (extents_problem: no extent, element count
  /// or offset overflows), naming the view.
  void check_extents(const std::string& adapter) const {
    auto addressable = [&](const auto& v, const char* what) {
      if (const std::string p = extents_problem(v); !p.empty())
        throw shape_error("adapter '" + adapter + "': " + what + ": " + p);
    };
    addressable(lora_A, "lora_A");
    addressable(lora_E, "lora_E");
    addressable(lora_B, "lora_B");
    addressable(grad_A, "grad_A");
    addressable(grad_E, "grad_E");
    addressable(grad_B, "grad_B");
  }

  /// Throws shape_error unless A is (r, in), E is (r), B is (out, r) with in, out > 0, every view describes memory
  /// that can exist (extents_problem: no element count or offset overflows), every non-empty parameter has data,
  /// and every gradient is either missing (null) or of its parameter's shape.
  void check_shapes(const std::string& adapter) const {
    const auto where = "adapter '" + adapter + "': ";
    const std::size_t r = rank();
    if (lora_A.extent(0) != r || lora_B.extent(1) != r)
      throw shape_error(where + "ranks disagree: lora_A is " + extents_string(lora_A) + ", lora_E is " +
                        extents_string(lora_E) + ", lora_B is " + extents_string(lora_B) +
                        "; expected lora_A (r, in), lora_E (r), lora_B (out, r)");
    if (in_features() == 0 || out_features() == 0)
      throw shape_error(where + "in_features and out_features must be positive, got lora_A " +
                        extents_string(lora_A) + " and lora_B " + extents_string(lora_B));
    check_extents(adapter);
    auto need_data = [&](const auto& v, const char* what) {
      if (!v.empty() && v.data == nullptr) throw shape_error(where + what + " has extents " + extents_string(v) +
                                                             " but no data (null pointer)");
    };
    need_data(lora_A, "lora_A");
    need_data(lora_E, "lora_E");
    need_data(lora_B, "lora_B");
    auto grad_matches = [&](const auto& g, const auto& p, const char* what) {
      if (g.data != nullptr && g.extents != p.extents)
        throw shape_error(where + what + " is " + extents_string(g) + " but its parameter is " + extents_string(p));
    };
    grad_matches(grad_A, lora_A, "grad_A");
    grad_matches(grad_E, lora_E, "grad_E");
    grad_matches(grad_B, lora_B, "grad_B");
  }
};

}  // namespace adalora
