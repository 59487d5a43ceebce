// attach(): registers every PEFT-named adapter of a torch module with a rank_allocator and rebinds its gradients.
#pragma once

#include <ATen/core/Tensor.h>

#include <algorithm>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <ranges>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "adalora/allocation/allocation_phase.hpp"
#include "adalora/allocation/allocator_kernels.hpp"
#include "adalora/core/error.hpp"
#include "adalora/integrations/libtorch/tensor_views.hpp"

namespace adalora::libtorch {

/// What an adapter module knows beyond its tensors, for the PEFT export to check against the config (PEFT rebuilds
/// every module's scaling from the config's lora_alpha and init_r). SVDLinearImpl implements it; find_adapters on a
/// module records it for each adapter whose module does.
class adapter_module_info {
public:
  virtual ~adapter_module_info() = default;
  /// s = α / (init_r + 1e-5).
  virtual float scaling() const noexcept = 0;
  /// The rank the scaling is fixed at.
  virtual std::int64_t init_r() const noexcept = 0;
};

/// The three parameters of one AdaLoRA adapter found among a module's parameters by their PEFT names.
struct adapter_tensors {
  std::string module;        ///< the adapted module's path, e.g. "layers.0.attn.q": its name in the allocator and PEFT
  std::string adapter_name;  ///< PEFT's adapter name when the parameters carry one ("<path>.lora_A.default"), else ""
  at::Tensor lora_A;         ///< Q, (r, in)
  at::Tensor lora_E;         ///< λ, (r, 1) or (r)
  at::Tensor lora_B;         ///< P, (out, r)
  std::optional<float> scaling;        ///< the module's s, when its module says (adapter_module_info)
  std::optional<std::int64_t> init_r;  ///< the rank its scaling is fixed at, likewise
};

/// What attach() registers and how step() checks the gradients.
struct attach_options {
  /// Which adapter's parameters: those named "<path>.lora_X.<adapter_name>" ("" for "<path>.lora_X"). Unset: the one
  /// adapter the module holds (usage_error when it holds several).
  std::optional<std::string> adapter_name;
  /// step() refuses (missing_gradient_error) an adapter whose three gradients are all zero while the allocator needs
  /// gradients: the module took no part in the loss, or the gradients were zeroed before step().
  bool check_zero_gradients = true;
};

namespace detail {

inline constexpr std::string_view peft_parameter_kinds[3] = {"lora_A", "lora_E", "lora_B"};

/// A parameter name split into the module path, which of lora_A/E/B (0, 1, 2) and the adapter name.
struct peft_parameter_name {
  std::string module;
  int kind = -1;
  std::string adapter;
};

inline int peft_kind(std::string_view component) {
  for (int k = 0; k < 3; ++k)
    if (component == peft_parameter_kinds[k]) return k;
  return -1;
}

/// "<path>.lora_A" or "<path>.lora_A.<adapter>" (likewise lora_E, lora_B); nullopt for any other name. The path is
/// empty when the parameter belongs to the module itself.
inline std::optional<peft_parameter_name> parse_peft_parameter(std::string_view name) {
  std::vector<std::string_view> parts;
  for (std::size_t start = 0;;) {
    const std::size_t dot = name.find('.', start);
    parts.push_back(name.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start));
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  auto join = [&](std::size_t count) {
    std::string s;
    for (std::size_t i = 0; i < count; ++i) {
      if (i) s += '.';
      s += parts[i];
    }
    return s;
  };
  const std::size_t n = parts.size();
  if (const int k = peft_kind(parts[n - 1]); k >= 0) return peft_parameter_name{join(n - 1), k, {}};
  if (n >= 2)
    if (const int k = peft_kind(parts[n - 2]); k >= 0)
      return peft_parameter_name{join(n - 2), k, std::string(parts[n - 1])};
  return std::nullopt;
}

/// The name and tensor of one item of a named-tensor range: torch's OrderedDict items (key(), value()) or pairs.
template <class Item>
std::pair<const std::string&, const at::Tensor&> named_item(const Item& item) {
  if constexpr (requires { item.key(); })
    return {item.key(), item.value()};
  else
    return {item.first, item.second};
}

/// True where element i of a gradient view is not zero.
template <class View>
struct nonzero_element_fn {
  adalora::detail::flat_accessor<View> values;
  ADALORA_HOST_DEVICE bool operator()(std::size_t i) const noexcept { return static_cast<float>(values(i)) != 0.0f; }
};

}  // namespace detail

/// One (name, tensor) item: an item of torch's OrderedDict (key(), value()) or a pair.
template <class I>
concept NamedTensorItem = requires(const I& i) {
  { i.key() } -> std::convertible_to<const std::string&>;
  { i.value() } -> std::convertible_to<const at::Tensor&>;
}
|| requires(const I& i) {
  { i.first } -> std::convertible_to<const std::string&>;
  { i.second } -> std::convertible_to<const at::Tensor&>;
};

/// A range of named tensors: what torch::nn::Module::named_parameters() returns, or a container of pairs.
template <class R>
concept NamedTensorRange = std::ranges::input_range<const R> && NamedTensorItem<std::ranges::range_value_t<const R>>;

/// The adapters among `parameters` (named as by named_parameters()): each "<path>.lora_A", "<path>.lora_E",
/// "<path>.lora_B", with or without an adapter-name suffix ("<path>.lora_A.default"), in the order of their first
/// parameter. Throws usage_error, naming the module, for an incomplete triple, a triple at the top level (no path),
/// several adapter names when `adapter_name` is unset, and when none is found.
template <NamedTensorRange R>
std::vector<adapter_tensors> find_adapters(const R& parameters, const std::optional<std::string>& adapter_name = {}) {
  struct slot {
    adapter_tensors t;
    bool seen[3] = {false, false, false};
  };
  std::vector<slot> found;
  std::size_t total = 0;
  for (const auto& item : parameters) {
    ++total;
    const auto [name, tensor] = detail::named_item(item);
    const auto p = detail::parse_peft_parameter(name);
    if (!p) continue;
    if (p->module.empty())
      throw usage_error("attach(): parameter '" + name +
                        "' belongs to the module passed itself, which leaves the "
                        "adapter without a path (its name in the allocator and in PEFT's files); attach the model "
                        "that holds the adapted layers");
    auto it = std::find_if(found.begin(), found.end(),
                           [&](const slot& s) { return s.t.module == p->module && s.t.adapter_name == p->adapter; });
    if (it == found.end()) {
      found.push_back(slot{adapter_tensors{p->module, p->adapter, {}, {}, {}, {}, {}}});
      it = found.end() - 1;
    }
    (p->kind == 0 ? it->t.lora_A : p->kind == 1 ? it->t.lora_E : it->t.lora_B) = tensor;
    it->seen[p->kind] = true;
  }
  // every triple complete
  for (const auto& s : found) {
    std::string missing;
    for (int k = 0; k < 3; ++k)
      if (!s.seen[k])
        missing += std::string(missing.empty() ? "" : " and ") + std::string(detail::peft_parameter_kinds[k]);
    if (!missing.empty())
      throw usage_error("attach(): module '" + s.t.module + "'" +
                        (s.t.adapter_name.empty() ? std::string() : " (adapter '" + s.t.adapter_name + "')") +
                        " has no " + missing +
                        "; an AdaLoRA adapter is the triple lora_A (r, in), lora_E (r, 1), "
                        "lora_B (out, r), as PEFT and adalora::libtorch::SVDLinear name them");
  }
  // one adapter name
  std::vector<std::string> names;
  for (const auto& s : found)
    if (std::find(names.begin(), names.end(), s.t.adapter_name) == names.end()) names.push_back(s.t.adapter_name);
  auto quoted_list = [&] {
    std::string l;
    for (const auto& n : names) l += (l.empty() ? "'" : ", '") + n + "'";
    return l;
  };
  std::string chosen;
  if (adapter_name) {
    chosen = *adapter_name;
    if (std::find(names.begin(), names.end(), chosen) == names.end() && !found.empty())
      throw usage_error("attach(): no adapter named '" + chosen + "' among the module's parameters; it holds " +
                        quoted_list() + " ('' is the one without a suffix)");
  } else if (names.size() > 1) {
    throw usage_error("attach(): the module holds the parameters of several adapters (" + quoted_list() +
                      "; '' is the one without a suffix); choose one with attach_options::adapter_name");
  } else if (!names.empty()) {
    chosen = names.front();
  }
  std::vector<adapter_tensors> out;
  for (auto& s : found)
    if (s.t.adapter_name == chosen) out.push_back(std::move(s.t));
  if (out.empty())
    throw usage_error("attach(): none of the module's " + std::to_string(total) +
                      " parameters is an AdaLoRA adapter (named '<path>.lora_A', '<path>.lora_E', '<path>.lora_B', "
                      "optionally with an adapter name after them); wrap the Linear layers to adapt in "
                      "adalora::libtorch::SVDLinear");
  return out;
}

/// A torch module (or module holder) whose named_parameters() lists its parameters recursively.
template <class M>
concept TorchModule = requires(M& m) {
  { m.named_parameters(true) } -> NamedTensorRange;
}
|| requires(M& m) {
  { m->named_parameters(true) } -> NamedTensorRange;
};

/// The parameters of a module or module holder, named by their paths.
template <TorchModule M>
auto named_parameters_of(M& module) {
  if constexpr (requires { module.named_parameters(true); })
    return module.named_parameters(true);
  else
    return module->named_parameters(true);
}

/// The adapters of a module: find_adapters over its named_parameters(), with the scaling and init_r of each adapter
/// whose module implements adapter_module_info (as SVDLinear does).
template <TorchModule M>
std::vector<adapter_tensors> find_adapters(M& module, const std::optional<std::string>& adapter_name = {}) {
  auto found = find_adapters(named_parameters_of(module), adapter_name);
  const auto modules = [&] {
    // include_self = false: a module on the stack has no shared_ptr to itself (and holds no adapter itself)
    if constexpr (requires { module.named_modules(std::string(), false); })
      return module.named_modules(std::string(), false);
    else
      return module->named_modules(std::string(), false);
  }();
  for (auto& a : found)
    if (const auto* m = modules.find(a.module))
      if (const auto* info = dynamic_cast<const adapter_module_info*>(m->get())) {
        a.scaling = info->scaling();
        a.init_r = info->init_r();
      }
  return found;
}

/// A rank_allocator bound to the adapters of a torch module (made by attach()). It holds the parameter tensors (so
/// their storage stays alive) and, on every step(t), reads each parameter's current `.grad()` — a new tensor after
/// `zero_grad(set_to_none)` or a re-allocation — checks it, and rebinds the allocator's views of the adapters whose
/// tensors moved, without copying anything. The allocator must outlive it.
///
/// Call step(t) once per optimizer step, after optimizer.step() and before zero_grad() (SPEC §6). Calling the
/// allocator's own step() instead skips the rebinding: after a zero_grad(set_to_none) its gradient views would
/// dangle.
template <class Allocator>
class attached_allocator {
public:
  using allocator_type = Allocator;
  using value_type = typename Allocator::value_type;
  using memory_space = typename Allocator::memory_space;
  using views_type = typename Allocator::views_type;

