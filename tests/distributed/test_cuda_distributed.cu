// The distributed allocator on the GPU (nvcc, needs a GPU; scripts/gpu-check runs it with ctest -L cuda): ranks as
// threads on the CUDA backend (the score sums staged through the host), and, with NCCL, one rank per visible GPU over
// nccl_communicator, each against one process holding every adapter, bit for bit.
#include "cuda/cuda_device_check.hpp"  // before catch2/catch.hpp

#include <catch2/catch.hpp>

#include <cuda_runtime_api.h>

#include <chrono>
#include <exception>
#include <string>
#include <thread>
#include <vector>

#include "adalora/backends/cuda/cuda_backend.cuh"
#include "adalora/backends/eigen/eigen_backend.hpp"
#include "adalora/distributed/thread_communicator.hpp"
#include "adalora/importance/magnitude.hpp"
#include "distributed/scenarios.hpp"
#include "support/trace_files.hpp"
#if defined(ADALORA_TEST_NCCL)
#include "adalora/distributed/nccl/nccl_communicator.cuh"
#endif

using namespace adalora;
using namespace adalora::testing::distributed;

namespace {

const std::string traces = adalora::testing::traces_dir().string();

template <ImportanceMetric M = sensitivity_uncertainty>
std::vector<run_record> cuda_threads(const scenario& s, layout_kind kind, int size) {
  thread_group group(size, std::chrono::seconds(120));
  std::vector<run_record> records(static_cast<std::size_t>(size));
  const auto errors = group.run([&](thread_communicator c) {
    cudaStream_t stream = nullptr;
    detail::cuda_check(cudaStreamCreate(&stream), "cudaStreamCreate");
    try {
      records[static_cast<std::size_t>(c.rank())] = run_rank<cuda_backend, M>(s, kind, c, {}, cuda_backend{stream});
    } catch (...) {
      cudaStreamDestroy(stream);
      throw;
    }
    cudaStreamDestroy(stream);
  });
  for (const auto& e : errors)
    if (e) std::rethrow_exception(e);
  return records;
}

}  // namespace

TEST_CASE("CUDA, ranks as threads: every ownership gives one process's run bit for bit", "[cuda][distributed]") {
  const scenario tiled = tiled_scenario();
  const scenario basic = trace_scenario(traces + "/alloc-basic.safetensors");
  for (const scenario* s : {&tiled, &basic}) {
    const run_record single = run_single<cuda_backend>(*s);
    // the CUDA backend sums in the same lane order as the host: the Eigen run is the same bit for bit
    REQUIRE(first_difference(single, run_single<eigen_backend>(*s)) == "");
    for (layout_kind kind : {layout_kind::replicated, layout_kind::lopsided, layout_kind::sharded}) {
      INFO(s->name << ", " << layout_name(kind));
      for (const auto& r : cuda_threads(*s, kind, 3)) REQUIRE(first_difference(r, single) == "");
    }
  }
  // where the summation order shows in the scores (see rounding_scenario)
  const scenario rounding = rounding_scenario();
  const run_record single = run_single<cuda_backend, magnitude>(rounding);
  REQUIRE(first_difference(single, run_single<eigen_backend, magnitude>(rounding)) == "");
  for (const auto& r : cuda_threads<magnitude>(rounding, layout_kind::sharded, 3)) REQUIRE(first_difference(r, single) == "");
}

#if defined(ADALORA_TEST_NCCL)
TEST_CASE("NCCL: one rank per visible GPU gives one process's run bit for bit", "[cuda][distributed][nccl]") {
  int devices = 0;
  detail::cuda_check(cudaGetDeviceCount(&devices), "cudaGetDeviceCount");
  REQUIRE(devices > 0);
  std::vector<ncclComm_t> comms(static_cast<std::size_t>(devices));
  detail::nccl_check(ncclCommInitAll(comms.data(), devices, nullptr), nullptr, "ncclCommInitAll");
  const scenario s = tiled_scenario();
  const run_record single = run_single<eigen_backend>(s);
  for (layout_kind kind : {layout_kind::disjoint, layout_kind::sharded, layout_kind::replicated}) {
    INFO(layout_name(kind) << " on " << devices << " GPU(s)");
    std::vector<run_record> records(comms.size());
    std::vector<std::exception_ptr> errors(comms.size());
    std::vector<std::thread> threads;
    for (int k = 0; k < devices; ++k)
      threads.emplace_back([&, k] {
        try {
          detail::cuda_check(cudaSetDevice(k), "cudaSetDevice");
          cudaStream_t stream = nullptr;
          detail::cuda_check(cudaStreamCreate(&stream), "cudaStreamCreate");
          records[static_cast<std::size_t>(k)] = run_rank<cuda_backend>(
              s, kind, nccl_communicator(comms[static_cast<std::size_t>(k)], stream, std::chrono::seconds(60)), {},
              cuda_backend{stream});
          cudaStreamDestroy(stream);
        } catch (...) {
          errors[static_cast<std::size_t>(k)] = std::current_exception();
        }
      });
    for (auto& t : threads) t.join();
    for (const auto& e : errors)
      if (e) std::rethrow_exception(e);
    for (const auto& r : records) REQUIRE(first_difference(r, single) == "");
  }
  for (auto c : comms) ncclCommDestroy(c);
}
#endif
