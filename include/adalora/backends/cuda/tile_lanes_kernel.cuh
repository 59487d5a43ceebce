// The GPU launch of a tiled pass in block form: one block of plan_lanes threads per tile (nvcc only).
#pragma once

#if !defined(__CUDACC__)
#error "adalora/backends/cuda/tile_lanes_kernel.cuh needs nvcc: link adalora::cuda (configure with -DADALORA_ENABLE_CUDA=ON)"
#endif

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "adalora/allocation/tile_lanes.hpp"
#include "adalora/backends/cuda/cuda_error.cuh"

namespace adalora::detail {

/// Block b runs tiles b, b + gridDim.x, … of a TileLanePass, thread l as lane l: the lanes read neighbouring
/// elements (coalesced), their sums meet in shared memory and are combined by lane_tree_step, one level per barrier
/// (the additions and their order of run_tile_lanes_on_host), and the non-finite counts by warp shuffles.
template <class F>
__global__ void __launch_bounds__(plan_lanes) tile_lanes_kernel(F f, std::size_t tiles) {
  static_assert(plan_lanes % 32 == 0, "whole warps per block");
  __shared__ double sums[plan_lanes];
  __shared__ std::uint32_t warp_counts[plan_lanes / 32];
  const std::size_t lane = threadIdx.x;
  for (std::size_t t = blockIdx.x; t < tiles; t += gridDim.x) {
    const lane_result r = f.lane_pass(t, lane);
    sums[lane] = r.sum;
    std::uint32_t count = r.non_finite;
    for (unsigned offset = 16; offset > 0; offset /= 2) count += __shfl_down_sync(0xffffffffu, count, offset);
    if (lane % 32 == 0) warp_counts[lane / 32] = count;
    __syncthreads();
    const tile_lanes layout = f.lanes(t);  // the same in every thread: the barriers below are uniform
    const std::size_t group = lane_group(layout, lane);
    for (std::size_t half = lane_tree_first_half(layout.groups); half > 0; half /= 2) {
      lane_tree_step(sums, layout, half, lane, group);
      __syncthreads();
    }
    std::uint32_t non_finite = 0;
    for (std::size_t w = 0; w < plan_lanes / 32; ++w) non_finite += warp_counts[w];
    f.finish_lane(t, lane, sums, non_finite);
    __syncthreads();  // the next tile reuses the shared arrays
  }
}

/// Queues tile_lanes_kernel over `tiles` tiles on `stream` (one launch whatever the number of tiles).
template <TileLanePass F>
void launch_tile_lanes(const F& f, std::size_t tiles, cudaStream_t stream) {
  if (tiles == 0) return;
  constexpr std::size_t max_blocks = std::size_t{1} << 20;  // beyond: blocks loop over tiles
  const auto blocks = static_cast<unsigned>(tiles < max_blocks ? tiles : max_blocks);
  // The runtime's last-error slot may hold an error of earlier work (another library's launch that nobody checked):
  // taken out first, so that it is not reported as this launch's, and named if this launch fails too.
  const cudaError_t earlier = cudaGetLastError();
  tile_lanes_kernel<F><<<blocks, static_cast<unsigned>(plan_lanes), 0, stream>>>(f, tiles);
  const cudaError_t code = cudaGetLastError();
  if (code != cudaSuccess)
    throw cuda_error("adalora CUDA backend: tile_lanes_kernel launch failed: " + cuda_error_text(code) +
                         (earlier == cudaSuccess ? std::string()
                                                 : "; an earlier CUDA error was pending: " + cuda_error_text(earlier)),
                     code);
}

}  // namespace adalora::detail