  /// Registers every adapter with the allocator (add_adapter, under its module path), with gradient views where the
  /// gradients already exist. Checks everything first: the allocator has not run a step and holds none of the
  /// names (usage_error), every parameter is defined, requires grad, and is a contiguous tensor of the allocator's
  /// dtype on its device (usage_error, shape_error), all on one device (usage_error), shapes agree (shape_error).
  /// A failed attach registers nothing.
  attached_allocator(Allocator& allocator, std::vector<adapter_tensors> adapters, const attach_options& options = {})
      : allocator_(&allocator), adapters_(std::move(adapters)), options_(options) {
    if (allocator.last_step())
      throw usage_error("attach(): the allocator has already run step " + std::to_string(*allocator.last_step()) +
                        "; attach before the first step");
    if (adapters_.empty()) throw usage_error("attach(): no adapters to register");
    std::vector<views_type> views;
    views.reserve(adapters_.size());
    std::optional<c10::Device> device;
    for (std::size_t k = 0; k < adapters_.size(); ++k) {
      const auto& a = adapters_[k];
      for (std::size_t j = 0; j < k; ++j)
        if (adapters_[j].module == a.module) throw usage_error("attach(): module '" + a.module + "' is listed twice");
      for (std::size_t i = 0; i < allocator.adapter_count(); ++i)
        if (allocator.adapter_name(i) == a.module)
          throw usage_error("attach(): the allocator already has an adapter named '" + a.module + "'");
      for (const at::Tensor* t : {&a.lora_A, &a.lora_E, &a.lora_B}) {
        const char* what = t == &a.lora_A ? "lora_A" : t == &a.lora_E ? "lora_E" : "lora_B";
        check_viewable<value_type, memory_space>(*t, "module '" + a.module + "': " + what);
        if (!t->requires_grad())
          throw usage_error("attach(): module '" + a.module + "': " + what +
                            " does not require grad, so it would "
                            "never get the gradient the importance needs; set requires_grad(true) on the adapter's "
                            "parameters (only the base layer is frozen)");
        if (!device) device = t->device();
        if (t->device() != *device)
          throw usage_error("attach(): module '" + a.module + "': " + what + " is on " + t->device().str() +
                            " but the first adapter's parameters are on " + device->str() +
                            "; one allocator works on one device");
      }
      views.push_back(adapter_views_of<value_type, memory_space>(a.lora_A, a.lora_E, a.lora_B, a.module));
    }
    device_ = *device;
    // every check passed: register
    for (std::size_t k = 0; k < adapters_.size(); ++k) allocator.add_adapter(adapters_[k].module, views[k]);
    bound_ = std::move(views);
  }

