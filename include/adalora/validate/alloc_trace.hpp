// Replays a PEFT allocation trace (format adalora-trace/alloc/1) through rank_allocator and compares every step.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "adalora/allocation/rank_allocator.hpp"
#include "adalora/backends/backend.hpp"
#include "adalora/core/error.hpp"
#include "adalora/io/bounded_json.hpp"
#include "adalora/io/safetensors.hpp"
#include "adalora/validate/trace_result.hpp"

namespace adalora::validate {

/// Tolerances of the comparison (FORMAT.md): Λ and budgets exact, scores and threshold to float32 rounding.
struct alloc_trace_tolerance {
  double score_rtol = 1e-5;
  double score_atol_of_max = 1e-7;  ///< absolute floor, relative to the largest score of the step
};

namespace detail {

inline std::string format_float(double v) {
  std::ostringstream s;
  s.precision(9);
  s << v;
  return s.str();
}

inline const nlohmann::json& require_field(const nlohmann::json& j, const char* key, const std::string& where) {
  return io::json_require(j, key, "alloc trace: " + where);
}

/// __metadata__.`key` of a trace, parsed within io::parse_json's limits.
inline nlohmann::json parse_metadata_json(const io::safetensors_file& f, const char* key) {
  const auto& md = f.metadata();
  const auto it = md.find(key);
  if (it == md.end()) throw format_error("trace: __metadata__ lacks '" + std::string(key) + "'");
  return io::parse_json(it->second, "trace: __metadata__." + std::string(key));
}

/// The config recorded in a trace, in PEFT's names.
inline adalora_config trace_config(const io::safetensors_file& f) {
  const auto j = parse_metadata_json(f, "config");
  adalora_config c;
  auto integer = [&](const char* key) {
    return io::json_int(require_field(j, key, "config"), "alloc trace: config." + std::string(key));
  };
  auto number = [&](const char* key) {
    return io::json_number(require_field(j, key, "config"), "alloc trace: config." + std::string(key));
  };
  c.init_r = integer("init_r");
  c.target_r = integer("target_r");
  c.tinit = integer("tinit");
  c.tfinal = integer("tfinal");
  c.total_step = integer("total_step");
  c.deltaT = integer("deltaT");
  c.beta1 = number("beta1");
  c.beta2 = number("beta2");
  return c;
}

/// Host copies of one adapter's tensors, in PEFT's layout.
struct trace_adapter {
  std::string name;
  std::size_t r = 0, in = 0, out = 0;
  std::vector<float> A, E, B, gA, gE, gB;
};

inline std::vector<std::size_t> shape_of(const io::safetensors_file& f, const std::string& key) {
  return f.info(key).shape;
}

}  // namespace detail

/// Replays `file` on backend `backend`, with the importance state kept as state policy P says (a float32 policy:
/// the traces hold PEFT's exact results), and compares each step with the trace. Malformed traces throw
/// format_error.
template <Backend B, StatePolicy P = in_place_state>
trace_result replay_alloc_trace(const io::safetensors_file& file, B backend = B{},
                                const alloc_trace_tolerance& tol = {}) {
  using namespace detail;
  const adalora_config cfg = trace_config(file);
  const auto names = parse_metadata_json(file, "adapters");
  const auto steps = parse_metadata_json(file, "steps");
  if (!names.is_array() || names.empty()) throw format_error("alloc trace: 'adapters' is not a non-empty list");
  if (!steps.is_array() || steps.empty()) throw format_error("alloc trace: 'steps' is not a non-empty list");
  auto step_of = [](const nlohmann::json& s, const std::string& where) {
    return io::json_int(require_field(s, "t", where), "alloc trace: " + where + ".t");
  };
  const std::int64_t t0 = step_of(steps.front(), "steps[0]");

  // Host tensors for each adapter, their shapes taken from the first recorded step (so bounded by the file).
  std::vector<trace_adapter> hosts;
  for (const auto& n : names) {
    trace_adapter a;
    a.name = io::json_string(n, "alloc trace: an adapter name");
    const std::string p = std::to_string(t0) + "/" + a.name + "/";
    const auto sA = shape_of(file, p + "lora_A"), sB = shape_of(file, p + "lora_B"), sE = shape_of(file, p + "lora_E");
    if (sA.size() != 2 || sB.size() != 2 || sE.empty() || sE.size() > 2 || sE[0] != sA[0] || sB[1] != sA[0])
      throw format_error("alloc trace: adapter '" + a.name + "' has inconsistent shapes");
    a.r = sA[0];
    a.in = sA[1];
    a.out = sB[0];
    a.A.resize(a.r * a.in);
    a.gA.resize(a.r * a.in);
    a.E.resize(a.r);
    a.gE.resize(a.r);
    a.B.resize(a.out * a.r);
    a.gB.resize(a.out * a.r);
    hosts.push_back(std::move(a));
  }

  // The same tensors in the backend's memory, registered with the allocator.
  using buf = buffer_t<B, float>;
  struct mirror {
    buf pA, pE, pB, gA, gE, gB;
  };
  std::vector<mirror> dev;
  rank_allocator<B, sensitivity_uncertainty, cubic_schedule, float, self_communicator, P> alloc(cfg, backend);
  using S = typename B::memory_space;
  for (const auto& h : hosts) {
    dev.push_back(mirror{backend.template allocate<float>(h.A.size()), backend.template allocate<float>(h.r),
                         backend.template allocate<float>(h.B.size()), backend.template allocate<float>(h.A.size()),
                         backend.template allocate<float>(h.r), backend.template allocate<float>(h.B.size())});
    auto& d = dev.back();
    alloc.add_adapter(h.name, {make_matrix_view<S>(d.pA.data(), h.r, h.in), make_vector_view<S>(d.pE.data(), h.r),
                               make_matrix_view<S>(d.pB.data(), h.out, h.r),
                               make_matrix_view<S>(static_cast<const float*>(d.gA.data()), h.r, h.in),
                               make_vector_view<S>(static_cast<const float*>(d.gE.data()), h.r),
                               make_matrix_view<S>(static_cast<const float*>(d.gB.data()), h.out, h.r)});
  }

  trace_result result;
  result.kind = "alloc";
  std::vector<float> got, expected;
  for (const auto& s : steps) {
    const std::int64_t t = step_of(s, "a step");
    const std::string at = "step " + std::to_string(t);
    for (std::size_t k = 0; k < hosts.size(); ++k) {
      auto& h = hosts[k];
      auto& d = dev[k];
      const std::string p = std::to_string(t) + "/" + h.name + "/";
      auto load = [&](const std::string& key, std::vector<float>& host, buf& device) {
        file.read_f32_into(p + key, host);
        backend.copy_from_host(host.data(), host.size(), device.data());
      };
      load("lora_A", h.A, d.pA);
      load("lora_E", h.E, d.pE);
      load("lora_B", h.B, d.pB);
      load("grad/lora_A", h.gA, d.gA);
      load("grad/lora_E", h.gE, d.gE);
      load("grad/lora_B", h.gB, d.gB);
    }
    const step_report rep = alloc.step(t);

    const auto exp_budget = io::json_int(require_field(s, "budget", at), "alloc trace: " + at + ": budget");
    if (rep.budget != exp_budget)
      return trace_result::fail(at + ": budget expected " + std::to_string(exp_budget) + ", got " +
                                std::to_string(rep.budget));
    const bool exp_masked = io::json_bool(require_field(s, "masked", at), "alloc trace: " + at + ": masked");
    if (rep.masked != exp_masked)
      return trace_result::fail(at + ": masked expected " + (exp_masked ? "true" : "false") + ", got " +
                                (rep.masked ? "true" : "false"));
    const auto exp_phase = io::json_string(require_field(s, "phase", at), "alloc trace: " + at + ": phase");
    if (exp_phase != trace_phase_name(rep.phase))
      return trace_result::fail(at + ": phase expected " + exp_phase + ", got " + trace_phase_name(rep.phase));
    const auto& thr = require_field(s, "threshold", at);
    // (a plain double and a flag: g++ 12 -O3 warns falsely that an optional<double> may be used uninitialized)
    const bool has_thr = !thr.is_null();
    const double exp_thr = has_thr ? io::json_number(thr, "alloc trace: " + at + ": threshold") : 0.0;
    if (has_thr != rep.threshold.has_value())
      return trace_result::fail(at + ": threshold expected " + (has_thr ? format_float(exp_thr) : "none") + ", got " +
                                (rep.threshold ? format_float(*rep.threshold) : "none"));

    // Scores (where recorded), with an absolute floor scaled to the step's largest score.
    double max_score = 0.0;
    for (const auto& h : hosts) {
      const std::string key = std::to_string(t) + "/" + h.name + "/score";
      if (!file.contains(key)) continue;
      for (float v : file.read_f32(key)) max_score = std::max(max_score, std::fabs(static_cast<double>(v)));
    }
    const double atol = tol.score_atol_of_max * max_score;
    auto close = [&](double e, double g) {
      return std::fabs(e - g) <= tol.score_rtol * std::max(std::fabs(e), std::fabs(g)) + atol;
    };
    if (rep.threshold && !close(exp_thr, *rep.threshold))
      return trace_result::fail(at + ": threshold expected " + format_float(exp_thr) + ", got " +
                                format_float(*rep.threshold));

    // Each adapter's triplet scores, where the trace has them.
    for (const auto& h : hosts) {
      const std::string key = std::to_string(t) + "/" + h.name + "/score";
      if (!file.contains(key)) continue;
      expected = file.read_f32(key);
      got = alloc.triplet_scores(h.name);
      if (got.size() != expected.size())
        return trace_result::fail(at + ", adapter " + h.name + ": " + std::to_string(expected.size()) +
                                  " scores expected, got " + std::to_string(got.size()));
      for (std::size_t i = 0; i < got.size(); ++i)
        if (!close(expected[i], got[i]))
          return trace_result::fail(at + ", adapter " + h.name + ", score[" + std::to_string(i) + "]: expected " +
                                    format_float(expected[i]) + ", got " + format_float(got[i]));
    }

    for (std::size_t k = 0; k < hosts.size(); ++k) {
      const auto& h = hosts[k];
      const std::string p = std::to_string(t) + "/" + h.name + "/";
      expected = file.read_f32(p + "out/lora_E");
      got.resize(h.r);
      backend.copy_to_host(dev[k].pE.data(), h.r, got.data());
      if (expected.size() != got.size())
        return trace_result::fail(at + ", adapter " + h.name + ": out/lora_E has " +
                                  std::to_string(expected.size()) + " values, the adapter " + std::to_string(h.r));
      for (std::size_t i = 0; i < got.size(); ++i)
        if (std::memcmp(&expected[i], &got[i], sizeof(float)) != 0)
          return trace_result::fail(at + ", adapter " + h.name + ", lora_E[" + std::to_string(i) + "]: expected " +
                                    format_float(expected[i]) + ", got " + format_float(got[i]));
    }
    ++result.checked;
  }
  return result;
}

}  // namespace adalora::validate
