// adalora._core: the nanobind module of the Python package. One translation unit for the host build: the allocator
// over the fastest host backend the build has (Thrust-OMP where CCCL and OpenMP are found, else Eigen) and over
// Eigen, for float32 and bfloat16 parameters; tensors arrive as DLPack arrays (nanobind's ndarray), without copies.
// The CUDA allocators, when the module is built with them, come from cuda_allocators.cu through
// allocator_iface.hpp.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/filesystem.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/string_view.h>
#include <nanobind/stl/vector.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "adalora/backends/eigen/eigen_backend.hpp"
#include "adalora/core/bfloat16.hpp"
#include "adalora/io/allocator_checkpoint.hpp"
#include "allocator_impl.hpp"
#if ADALORA_PYTHON_HAS_THRUST
#include <omp.h>

#include "adalora/backends/thrust/thrust_backend.hpp"
#endif

namespace nb = nanobind;
using namespace nb::literals;

namespace adalora::python {
namespace {

// ---- exceptions ---------------------------------------------------------------------------------------------------

// The Python classes of the library's exceptions (made once, at import), and the translator that raises them with
// the C++ message unchanged.
PyObject* exc_error = nullptr;
PyObject* exc_config = nullptr;
PyObject* exc_shape = nullptr;
PyObject* exc_missing_gradient = nullptr;
PyObject* exc_non_finite = nullptr;
PyObject* exc_usage = nullptr;
PyObject* exc_format = nullptr;

PyObject* new_exception(nb::module_& m, const char* name, const char* doc, PyObject* base, PyObject* extra = nullptr) {
  const std::string qualified = std::string("adalora.") + name;
  PyObject* bases = extra ? PyTuple_Pack(2, base, extra) : PyTuple_Pack(1, base);
  PyObject* type = PyErr_NewExceptionWithDoc(qualified.c_str(), doc, bases, nullptr);
  Py_DECREF(bases);
  if (!type) throw nb::python_error();
  m.attr(name) = nb::handle(type);
  return type;
}

void register_exceptions(nb::module_& m) {
  exc_error = new_exception(m, "Error", "Base of every error adalora raises (C++: adalora::error).", PyExc_RuntimeError);
  exc_config = new_exception(m, "ConfigError", "A configuration value is out of range or inconsistent (C++: config_error).",
                             exc_error, PyExc_ValueError);
  exc_shape = new_exception(m, "ShapeError", "A tensor has the wrong shape, or an adapter's tensors disagree (C++: shape_error).",
                            exc_error, PyExc_ValueError);
  exc_missing_gradient = new_exception(
      m, "MissingGradientError", "A gradient is absent where the importance metric needs one (C++: missing_gradient_error).",
      exc_error);
  exc_non_finite = new_exception(m, "NonFiniteError", "A parameter or gradient holds NaN or infinity (C++: non_finite_error).",
                                 exc_error);
  exc_usage = new_exception(m, "UsageError", "The allocator was driven out of order (C++: usage_error).", exc_error);
  exc_format = new_exception(m, "FormatError", "A file or state is malformed (C++: format_error).", exc_error,
                             PyExc_ValueError);
  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const config_error& e) {
      PyErr_SetString(exc_config, e.what());
    } catch (const shape_error& e) {
      PyErr_SetString(exc_shape, e.what());
    } catch (const missing_gradient_error& e) {
      PyErr_SetString(exc_missing_gradient, e.what());
    } catch (const non_finite_error& e) {
      PyErr_SetString(exc_non_finite, e.what());
    } catch (const usage_error& e) {
      PyErr_SetString(exc_usage, e.what());
    } catch (const format_error& e) {
      PyErr_SetString(exc_format, e.what());
    } catch (const error& e) {
      PyErr_SetString(exc_error, e.what());
    }
  });
}

// ---- backends -----------------------------------------------------------------------------------------------------

#if ADALORA_PYTHON_HAS_THRUST
constexpr const char* host_default_backend = "thrust-omp";
#else
constexpr const char* host_default_backend = "eigen";
#endif

std::vector<std::string> available_backends() {
  std::vector<std::string> b{"eigen"};
#if ADALORA_PYTHON_HAS_THRUST
  b.emplace_back("thrust-omp");
#endif
#if ADALORA_PYTHON_HAS_CUDA
  b.emplace_back("cuda");
#endif
  return b;
}

bool is_device_backend(const std::string& b) { return b == "cuda"; }

template <class T>
std::unique_ptr<allocator_iface> make_host(const std::string& backend, const adalora_config& c, dtype_kind d) {
#if ADALORA_PYTHON_HAS_THRUST
  if (backend == "thrust-omp") return std::make_unique<allocator_impl<thrust_omp_backend, T>>(c, thrust_omp_backend{}, d);
#endif
  (void)backend;
  return std::make_unique<allocator_impl<eigen_backend, T>>(c, eigen_backend{}, d);
}