  /// Rebinds the gradients (and parameters, should their storage have moved), checks them, and runs the allocator's
  /// step(t). While the allocator needs gradients (warm-up and budgeting, with a metric that reads them) every
  /// parameter must have one: missing_gradient_error naming the module when `.grad()` is undefined (step() called
  /// before backward(), or after zero_grad(set_to_none)) or, with check_zero_gradients, when an adapter's three
  /// gradients are all zero. Nothing changes when it throws; the allocator's own errors follow (steps out of order,
  /// non-finite values).
  step_report step(std::int64_t t) {
    const std::string at = "step(" + std::to_string(t) + "): ";
    const allocation_phase phase = allocator_->phase_of(t);
    const bool need = Allocator::metric_type::needs_gradient &&
                      (phase == allocation_phase::warmup || phase == allocation_phase::budgeting);
    std::vector<views_type> fresh;
    fresh.reserve(adapters_.size());
    for (const auto& a : adapters_) fresh.push_back(current_views(a, need, at));
    if (need && options_.check_zero_gradients)
      for (std::size_t k = 0; k < adapters_.size(); ++k)
        if (all_zero(fresh[k]))
          throw missing_gradient_error(
              at + "module '" + adapters_[k].module +
              "': the gradients of lora_A, lora_E and lora_B are all zero, "
              "so the module took no part in this step's loss (its forward() was not called, or its output was "
              "detached) or the gradients were zeroed before step(); AdaLoRA would rank it unimportant for no "
              "reason. Call step(t) after backward() and optimizer.step(), before zero_grad(); to allow it, set "
              "attach_options::check_zero_gradients = false");
    for (std::size_t k = 0; k < adapters_.size(); ++k)
      if (!same_memory(fresh[k], bound_[k])) {
        allocator_->rebind(adapters_[k].module, fresh[k]);
        bound_[k] = fresh[k];
      }
    return allocator_->step(t);
  }

