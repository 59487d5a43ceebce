// adalora-trace --backend xtensor: the replays on adalora::xtensor_backend.
#include "adalora/backends/xtensor/xtensor_backend.hpp"
#include "trace_backends.hpp"

namespace adalora::tools {

validate::trace_result replay_xtensor(const io::safetensors_file& file, trace_kind kind, trace_state state) {
  return replay_on<xtensor_backend>(file, kind, state);
}

}  // namespace adalora::tools