std::unique_ptr<allocator_iface> make_allocator(const std::string& backend, const adalora_config& c, dtype_kind d,
                                                std::uintptr_t stream, int device = 0) {
  if (is_device_backend(backend)) {
#if ADALORA_PYTHON_HAS_CUDA
    return make_cuda_allocator(c, d, stream, device);
#else
    (void)stream, (void)device;
    throw usage_error("backend 'cuda': this adalora module was built without CUDA");
#endif
  }
  return d == dtype_kind::float32 ? make_host<float>(backend, c, d) : make_host<bfloat16>(backend, c, d);
}

// ---- tensors ------------------------------------------------------------------------------------------------------

using any_array = nb::ndarray<nb::ro>;  // any dtype, device, shape; read-only access suffices to look at it
using writable_array = nb::ndarray<>;

const char* device_name(int type) {
  switch (type) {
    case nb::device::cpu::value: return "cpu";
    case nb::device::cuda::value: return "cuda";
    case nb::device::cuda_host::value: return "cuda_host";
    case nb::device::cuda_managed::value: return "cuda_managed";
    case nb::device::rocm::value: return "rocm";
    case nb::device::metal::value: return "metal";
    default: return "an unknown device";
  }
}

std::string dtype_text(nb::dlpack::dtype t) {
  using code = nb::dlpack::dtype_code;
  const char* kind = t.code == (uint8_t)code::Float    ? "float"
                     : t.code == (uint8_t)code::Bfloat ? "bfloat"
                     : t.code == (uint8_t)code::Int    ? "int"
                     : t.code == (uint8_t)code::UInt   ? "uint"
                     : t.code == (uint8_t)code::Bool   ? "bool"
                     : t.code == (uint8_t)code::Complex ? "complex"
                                                         : "unknown";
  return std::string(kind) + std::to_string(t.bits);
}

/// A DLPack array the bindings hold on to (so its memory outlives the allocator's view of it), with its layout.
struct held_tensor {
  nb::object owner;  // the Python object passed in (kept alive)
  raw_tensor raw;
  dtype_kind dtype = dtype_kind::float32;
  int device_type = nb::device::cpu::value;
  int device_id = 0;
};

/// torch tensors that require grad refuse DLPack export: their detached alias shares the memory.
nb::object exportable(nb::handle h) {
  if (nb::hasattr(h, "requires_grad") && nb::hasattr(h, "detach") && nb::cast<bool>(h.attr("requires_grad")))
    return h.attr("detach")();
  return nb::borrow(h);
}

held_tensor hold(nb::handle obj, const std::string& adapter, const char* what, bool writable) {
  held_tensor t;
  t.owner = nb::borrow(obj);
  if (obj.is_none()) return t;  // an absent gradient
  const nb::object src = exportable(obj);
  any_array a;
  const std::string where = "adapter '" + adapter + "': " + what;
  if (writable) {
    writable_array w;
    if (!nb::try_cast(src, w, false)) {
      if (nb::try_cast(src, a, false))
        throw nb::type_error((where + " is read-only; the allocator masks the singular values in place, so it needs "
                                      "a writable array (a JAX array cannot be one: pass numpy, torch or CuPy)")
                                 .c_str());
      throw nb::type_error((where + " is not an array (a DLPack-capable tensor: torch, numpy, JAX, CuPy), got " +
                            nb::type_name(obj.type()).c_str())
                               .c_str());
    }
    a = any_array(w);
  } else if (!nb::try_cast(src, a, false)) {
    throw nb::type_error((where + " is not an array (a DLPack-capable tensor: torch, numpy, JAX, CuPy), got " +
                          nb::type_name(obj.type()).c_str())
                             .c_str());
  }
  const auto dt = a.dtype();
  if (dt == nb::dtype<float>())
    t.dtype = dtype_kind::float32;
  else if (dt.code == (uint8_t)nb::dlpack::dtype_code::Bfloat && dt.bits == 16 && dt.lanes == 1)
    t.dtype = dtype_kind::bfloat16;
  else
    throw nb::type_error((where + " has dtype " + dtype_text(dt) + "; the allocator takes float32 or bfloat16 tensors")
                             .c_str());
  if (a.ndim() < 1 || a.ndim() > 2) {
    std::string dims = "(";
    for (std::size_t d = 0; d < a.ndim(); ++d) dims += (d ? ", " : "") + std::to_string(a.shape(d));
    throw shape_error(where + " has shape " + dims + (a.ndim() == 1 ? ",)" : ")") +
                      "; expected a matrix (lora_A, lora_B) or a vector (lora_E: (r,) or (r, 1))");
  }
  t.raw.ndim = a.ndim();
  for (std::size_t d = 0; d < a.ndim(); ++d) {
    t.raw.extents[d] = a.shape(d);
    t.raw.strides[d] = static_cast<std::ptrdiff_t>(a.stride(d));
  }
  t.raw.data = const_cast<void*>(a.data());
  t.device_type = a.device_type();
  t.device_id = a.device_id();
  t.owner = nb::borrow(obj);
  return t;
}

