// The device code of the allocator's fused pass (tile_lanes_kernel over fused_importance_fn, and the triplet scores),
// compiled to PTX by tests/cuda/check_fused_pass_ptx.cmake with nvcc's defaults (-fmad=true): its arithmetic must be
// explicitly rounded, so that no fused multiply-add can change its bits whatever flags a user compiles with.
#include <cstddef>

#include "adalora/allocation/allocator_kernels.hpp"
#include "adalora/backends/cuda/tile_lanes_kernel.cuh"
#include "adalora/core/bfloat16.hpp"
#include "adalora/importance/magnitude.hpp"
#include "adalora/importance/sensitivity_uncertainty.hpp"

namespace adalora::detail {

// The block form the CUDA backend launches: update with and without scores, contiguous and strided, float and
// bfloat16 parameters, and the scores of the held state (the forced mask); the double-buffered pass first.
template __global__ void tile_lanes_kernel(fused_importance_fn<sensitivity_uncertainty, float, true, true>, std::size_t);
template __global__ void tile_lanes_kernel(fused_importance_fn<sensitivity_uncertainty, float, true, false>, std::size_t);
template __global__ void tile_lanes_kernel(fused_importance_fn<sensitivity_uncertainty, float, false, true>, std::size_t);
template __global__ void tile_lanes_kernel(fused_importance_fn<sensitivity_uncertainty, bfloat16, true, true>,
                                           std::size_t);
template __global__ void tile_lanes_kernel(plan_scores_fn<sensitivity_uncertainty, float>, std::size_t);
template __global__ void tile_lanes_kernel(fused_importance_fn<magnitude, float, true, true>, std::size_t);
// The in-place state policies: the read-only check, the exact trial, the in-place pass (float32 and bfloat16 state).
template __global__ void tile_lanes_kernel(input_check_fn<sensitivity_uncertainty, float, true>, std::size_t);
template __global__ void tile_lanes_kernel(input_check_fn<sensitivity_uncertainty, bfloat16, false>, std::size_t);
template __global__ void tile_lanes_kernel(
    fused_importance_fn<sensitivity_uncertainty, float, true, false, state_pass::trial>, std::size_t);
template __global__ void tile_lanes_kernel(
    fused_importance_fn<sensitivity_uncertainty, float, true, true, state_pass::update_in_place>, std::size_t);
template __global__ void tile_lanes_kernel(
    fused_importance_fn<sensitivity_uncertainty, float, true, true, state_pass::update_in_place, bfloat16>,
    std::size_t);

/// The triplet scores as the backend's for_each runs them: one thread per singular value.
__global__ void triplet_scores_kernel(triplet_from_partials_fn f, std::size_t n) {
  const std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) f(i);
}

}  // namespace adalora::detail
