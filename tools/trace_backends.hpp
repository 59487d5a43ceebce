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

/// The allocator's importance state in an allocation replay (--state-policy): the two float32 state policies, which
/// must both reproduce PEFT exactly.
enum class trace_state { in_place, double_buffered };

/// Replays `file` on backend `backend` (what every replay_<backend> below does with its own backend).
template <Backend B>
validate::trace_result replay_on(const io::safetensors_file& file, trace_kind kind, trace_state state,
                                 B backend = B{}) {
  if (kind == trace_kind::layer) return validate::replay_layer_trace(file, std::move(backend));
  return state == trace_state::double_buffered
             ? validate::replay_alloc_trace<B, double_buffered_state>(file, std::move(backend))
             : validate::replay_alloc_trace<B, in_place_state>(file, std::move(backend));
}

// adalora_trace.cpp, trace_xtensor.cpp, trace_thrust.cpp, trace_cuda.cu
validate::trace_result replay_eigen(const io::safetensors_file& file, trace_kind kind, trace_state state);
validate::trace_result replay_xtensor(const io::safetensors_file& file, trace_kind kind, trace_state state);
validate::trace_result replay_thrust(const io::safetensors_file& file, trace_kind kind, trace_state state);
validate::trace_result replay_cuda(const io::safetensors_file& file, trace_kind kind, trace_state state);

}  // namespace adalora::tools
