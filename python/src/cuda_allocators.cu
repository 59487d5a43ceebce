// The CUDA allocators of the Python module (built with ADALORA_PYTHON_CUDA=ON, compiled by nvcc): rank_allocator on
// the CUDA backend for float32 and bfloat16 parameters, behind allocator_iface. Each call runs with the device that
// was current when the allocator was made (the first adapter's, set by the bindings) and on the caller's stream.
#include <cuda_runtime.h>

#include <memory>
#include <string>

#include "adalora/backends/cuda/cuda_backend.cuh"
#include "adalora/core/bfloat16.hpp"
#include "allocator_impl.hpp"

namespace adalora::python {

namespace {

/// Makes `device` current for the lifetime of the guard, restoring the previous one after.
class device_guard {
public:
  explicit device_guard(int device) {
    adalora::detail::cuda_check(cudaGetDevice(&previous_), "cudaGetDevice");
    if (previous_ != device) adalora::detail::cuda_check(cudaSetDevice(device), "cudaSetDevice");
    else previous_ = -1;
  }
  ~device_guard() {
    if (previous_ >= 0) (void)cudaSetDevice(previous_);
  }
  device_guard(const device_guard&) = delete;
  device_guard& operator=(const device_guard&) = delete;

private:
  int previous_ = -1;
};

/// An allocator_iface that runs every call of `inner` on one device.
class device_scoped final : public allocator_iface {
public:
  device_scoped(std::unique_ptr<allocator_iface> inner, int device) : inner_(std::move(inner)), device_(device) {}

  const char* backend_name() const noexcept override { return inner_->backend_name(); }
  dtype_kind dtype() const noexcept override { return inner_->dtype(); }
  bool on_device() const noexcept override { return true; }

  std::size_t add_adapter(std::string name, const raw_adapter& a) override {
    device_guard g(device_);
    return inner_->add_adapter(std::move(name), a);
  }
  void rebind(std::size_t index, const raw_adapter& a) override {
    device_guard g(device_);
    inner_->rebind(index, a);
  }
  void rebind_gradients(std::size_t index, const raw_tensor& gA, const raw_tensor& gE, const raw_tensor& gB) override {
    device_guard g(device_);
    inner_->rebind_gradients(index, gA, gE, gB);
  }
  step_report step(std::int64_t t) override {
    device_guard g(device_);
    return inner_->step(t);
  }
  allocation_phase phase_of(std::int64_t t) const noexcept override { return inner_->phase_of(t); }
  const adalora_config& config() const noexcept override { return inner_->config(); }
  std::size_t adapter_count() const noexcept override { return inner_->adapter_count(); }
  const std::string& adapter_name(std::size_t i) const override { return inner_->adapter_name(i); }
  std::size_t adapter_index(std::string_view name) const override { return inner_->adapter_index(name); }
  std::int64_t initial_budget() const noexcept override { return inner_->initial_budget(); }
  std::int64_t target_budget() const noexcept override { return inner_->target_budget(); }
  std::int64_t budget() const noexcept override { return inner_->budget(); }
  std::optional<float> threshold() const noexcept override { return inner_->threshold(); }
  std::optional<std::int64_t> last_step() const noexcept override { return inner_->last_step(); }
  bool pattern_frozen() const noexcept override { return inner_->pattern_frozen(); }
  bool importance_live() const noexcept override { return inner_->importance_live(); }
  std::vector<bool> rank_pattern(std::string_view name) const override { return inner_->rank_pattern(name); }
  std::vector<std::int64_t> ranks() const override { return inner_->ranks(); }
  std::vector<float> triplet_scores(std::string_view name) const override { return inner_->triplet_scores(name); }
  allocator_state save_state() const override {
    device_guard g(device_);
    return inner_->save_state();
  }
  void restore_state(const allocator_state& s) override {
    device_guard g(device_);
    inner_->restore_state(s);
  }
  bool gradients_all_zero() const override {
    device_guard g(device_);
    return inner_->gradients_all_zero();
  }

private:
  std::unique_ptr<allocator_iface> inner_;
  int device_;
};

}  // namespace

std::unique_ptr<allocator_iface> make_cuda_allocator(const adalora_config& config, dtype_kind dtype,
                                                     std::uintptr_t stream, int device) {
  device_guard g(device);
  const cuda_backend backend{cuda_system(reinterpret_cast<cudaStream_t>(stream))};
  std::unique_ptr<allocator_iface> inner;
  if (dtype == dtype_kind::float32)
    inner = std::make_unique<allocator_impl<cuda_backend, float>>(config, backend, dtype);
  else
    inner = std::make_unique<allocator_impl<cuda_backend, bfloat16>>(config, backend, dtype);
  return std::make_unique<device_scoped>(std::move(inner), device);
}

}  // namespace adalora::python
