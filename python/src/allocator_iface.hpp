// The Python bindings' view of a rank_allocator: one abstract interface over every backend and parameter type the
// module was built with, so that the nanobind translation unit never instantiates a device backend (the CUDA
// allocators live in their own nvcc-compiled file, cuda_allocators.cu) and DLPack tensors reach the library as raw
// pointers, extents and strides.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "adalora/allocation/allocation_phase.hpp"
#include "adalora/allocation/allocator_state.hpp"
#include "adalora/core/config.hpp"

namespace adalora::python {

/// The storage type of the adapters' parameters and gradients (the allocator's T).
enum class dtype_kind { float32, bfloat16 };

inline const char* dtype_name(dtype_kind d) noexcept { return d == dtype_kind::float32 ? "float32" : "bfloat16"; }

/// One tensor as the bindings received it (a DLPack array): data, extents and strides in elements, 1-D or 2-D.
/// A null `data` is an absent tensor (a gradient before the first backward pass).
struct raw_tensor {
  void* data = nullptr;
  std::size_t ndim = 0;
  std::size_t extents[2] = {0, 0};
  std::ptrdiff_t strides[2] = {0, 0};
};

/// lora_A (r, in), lora_E (r) or (r, 1), lora_B (out, r), and their gradients.
struct raw_adapter {
  raw_tensor A, E, B, gA, gE, gB;
};

/// rank_allocator<Backend, sensitivity_uncertainty, cubic_schedule, T> behind virtual calls. Adapters are addressed
/// by registration index where the bindings know it (rebind), by name where the C++ API takes a name.
class allocator_iface {
public:
  virtual ~allocator_iface() = default;

  virtual const char* backend_name() const noexcept = 0;
  virtual dtype_kind dtype() const noexcept = 0;
  /// True when the backend reads device memory (the tensors must live on the GPU).
  virtual bool on_device() const noexcept = 0;

  virtual std::size_t add_adapter(std::string name, const raw_adapter& a) = 0;
  virtual void rebind(std::size_t index, const raw_adapter& a) = 0;
  /// Rebinds only the gradients of adapter `index` (its parameters stay as registered).
  virtual void rebind_gradients(std::size_t index, const raw_tensor& gA, const raw_tensor& gE, const raw_tensor& gB) = 0;

  virtual step_report step(std::int64_t t) = 0;
  virtual allocation_phase phase_of(std::int64_t t) const noexcept = 0;

  virtual const adalora_config& config() const noexcept = 0;
  virtual std::size_t adapter_count() const noexcept = 0;
  virtual const std::string& adapter_name(std::size_t i) const = 0;
  virtual std::size_t adapter_index(std::string_view name) const = 0;
  virtual std::int64_t initial_budget() const noexcept = 0;
  virtual std::int64_t target_budget() const noexcept = 0;
  virtual std::int64_t budget() const noexcept = 0;
  virtual std::optional<float> threshold() const noexcept = 0;
  virtual std::optional<std::int64_t> last_step() const noexcept = 0;
  virtual bool pattern_frozen() const noexcept = 0;
  virtual bool importance_live() const noexcept = 0;
  virtual std::vector<bool> rank_pattern(std::string_view name) const = 0;
  virtual std::vector<std::int64_t> ranks() const = 0;
  virtual std::vector<float> triplet_scores(std::string_view name) const = 0;

  virtual allocator_state save_state() const = 0;
  virtual void restore_state(const allocator_state& s) = 0;

  /// True when every registered gradient is absent or holds only zeros (stops at the first non-zero element found,
  /// looking at each adapter's lora_E gradient first): the sign of an allocator called after zero_grad().
  virtual bool gradients_all_zero() const = 0;
};

/// The CUDA allocators (cuda_allocators.cu, built with ADALORA_PYTHON_CUDA): on `stream` (a cudaStream_t; 0 is the
/// legacy default stream) of CUDA device `device`, which every call makes current while it runs.
std::unique_ptr<allocator_iface> make_cuda_allocator(const adalora_config& config, dtype_kind dtype,
                                                     std::uintptr_t stream, int device);

}  // namespace adalora::python
