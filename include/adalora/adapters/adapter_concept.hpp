// The Adapter concept: an owning low-rank adapter layer with forward, backward, merge and its parameters.
#pragma once

#include <concepts>
#include <cstddef>

#include "adalora/core/view.hpp"

namespace adalora {

/// Tag that an adapter names as its `adapter_concept` to join the Adapter concept on purpose.
struct adapter_tag {};

/// One trainable tensor of an adapter and its gradient, flat and contiguous (what an optimizer updates).
struct parameter_span {
  float* value;
  float* grad;
  std::size_t size;
};

/// An adapter layer:
///  1. names `adapter_tag` as its `adapter_concept` and has a `memory_space`;
///  2. `a.forward(x, y)` adds its contribution to y (batch × out) for x (batch × in);
///  3. `a.backward(dy, dx)` accumulates its parameters' gradients, and its part of ∂x into dx (when dx has data);
///  4. `a.merge(W)` / `a.unmerge(W)` add / subtract its ΔW into a base weight (out × in);
///  5. `a.parameters()` lists its trainable tensors; `a.zero_grad()` clears their gradients;
///  6. `a.rank()`, `a.in_features()`, `a.out_features()`, `a.scaling()` describe it.
template <class A>
concept Adapter = std::same_as<typename A::adapter_concept, adapter_tag> &&
                  requires(A& a, matrix_view<const float, typename A::memory_space> x,
                           matrix_view<float, typename A::memory_space> y) {
                    a.forward(x, y);
                    a.backward(x, y);
                    a.merge(y);
                    a.unmerge(y);
                    a.zero_grad();
                    { a.parameters() };
                    { a.rank() } -> std::convertible_to<std::size_t>;
                    { a.in_features() } -> std::convertible_to<std::size_t>;
                    { a.out_features() } -> std::convertible_to<std::size_t>;
                    { a.scaling() } -> std::convertible_to<float>;
                  };

}  // namespace adalora
