// adalora-trace's backends: one replay function per backend built into the tool, each defined in its own
// translation unit (trace_cuda.cu is compiled by nvcc), so that no source needs the headers of two backends.
#pragma once

#include "adalora/backends/backend.hpp"
#include "adalora/io/safetensors.hpp"
#include "adalora/validate/alloc_trace.hpp"
#include "adalora/validate/layer_trace.hpp"
#include "adalora/validate/trace_result.hpp"

namespace adalora::tools {

/// The two kinds of reference trace: formats adalora-trace/alloc/1 and adalora-trace/layer/1.
enum class trace_kind { alloc, layer };

/// Replays `file` on backend `backend` (what every replay_<backend> below does with its own backend).
template <Backend B>
validate::trace_result replay_on(const io::safetensors_file& file, trace_kind kind, B backend = B{}) {
  return kind == trace_kind::layer ? validate::replay_layer_trace(file, std::move(backend))
                                   : validate::replay_alloc_trace(file, std::move(backend));
}

validate::trace_result replay_eigen(const io::safetensors_file& file, trace_kind kind);    // adalora_trace.cpp
validate::trace_result replay_xtensor(const io::safetensors_file& file, trace_kind kind);  // trace_xtensor.cpp
validate::trace_result replay_thrust(const io::safetensors_file& file, trace_kind kind);   // trace_thrust.cpp
validate::trace_result replay_cuda(const io::safetensors_file& file, trace_kind kind);     // trace_cuda.cu

}  // namespace adalora::tools