// ---- the allocator ------------------------------------------------------------------------------------------------

struct step_report_py : step_report {};

class py_rank_allocator {
public:
  py_rank_allocator(const adalora_config& config, std::string backend, std::uintptr_t stream)
      : backend_(std::move(backend)), stream_(stream) {
    const auto avail = available_backends();
    if (backend_ != "auto" && std::find(avail.begin(), avail.end(), backend_) == avail.end()) {
      std::string list;
      for (const auto& b : avail) list += (list.empty() ? "" : ", ") + b;
      throw nb::value_error(("backend '" + backend_ + "' is not one of this build's: auto, " + list +
                             (backend_ == "cuda" ? " (build the package with -C cmake.define.ADALORA_PYTHON_CUDA=ON)" : ""))
                                .c_str());
    }
    // validates the config (ConfigError); rebuilt for the adapters' backend and dtype at the first add_adapter
    impl_ = make_allocator(backend_ == "auto" || backend_ == "cuda" ? host_default_backend : backend_, config,
                           dtype_kind::float32, stream_);
  }

  std::size_t add_adapter(const std::string& name, nb::handle A, nb::handle E, nb::handle B, nb::handle gA,
                          nb::handle gE, nb::handle gB) {
    std::array<held_tensor, 6> t = hold_all(name, A, E, B, gA, gE, gB);
    if (impl_->adapter_count() == 0 && !impl_->last_step()) choose_impl(name, t);
    check_placement(name, t);
    const std::size_t i = impl_->add_adapter(name, raw_of(t));
    held_.push_back(std::move(t));
    return i;
  }

  void rebind(const std::string& name, nb::handle A, nb::handle E, nb::handle B, nb::handle gA, nb::handle gE,
              nb::handle gB) {
    const std::size_t i = impl_->adapter_index(name);
    std::array<held_tensor, 6> t = hold_all(name, A, E, B, gA, gE, gB);
    check_placement(name, t);
    impl_->rebind(i, raw_of(t));
    held_[i] = std::move(t);
  }

  void rebind_gradients(const std::string& name, nb::handle gA, nb::handle gE, nb::handle gB) {
    const std::size_t i = impl_->adapter_index(name);
    std::array<held_tensor, 6> t = held_[i];
    t[3] = hold(gA, name, "grad_A", false);
    t[4] = hold(gE, name, "grad_E", false);
    t[5] = hold(gB, name, "grad_B", false);
    check_placement(name, t);
    impl_->rebind_gradients(i, t[3].raw, t[4].raw, t[5].raw);
    held_[i] = std::move(t);
  }

  /// The drop-in's per-step path: the current torch gradient of every registered tensor, 3 per adapter in
  /// registration order (grad_A, grad_E, grad_B; None where absent). A gradient object seen at the previous call
  /// is skipped; a new one (zero_grad(set_to_none=True) makes new ones each step) is bound by its data_ptr() when
  /// its strides are its parameter's (torch already guarantees its shape, dtype and device), else through DLPack.
  /// Returns the number of adapters rebound.
  std::size_t follow_torch_gradients(nb::sequence grads) {
    const std::size_t n = impl_->adapter_count();
    if (nb::len(grads) != 3 * n)
      throw nb::value_error(("_follow_torch_gradients: expected " + std::to_string(3 * n) + " gradients (3 per adapter), got " +
                             std::to_string(nb::len(grads)))
                                .c_str());
    // interned once and never released: a static nb::str would be decref'd after the interpreter is gone
    static const nb::handle data_ptr_name = nb::str("data_ptr").release();
    static const nb::handle stride_name = nb::str("stride").release();
    std::size_t rebound = 0;
    for (std::size_t i = 0; i < n; ++i) {
      std::array<held_tensor, 6>& h = held_[i];
      nb::object g[3] = {grads[3 * i], grads[3 * i + 1], grads[3 * i + 2]};
      if (g[0].is(h[3].owner) && g[1].is(h[4].owner) && g[2].is(h[5].owner)) continue;
      std::array<held_tensor, 3> next;
      const std::string& name = impl_->adapter_name(i);
      static const char* what[3] = {"grad_A", "grad_E", "grad_B"};
      for (int k = 0; k < 3; ++k) {
        const held_tensor& param = h[k];
        if (g[k].is_none()) {
          next[k].owner = g[k];
          continue;
        }
        bool fast = false;
        if (nb::hasattr(g[k], data_ptr_name)) {
          const nb::object st = g[k].attr(stride_name)();
          if (nb::isinstance<nb::tuple>(st) && nb::len(st) == param.raw.ndim) {
            fast = true;
            for (std::size_t d = 0; d < param.raw.ndim && fast; ++d)
              fast = nb::cast<std::int64_t>(st[d]) == param.raw.strides[d];
          }
        }
        if (fast) {
          next[k] = param;
          next[k].owner = g[k];
          next[k].raw.data = reinterpret_cast<void*>(nb::cast<std::uintptr_t>(g[k].attr(data_ptr_name)()));
        } else {
          next[k] = hold(g[k], name, what[k], false);
        }
      }
      std::array<held_tensor, 6> t = h;
      t[3] = std::move(next[0]);
      t[4] = std::move(next[1]);
      t[5] = std::move(next[2]);
      check_placement(name, t);
      impl_->rebind_gradients(i, t[3].raw, t[4].raw, t[5].raw);
      h = std::move(t);
      ++rebound;
    }
    return rebound;
  }