  Allocator& allocator() noexcept { return *allocator_; }
  const Allocator& allocator() const noexcept { return *allocator_; }
  /// The registered adapters, in registration order (their module paths are the allocator's names).
  std::span<const adapter_tensors> adapters() const noexcept { return adapters_; }
  /// The device of the adapters' tensors.
  c10::Device device() const noexcept { return device_; }
  const attach_options& options() const noexcept { return options_; }

private:
  // The views of an adapter's tensors now; missing_gradient_error for an undefined gradient when `need`.
  views_type current_views(const adapter_tensors& a, bool need, const std::string& at) const {
    if (need)
      for (const at::Tensor* p : {&a.lora_A, &a.lora_E, &a.lora_B})
        if (!p->grad().defined())
          throw missing_gradient_error(
              at + "module '" + a.module + "': " +
              (p == &a.lora_A   ? "lora_A"
               : p == &a.lora_E ? "lora_E"
                                : "lora_B") +
              " has no gradient (.grad() is undefined); the importance needs every adapter's gradients: call "
              "step(t) after loss.backward() and optimizer.step(), before zero_grad() (zero_grad(set_to_none) "
              "discards them), and make sure the module is used in forward()");
    for (const at::Tensor* p : {&a.lora_A, &a.lora_E, &a.lora_B}) {
      const at::Tensor& g = p->grad();
      if (g.defined() && g.device() != device_)
        throw usage_error(at + "module '" + a.module + "': a gradient is on " + g.device().str() +
                          " but the parameters are on " + device_.str());
    }
    return adapter_views_of<value_type, memory_space>(a.lora_A, a.lora_E, a.lora_B, a.module);
  }

