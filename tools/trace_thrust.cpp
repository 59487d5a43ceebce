// adalora-trace --backend thrust: the replays on Thrust's OpenMP system (adalora::thrust_omp_backend, host memory).
#include "adalora/backends/thrust/thrust_backend.hpp"
#include "trace_backends.hpp"

namespace adalora::tools {

validate::trace_result replay_thrust(const io::safetensors_file& file, trace_kind kind, trace_state state) {
  return replay_on<thrust_omp_backend>(file, kind, state);
}

}  // namespace adalora::tools