  step_report step(std::int64_t t) {
    nb::gil_scoped_release release;
    return impl_->step(t);
  }

  std::string phase_of(std::int64_t t) const { return phase_name(impl_->phase_of(t)); }

  allocator_iface& impl() { return *impl_; }
  const allocator_iface& impl() const { return *impl_; }
  const std::string& requested_backend() const { return backend_; }

  std::vector<std::string> adapter_names() const {
    std::vector<std::string> n;
    for (std::size_t i = 0; i < impl_->adapter_count(); ++i) n.push_back(impl_->adapter_name(i));
    return n;
  }

  bool gradients_all_zero() const {
    nb::gil_scoped_release release;
    return impl_->gradients_all_zero();
  }

private:
  std::array<held_tensor, 6> hold_all(const std::string& name, nb::handle A, nb::handle E, nb::handle B, nb::handle gA,
                                      nb::handle gE, nb::handle gB) const {
    if (A.is_none() || E.is_none() || B.is_none())
      throw nb::type_error(("adapter '" + name + "': lora_A, lora_E and lora_B are required (only gradients may be None)").c_str());
    return {hold(A, name, "lora_A", false), hold(E, name, "lora_E", true), hold(B, name, "lora_B", false),
            hold(gA, name, "grad_A", false), hold(gE, name, "grad_E", false), hold(gB, name, "grad_B", false)};
  }

  static raw_adapter raw_of(const std::array<held_tensor, 6>& t) {
    return {t[0].raw, t[1].raw, t[2].raw, t[3].raw, t[4].raw, t[5].raw};
  }

  // The first adapter decides the allocator's backend (auto: by its device) and dtype.
  void choose_impl(const std::string& name, const std::array<held_tensor, 6>& t) {
    const bool device = t[0].device_type == nb::device::cuda::value;
    std::string backend = backend_;
    if (backend == "auto") {
      if (device) {
#if ADALORA_PYTHON_HAS_CUDA
        backend = "cuda";
#else
        throw nb::type_error(("adapter '" + name + "': lora_A is on cuda:" + std::to_string(t[0].device_id) +
                              ", but this adalora module was built without CUDA (pip install ./python "
                              "-C cmake.define.ADALORA_PYTHON_CUDA=ON)")
                                 .c_str());
#endif
      } else {
        backend = host_default_backend;
      }
    }
    if (backend != impl_->backend_name() || t[0].dtype != impl_->dtype() || (device && t[0].device_id != device_id_)) {
      adalora_config c = impl_->config();
      impl_ = make_allocator(backend, c, t[0].dtype, stream_, t[0].device_id);
    }
    device_type_ = t[0].device_type;
    device_id_ = t[0].device_id;
  }

  // Every tensor of an adapter in the allocator's memory space and dtype.
  void check_placement(const std::string& name, const std::array<held_tensor, 6>& t) const {
    static const char* what[6] = {"lora_A", "lora_E", "lora_B", "grad_A", "grad_E", "grad_B"};
    const bool device = impl_->on_device();
    for (int k = 0; k < 6; ++k) {
      if (t[k].owner.is_none()) continue;
      const bool ok_space = device ? t[k].device_type == nb::device::cuda::value && t[k].device_id == device_id_
                                   : t[k].device_type == nb::device::cpu::value;
      if (!ok_space) {
        std::string want = device ? "cuda:" + std::to_string(device_id_) : "cpu";
        throw nb::type_error(("adapter '" + name + "': " + what[k] + " is on " + device_name(t[k].device_type) +
                              (t[k].device_type == nb::device::cuda::value ? ":" + std::to_string(t[k].device_id) : "") +
                              ", but the allocator (backend '" + impl_->backend_name() + "') reads " + want +
                              " memory")
                                 .c_str());
      }
      if (t[k].dtype != impl_->dtype())
        throw nb::type_error(("adapter '" + name + "': " + what[k] + " is " + dtype_name(t[k].dtype) +
                              " but the allocator's tensors are " + dtype_name(impl_->dtype()) +
                              " (one dtype for every adapter, set by the first one registered)")
                                 .c_str());
    }
  }

  std::string backend_;
  std::uintptr_t stream_ = 0;
  std::unique_ptr<allocator_iface> impl_;
  std::vector<std::array<held_tensor, 6>> held_;
  int device_type_ = nb::device::cpu::value;
  int device_id_ = 0;
};

// ---- state dicts --------------------------------------------------------------------------------------------------

