// The NCCL communicator (nvcc only): a distributed allocator over a trainer's ncclComm_t and CUDA stream.
#pragma once

#if !defined(__CUDACC__)
#error "adalora/distributed/nccl/nccl_communicator.cuh needs nvcc: link adalora::nccl (CUDA with NCCL found)"
#endif

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <thread>

#include "adalora/backends/cuda/cuda_error.cuh"
#include "adalora/core/error.hpp"
#include "adalora/core/memory_space.hpp"
#include "adalora/distributed/communicator.hpp"

namespace adalora {

namespace detail {

inline void nccl_check(ncclResult_t code, ncclComm_t comm, const char* call) {
  if (code == ncclSuccess || code == ncclInProgress) return;
  const char* last = comm ? ncclGetLastError(comm) : nullptr;
  throw communication_error(std::string("nccl_communicator: ") + call + " failed: " + ncclGetErrorString(code) +
                            (last && *last ? std::string(" (") + last + ")" : std::string()));
}

}  // namespace detail

/// A rank of an NCCL communicator the trainer created (ncclCommInitRank / ncclCommInitAll), with the CUDA stream the
/// collectives run on; both must outlive the allocator, and nothing here frees them. Device memory: the allocator's
/// backend must be the CUDA backend (give it the same stream, so that its passes and the collectives are ordered
/// without extra waits; the allocator waits for its backend before each collective anyway).
///
/// Every collective waits for its stream before it returns. With a `timeout` (default: none), a collective that
/// does not finish in time — a rank that skipped it — throws communication_error instead of waiting forever; the
/// communicator is then in an undefined state (abort it with ncclCommAbort). An asynchronous NCCL error (a peer
/// failed) throws communication_error too. `all_gather_host` stages its words through a small device buffer.
class nccl_communicator {
public:
  using communicator_concept = communicator_tag;
  using memory_space = cuda_device_space;
  static constexpr const char* name = "nccl";

  nccl_communicator(ncclComm_t comm, cudaStream_t stream,
                    std::chrono::milliseconds timeout = std::chrono::milliseconds::zero())
      : comm_(comm), stream_(stream), timeout_(timeout) {
    if (comm == nullptr) throw usage_error("nccl_communicator: the ncclComm_t is null");
    detail::nccl_check(ncclCommUserRank(comm_, &rank_), comm_, "ncclCommUserRank");
    detail::nccl_check(ncclCommCount(comm_, &size_), comm_, "ncclCommCount");
  }

  int rank() const noexcept { return rank_; }
  int size() const noexcept { return size_; }
  ncclComm_t comm() const noexcept { return comm_; }
  cudaStream_t stream() const noexcept { return stream_; }

  /// n doubles of device memory from every rank into `recv` (device memory, size · n doubles).
  void all_gather(const double* send, std::size_t n, double* recv) const {
    detail::nccl_check(ncclAllGather(send, recv, n, ncclDouble, comm_, stream_), comm_, "ncclAllGather");
    wait("all_gather");
  }

  /// n words of host memory from every rank into `recv` (host memory), through a device buffer.
  void all_gather_host(const std::uint64_t* send, std::size_t n, std::uint64_t* recv) const {
    const std::size_t all = n * static_cast<std::size_t>(size_);
    void* device = nullptr;
    detail::cuda_check(cudaMallocAsync(&device, (n + all) * sizeof(std::uint64_t), stream_), "cudaMallocAsync");
    auto* mine = static_cast<std::uint64_t*>(device);
    try {
      detail::cuda_check(cudaMemcpyAsync(mine, send, n * sizeof(std::uint64_t), cudaMemcpyHostToDevice, stream_),
                         "cudaMemcpyAsync");
      detail::nccl_check(ncclAllGather(mine, mine + n, n, ncclUint64, comm_, stream_), comm_, "ncclAllGather");
      detail::cuda_check(cudaMemcpyAsync(recv, mine + n, all * sizeof(std::uint64_t), cudaMemcpyDeviceToHost, stream_),
                         "cudaMemcpyAsync");
      wait("all_gather_host");
    } catch (...) {
      (void)cudaFreeAsync(device, stream_);
      throw;
    }
    detail::cuda_check(cudaFreeAsync(device, stream_), "cudaFreeAsync");
  }

private:
  // Waits for the stream, watching NCCL's asynchronous errors and the time limit.
  void wait(const char* what) const {
    const auto start = std::chrono::steady_clock::now();
    for (;;) {
      const cudaError_t done = cudaStreamQuery(stream_);
      if (done == cudaSuccess) return;
      if (done != cudaErrorNotReady) detail::cuda_check(done, "cudaStreamQuery");
      ncclResult_t async = ncclSuccess;
      detail::nccl_check(ncclCommGetAsyncError(comm_, &async), comm_, "ncclCommGetAsyncError");
      detail::nccl_check(async, comm_, what);
      if (timeout_.count() > 0 && std::chrono::steady_clock::now() - start > timeout_)
        throw communication_error(std::string("nccl_communicator: ") + what + " did not finish within " +
                                  std::to_string(timeout_.count()) +
                                  " ms: a rank did not enter the collective (every rank must call step(t) with the "
                                  "same t); abort the communicator with ncclCommAbort");
      std::this_thread::yield();
    }
  }

  ncclComm_t comm_;
  cudaStream_t stream_;
  std::chrono::milliseconds timeout_;
  int rank_ = 0, size_ = 1;
};

static_assert(Communicator<nccl_communicator>);

}  // namespace adalora