  static bool same_memory(const views_type& x, const views_type& y) noexcept {
    return x.lora_A.data == y.lora_A.data && x.lora_E.data == y.lora_E.data && x.lora_B.data == y.lora_B.data &&
           x.grad_A.data == y.grad_A.data && x.grad_E.data == y.grad_E.data && x.grad_B.data == y.grad_B.data;
  }

  // λ's gradient first (r elements): only when it is all zero are the others read.
  bool all_zero(const views_type& v) const {
    auto zero = [&](const auto& g) {
      using View = std::remove_cvref_t<decltype(g)>;
      return g.empty() || allocator_->backend().count_if(
                              g.size(), detail::nonzero_element_fn<View>{adalora::detail::flat_accessor<View>(g)}) == 0;
    };
    return zero(v.grad_E) && zero(v.grad_A) && zero(v.grad_B);
  }

  Allocator* allocator_;
  std::vector<adapter_tensors> adapters_;
  attach_options options_;
  std::vector<views_type> bound_;
  c10::Device device_{c10::DeviceType::CPU};
};

/// Registers the adapters among `parameters` (see find_adapters) with `allocator` and returns the binding whose
/// step(t) the training loop calls once per optimizer step.
template <class Allocator, NamedTensorRange R>
attached_allocator<Allocator> attach(Allocator& allocator, const R& parameters, const attach_options& options = {}) {
  return attached_allocator<Allocator>(allocator, find_adapters(parameters, options.adapter_name), options);
}

/// The same for a torch module (or module holder): every PEFT-named adapter among its named_parameters(), e.g. the
/// adalora::libtorch::SVDLinear layers anywhere in it.
template <class Allocator, TorchModule M>
attached_allocator<Allocator> attach(Allocator& allocator, M& module, const attach_options& options = {}) {
  return attached_allocator<Allocator>(allocator, find_adapters(module, options.adapter_name), options);
}

}  // namespace adalora::libtorch