template <class T>
nb::ndarray<nb::numpy, T, nb::ndim<1>> numpy_of(std::vector<T> v) {
  auto* heap = new std::vector<T>(std::move(v));
  nb::capsule owner(heap, [](void* p) noexcept { delete static_cast<std::vector<T>*>(p); });
  return nb::ndarray<nb::numpy, T, nb::ndim<1>>(heap->data(), {heap->size()}, owner);
}

nb::dict config_dict(const adalora_config& c) {
  nb::dict d;
  d["init_r"] = c.init_r;
  d["target_r"] = c.target_r;
  d["tinit"] = c.tinit;
  d["tfinal"] = c.tfinal;
  d["deltaT"] = c.deltaT;
  d["beta1"] = c.beta1;
  d["beta2"] = c.beta2;
  d["orth_reg_weight"] = c.orth_reg_weight;
  d["total_step"] = c.total_step;
  d["lora_alpha"] = c.lora_alpha;
  d["lora_dropout"] = c.lora_dropout;
  return d;
}

nb::dict state_dict_of(const allocator_state& s) {
  nb::dict d;
  d["format"] = io::allocator_checkpoint_format;
  d["config"] = config_dict(s.config);
  d["metric"] = s.metric;
  d["schedule"] = s.schedule;
  nb::list adapters;
  for (const auto& a : s.adapters) {
    nb::dict e;
    e["name"] = a.name;
    e["r"] = a.r;
    e["in"] = a.in;
    e["out"] = a.out;
    adapters.append(e);
  }
  d["adapters"] = adapters;
  d["last_step"] = s.last_step ? nb::object(nb::int_(*s.last_step)) : nb::none();
  d["budget"] = s.budget;
  d["threshold"] = s.threshold ? nb::object(nb::float_(static_cast<double>(*s.threshold))) : nb::none();
  d["frozen"] = s.frozen;
  d["importance_live"] = s.importance_live;
  d["importance"] = numpy_of(s.importance);
  d["keep"] = numpy_of(s.keep);
  d["scores"] = numpy_of(s.scores);
  return d;
}

template <class T>
std::vector<T> vector_from(nb::handle obj, const char* key) {
  nb::object src = exportable(obj);
  if (nb::hasattr(src, "cpu") && nb::hasattr(src, "device")) src = src.attr("cpu")();  // a torch tensor elsewhere
  nb::ndarray<const T, nb::device::cpu> a;
  if (!nb::try_cast(src, a, true))
    throw format_error(std::string("load_state_dict: '") + key + "' is not a CPU array of " +
                       (std::is_same_v<T, float> ? "float32" : "uint8") + " values");
  std::vector<T> v;
  v.reserve(a.size());
  const auto view = a.template view<const T, nb::ndim<1>>();
  if (a.ndim() != 1) throw format_error(std::string("load_state_dict: '") + key + "' is not one-dimensional");
  for (std::size_t i = 0; i < a.shape(0); ++i) v.push_back(view(i));
  return v;
}

allocator_state state_from_dict(nb::dict d) {
  auto get = [&](const char* key) -> nb::object {
    if (!d.contains(key)) throw format_error(std::string("load_state_dict: the state has no '") + key + "'");
    return d[key];
  };
  allocator_state s;
  try {
    if (d.contains("format") && nb::cast<std::string>(d["format"]) != io::allocator_checkpoint_format)
      throw format_error("load_state_dict: not an allocator state (format '" + nb::cast<std::string>(d["format"]) + "')");
    nb::dict c = nb::cast<nb::dict>(get("config"));
    auto ci = [&](const char* k) {
      if (!c.contains(k)) throw format_error(std::string("load_state_dict: the state's config has no '") + k + "'");
      return c[k];
    };
    s.config.init_r = nb::cast<std::int64_t>(ci("init_r"));
    s.config.target_r = nb::cast<std::int64_t>(ci("target_r"));
    s.config.tinit = nb::cast<std::int64_t>(ci("tinit"));
    s.config.tfinal = nb::cast<std::int64_t>(ci("tfinal"));
    s.config.deltaT = nb::cast<std::int64_t>(ci("deltaT"));
    s.config.beta1 = nb::cast<double>(ci("beta1"));
    s.config.beta2 = nb::cast<double>(ci("beta2"));
    s.config.orth_reg_weight = nb::cast<double>(ci("orth_reg_weight"));
    s.config.total_step = nb::cast<std::int64_t>(ci("total_step"));
    s.config.lora_alpha = nb::cast<double>(ci("lora_alpha"));
    s.config.lora_dropout = nb::cast<double>(ci("lora_dropout"));
    s.metric = nb::cast<std::string>(get("metric"));
    s.schedule = nb::cast<std::string>(get("schedule"));
    for (nb::handle a : nb::cast<nb::list>(get("adapters"))) {
      nb::dict e = nb::cast<nb::dict>(a);
      s.adapters.push_back({nb::cast<std::string>(e["name"]), nb::cast<std::size_t>(e["r"]),
                            nb::cast<std::size_t>(e["in"]), nb::cast<std::size_t>(e["out"])});
    }
    const nb::object last = get("last_step");
    if (!last.is_none()) s.last_step = nb::cast<std::int64_t>(last);
    s.budget = nb::cast<std::int64_t>(get("budget"));
    const nb::object thr = get("threshold");
    if (!thr.is_none()) s.threshold = static_cast<float>(nb::cast<double>(thr));
    s.frozen = nb::cast<bool>(get("frozen"));
    s.importance_live = nb::cast<bool>(get("importance_live"));
  } catch (const nb::cast_error&) {
    throw format_error("load_state_dict: a field of the state has the wrong type");
  } catch (const nb::python_error& e) {
    throw format_error(std::string("load_state_dict: a field of the state has the wrong type (") + e.what() + ")");
  }
  s.config.validate();
  s.importance = vector_from<float>(get("importance"), "importance");
  if (!s.importance_live) s.importance.clear();
  const nb::object keep = get("keep");
  std::vector<std::uint8_t> k;
  {
    nb::object src = exportable(keep);
    if (nb::hasattr(src, "cpu") && nb::hasattr(src, "device")) src = src.attr("cpu")();
    nb::ndarray<nb::ro, nb::device::cpu, nb::ndim<1>> a;
    if (!nb::try_cast(src, a, false)) throw format_error("load_state_dict: 'keep' is not a one-dimensional CPU array");
    const auto dt = a.dtype();
    for (std::size_t i = 0; i < a.shape(0); ++i) {
      const char* p = static_cast<const char*>(a.data()) + static_cast<std::ptrdiff_t>(i) * a.stride(0) * a.itemsize();
      double v;
      if (dt == nb::dtype<std::uint8_t>() || dt == nb::dtype<bool>())
        v = *reinterpret_cast<const std::uint8_t*>(p);
      else if (dt == nb::dtype<float>())
        v = *reinterpret_cast<const float*>(p);
      else
        throw format_error("load_state_dict: 'keep' is " + dtype_text(dt) + "; expected uint8, bool or float32");
      if (v != 0.0 && v != 1.0) throw format_error("load_state_dict: 'keep' holds a value other than 0 or 1");
      k.push_back(v != 0.0 ? 1 : 0);
    }
  }
  s.keep = std::move(k);
  s.scores = vector_from<float>(get("scores"), "scores");
  return s;
}

adalora_config make_config(std::int64_t init_r, std::int64_t target_r, std::int64_t tinit, std::int64_t tfinal,
                           std::int64_t deltaT, double beta1, double beta2, double orth_reg_weight,
                           std::int64_t total_step, double lora_alpha, double lora_dropout) {
  adalora_config c;
  c.init_r = init_r;
  c.target_r = target_r;
  c.tinit = tinit;
  c.tfinal = tfinal;
  c.deltaT = deltaT;
  c.beta1 = beta1;
  c.beta2 = beta2;
  c.orth_reg_weight = orth_reg_weight;
  c.total_step = total_step;
  c.lora_alpha = lora_alpha;
  c.lora_dropout = lora_dropout;
  return c;
}

std::string config_repr(const adalora_config& c) {
  auto num = [](double v) {
    std::string s = nb::cast<std::string>(nb::repr(nb::float_(v)));
    return s;
  };
  return "adalora.Config(init_r=" + std::to_string(c.init_r) + ", target_r=" + std::to_string(c.target_r) +
         ", tinit=" + std::to_string(c.tinit) + ", tfinal=" + std::to_string(c.tfinal) +
         ", deltaT=" + std::to_string(c.deltaT) + ", beta1=" + num(c.beta1) + ", beta2=" + num(c.beta2) +
         ", orth_reg_weight=" + num(c.orth_reg_weight) + ", total_step=" + std::to_string(c.total_step) +
         ", lora_alpha=" + num(c.lora_alpha) + ", lora_dropout=" + num(c.lora_dropout) + ")";
}

std::string report_repr(const step_report& r) {
  std::string thr = r.threshold ? nb::cast<std::string>(nb::repr(nb::float_(static_cast<double>(*r.threshold)))) : "None";
  return "adalora.StepReport(step=" + std::to_string(r.step) + ", phase='" + phase_name(r.phase) +
         "', budget=" + std::to_string(r.budget) + ", importance_updated=" + (r.importance_updated ? "True" : "False") +
         ", masked=" + (r.masked ? "True" : "False") + ", threshold=" + thr + ")";
}

}  // namespace
}  // namespace adalora::python

NB_MODULE(_core, m) {
  using namespace adalora;
  using namespace adalora::python;
  m.doc() = "adalora's C++ rank allocator (PEFT's AdaLoRA RankAllocator, exact and fused) for DLPack tensors";

  register_exceptions(m);

  m.attr("backends") = available_backends();
  m.attr("default_cpu_backend") = host_default_backend;
  m.attr("has_cuda") = bool(ADALORA_PYTHON_HAS_CUDA);
  m.attr("has_thrust") = bool(ADALORA_PYTHON_HAS_THRUST);
  m.attr("checkpoint_format") = io::allocator_checkpoint_format;

  m.def(
      "set_num_threads",
      [](int n) {
        if (n < 1) throw nb::value_error("set_num_threads: need at least 1 thread");
#if ADALORA_PYTHON_HAS_THRUST
        omp_set_num_threads(n);
#endif
      },
      "n"_a, "Threads of the Thrust-OMP backend (its OpenMP runtime); default: OMP_NUM_THREADS, else every core.");
  m.def(
      "get_num_threads",
      []() {
#if ADALORA_PYTHON_HAS_THRUST
        return omp_get_max_threads();
#else
        return 1;
#endif
      },
      "Threads the Thrust-OMP backend uses (1 without it).");

  nb::class_<adalora_config>(m, "Config",
                             "AdaLoRA's hyper-parameters with PEFT's names and defaults (C++: adalora::adalora_config). "
                             "total_step has no default and must be set.")
      .def(nb::new_([](std::int64_t init_r, std::int64_t target_r, std::int64_t tinit, std::int64_t tfinal,
                       std::int64_t deltaT, double beta1, double beta2, double orth_reg_weight, std::int64_t total_step,
                       double lora_alpha, double lora_dropout) {
             return make_config(init_r, target_r, tinit, tfinal, deltaT, beta1, beta2, orth_reg_weight, total_step,
                                lora_alpha, lora_dropout);
           }),
           nb::kw_only(), "init_r"_a = 12, "target_r"_a = 8, "tinit"_a = 0, "tfinal"_a = 0, "deltaT"_a = 1,
           "beta1"_a = 0.85, "beta2"_a = 0.85, "orth_reg_weight"_a = 0.5, "total_step"_a = 0, "lora_alpha"_a = 8.0,
           "lora_dropout"_a = 0.0)
      .def_rw("init_r", &adalora_config::init_r)
      .def_rw("target_r", &adalora_config::target_r)
      .def_rw("tinit", &adalora_config::tinit)
      .def_rw("tfinal", &adalora_config::tfinal)
      .def_rw("deltaT", &adalora_config::deltaT)
      .def_rw("beta1", &adalora_config::beta1)
      .def_rw("beta2", &adalora_config::beta2)
      .def_rw("orth_reg_weight", &adalora_config::orth_reg_weight)
      .def_rw("total_step", &adalora_config::total_step)
      .def_rw("lora_alpha", &adalora_config::lora_alpha)
      .def_rw("lora_dropout", &adalora_config::lora_dropout)
      .def_prop_ro("final_step", &adalora_config::final_step, "T − tfinal: the step that fixes the final pattern")
      .def("validate", &adalora_config::validate, "Raises ConfigError naming the first invalid field.")
      .def("to_dict", &config_dict)
      .def("__repr__", &config_repr)
      .def("__eq__", [](const adalora_config& a, const adalora_config& b) { return config_repr(a) == config_repr(b); });

  nb::class_<step_report>(m, "StepReport", "What one RankAllocator.step(t) did (C++: adalora::step_report).")
      .def_ro("step", &step_report::step)
      .def_prop_ro("phase", [](const step_report& r) { return std::string(phase_name(r.phase)); },
                   "'warmup', 'budgeting', 'final_force' or 'final_pattern'")
      .def_prop_ro("trace_phase", [](const step_report& r) { return std::string(trace_phase_name(r.phase)); },
                   "PEFT's word for the phase, as in the reference traces: 'update', 'final_force', 'final_pattern'")
      .def_ro("budget", &step_report::budget)
      .def_ro("importance_updated", &step_report::importance_updated)
      .def_ro("masked", &step_report::masked)
      .def_ro("threshold", &step_report::threshold)
      .def("__repr__", &report_repr);

  nb::class_<py_rank_allocator>(
      m, "RankAllocator",
      "adalora::rank_allocator over DLPack tensors (torch, numpy, JAX, CuPy): PEFT's sensitivity × uncertainty "
      "importance and cubic budget schedule. Register views of every adapter's tensors with add_adapter(), then call "
      "step(t) once per optimizer step, after optimizer.step() and before zeroing the gradients. The tensors are not "
      "copied: λ (lora_E) is masked in place. Custom importance metrics and schedules are a C++ feature.")
      .def(nb::init<const adalora_config&, std::string, std::uintptr_t>(), "config"_a, "backend"_a = "auto",
           "stream"_a = 0,
           "backend: 'auto' (CUDA tensors: 'cuda'; CPU tensors: default_cpu_backend), 'eigen', 'thrust-omp' or "
           "'cuda' (see adalora.backends). stream: the cudaStream_t of the CUDA backend (0: the legacy default stream).")
      .def("add_adapter", &py_rank_allocator::add_adapter, "name"_a, "lora_A"_a.none(), "lora_E"_a.none(), "lora_B"_a.none(),
           "grad_A"_a.none() = nb::none(), "grad_E"_a.none() = nb::none(), "grad_B"_a.none() = nb::none(),
           "Registers an adapter (only before the first step): lora_A (r, in), lora_E (r,) or (r, 1), lora_B (out, r) "
           "and their gradients (None until they exist). Returns its index.")
      .def("rebind", &py_rank_allocator::rebind, "name"_a, "lora_A"_a.none(), "lora_E"_a.none(), "lora_B"_a.none(),
           "grad_A"_a.none() = nb::none(), "grad_E"_a.none() = nb::none(), "grad_B"_a.none() = nb::none(),
           "Points a registered adapter at new tensors of the same shapes.")
      .def("rebind_gradients", &py_rank_allocator::rebind_gradients, "name"_a, "grad_A"_a.none(), "grad_E"_a.none(),
           "grad_B"_a.none(), "Points a registered adapter at new gradients (e.g. after zero_grad(set_to_none=True)).")
      .def("_follow_torch_gradients", &py_rank_allocator::follow_torch_gradients, "grads"_a)
      .def("step", &py_rank_allocator::step, "t"_a,
           "Runs the allocator for optimizer step t (steps strictly increase) and returns its StepReport.")
      .def("phase_of", &py_rank_allocator::phase_of, "t"_a)
      .def("rank_pattern", [](const py_rank_allocator& a, std::string_view n) { return a.impl().rank_pattern(n); },
           "name"_a, "Which singular values the latest selection keeps (all True before one).")
      .def("ranks", [](const py_rank_allocator& a) { return a.impl().ranks(); },
           "The rank of each adapter under the latest selection, in registration order.")
      .def("triplet_scores", [](const py_rank_allocator& a, std::string_view n) { return a.impl().triplet_scores(n); },
           "name"_a, "The triplet scores of the latest selection (empty before one).")
      .def("gradients_all_zero", &py_rank_allocator::gradients_all_zero,
           "True when every registered gradient is absent or all zero (an allocator called after zero_grad()).")
      .def_prop_ro("budget", [](const py_rank_allocator& a) { return a.impl().budget(); },
                   "The budget at the last step (b0 before the first step).")
      .def_prop_ro("threshold", [](const py_rank_allocator& a) { return a.impl().threshold(); },
                   "The threshold of the latest selection that pruned something (None before one).")
      .def_prop_ro("initial_budget", [](const py_rank_allocator& a) { return a.impl().initial_budget(); })
      .def_prop_ro("target_budget", [](const py_rank_allocator& a) { return a.impl().target_budget(); })
      .def_prop_ro("last_step", [](const py_rank_allocator& a) { return a.impl().last_step(); })
      .def_prop_ro("pattern_frozen", [](const py_rank_allocator& a) { return a.impl().pattern_frozen(); })
      .def_prop_ro("importance_live", [](const py_rank_allocator& a) { return a.impl().importance_live(); })
      .def_prop_ro("adapter_count", [](const py_rank_allocator& a) { return a.impl().adapter_count(); })
      .def_prop_ro("adapter_names", &py_rank_allocator::adapter_names)
      .def_prop_ro("backend", [](const py_rank_allocator& a) { return std::string(a.impl().backend_name()); },
                   "The backend in use (decided by the first adapter when 'auto').")
      .def_prop_ro("dtype", [](const py_rank_allocator& a) { return std::string(dtype_name(a.impl().dtype())); })
      .def_prop_ro("config", [](const py_rank_allocator& a) { return a.impl().config(); })
      .def("__len__", [](const py_rank_allocator& a) { return a.impl().adapter_count(); })
      .def(
          "state_dict", [](const py_rank_allocator& a) { return state_dict_of(a.impl().save_state()); },
          "The whole state (config, progress, importance, pattern) as a dict of plain values and numpy arrays: "
          "load_state_dict() on an allocator with the same config and adapters resumes bit for bit.")
      .def(
          "load_state_dict", [](py_rank_allocator& a, nb::dict d) { a.impl().restore_state(state_from_dict(d)); },
          "state"_a)
      .def(
          "save", [](const py_rank_allocator& a, const std::filesystem::path& p) {
            io::save_allocator_checkpoint(p, a.impl().save_state());
          },
          "path"_a, "Writes the allocator checkpoint (safetensors, format adalora-checkpoint/allocator/1).")
      .def(
          "load", [](py_rank_allocator& a, const std::filesystem::path& p) {
            a.impl().restore_state(io::load_allocator_checkpoint(p));
          },
          "path"_a, "Restores a checkpoint written by save() (or by the C++ io::save_checkpoint).")
      .def("__repr__", [](const py_rank_allocator& a) {
        return "adalora.RankAllocator(backend='" + std::string(a.impl().backend_name()) + "', dtype='" +
               dtype_name(a.impl().dtype()) + "', adapters=" + std::to_string(a.impl().adapter_count()) +
               ", budget=" + std::to_string(a.impl().budget()) + ")";
      });
}
