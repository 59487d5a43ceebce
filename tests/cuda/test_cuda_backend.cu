// The CUDA backend (nvcc, needs a GPU): the generic backend primitive tests, then what only the CUDA backend has
// (a caller's stream, cuda_error) and the PEFT allocation traces replayed on the device.
// Built with ADALORA_TEST_CUDA_ONLY, so that support/backends_under_test.hpp holds just adalora::cuda_backend.
#include "cuda/cuda_device_check.hpp"
#include "backends/test_backend_primitives.cpp"

#include <cuda_runtime_api.h>

#include <cstdint>
#include <filesystem>

#include "adalora/backends/cuda/cuda_backend.cuh"
#include "adalora/backends/cuda/cuda_error.cuh"
#include "adalora/validate/alloc_trace.hpp"
#include "support/trace_files.hpp"

namespace {

/// A non-blocking stream for one test, destroyed at the end of it.
struct test_stream {
  cudaStream_t stream = nullptr;
  test_stream() {
    adalora::detail::cuda_check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
  }
  test_stream(const test_stream&) = delete;
  test_stream& operator=(const test_stream&) = delete;
  ~test_stream() { (void)cudaStreamDestroy(stream); }
};

/// out[i] = v[i] + 1.
struct add_one_fn {
  const float* v;
  float* out;
  ADALORA_HOST_DEVICE void operator()(std::size_t i) const noexcept { out[i] = v[i] + 1.0f; }
};

}  // namespace

TEST_CASE("the CUDA backend queues its work on the caller's stream", "[cuda]") {
  test_stream s;
  cuda_backend b{s.stream};
  REQUIRE(b.system().stream() == s.stream);
  REQUIRE(std::string(cuda_backend::name) == "cuda");

  const auto v = normal_values(4097, 5);
  device_copy<cuda_backend> d(b, v);
  auto out = b.allocate<float>(v.size());
  b.for_each(v.size(), add_one_fn{d.buf.data(), out.data()});
  std::vector<float> h(v.size());
  b.copy_to_host(out.data(), h.size(), h.data());
  for (std::size_t i = 0; i < v.size(); ++i) REQUIRE(h[i] == v[i] + 1.0f);

  auto sorted = v;
  std::sort(sorted.begin(), sorted.end());
  REQUIRE(b.kth_smallest(d.buf.data(), v.size(), 1000) == sorted[999]);

  // a copy of the backend shares the stream; buffers moved into a container keep their device memory
  const cuda_backend copy = b;
  REQUIRE(copy.system().stream() == s.stream);
  std::vector<buffer_t<cuda_backend, float>> buffers;
  buffers.push_back(std::move(out));
  for (int i = 0; i < 8; ++i) buffers.push_back(copy.allocate<float>(16));
  b.copy_to_host(buffers.front().data(), h.size(), h.data());
  REQUIRE(h[7] == v[7] + 1.0f);
  b.synchronize();
}

TEST_CASE("CUDA failures are cuda_error exceptions on the host", "[cuda]") {
  const cuda_backend b{};
  // 4 PiB of floats: the allocation fails on any device, and says so
  REQUIRE_THROWS_AS(b.allocate<float>(std::size_t{1} << 50), cuda_error);
  try {
    (void)b.allocate<float>(std::size_t{1} << 50);
  } catch (const cuda_error& e) {
    REQUIRE(e.code() == cudaErrorMemoryAllocation);
    REQUIRE_THAT(e.what(), Catch::Contains("cudaMallocAsync"));
  }
  // the backend still works afterwards
  auto buf = b.allocate<float>(3);
  std::vector<float> h(3, 1.0f);
  b.copy_to_host(buf.data(), 3, h.data());
  REQUIRE(h == std::vector<float>(3, 0.0f));
  REQUIRE_THROWS_AS(b.kth_smallest(buf.data(), 3, 4), usage_error);
}

TEST_CASE("every PEFT allocation trace replays exactly on the CUDA backend", "[cuda][trace]") {
  const auto files = adalora::testing::trace_files("alloc-");
  REQUIRE(files.size() >= 7);
  for (const auto& path : files) {
    INFO(path.filename().string());
    const auto file = io::safetensors_file::open(path);
    const auto r = validate::replay_alloc_trace(file, cuda_backend{});
    INFO(r.detail);
    REQUIRE(r.passed());
    REQUIRE(r.checked > 10);
  }
}

TEST_CASE("the PEFT allocation traces replay exactly on a non-blocking stream", "[cuda][trace]") {
  test_stream s;
  const auto file = io::safetensors_file::open(adalora::testing::traces_dir() / "alloc-basic.safetensors");
  const auto r = validate::replay_alloc_trace(file, cuda_backend{s.stream});
  INFO(r.detail);
  REQUIRE(r.passed());
}

TEST_CASE("without stream-ordered memory (cudaMalloc / cudaFree) the backend works the same", "[cuda][memory]") {
  // what a device without memory pools (cudaDevAttrMemoryPoolsSupported = 0) gets; forced here on any device
  test_stream s;
  cuda_backend sync{cuda_system{s.stream, cuda_allocation::synchronous}};
  REQUIRE_FALSE(sync.system().stream_ordered_memory());
  REQUIRE(cuda_backend{}.system().stream_ordered_memory() == detail::memory_pools_supported());

  auto buf = sync.allocate<float>(1000);
  std::vector<float> h(1000, 1.0f);
  sync.copy_to_host(buf.data(), h.size(), h.data());
  REQUIRE(h == std::vector<float>(1000, 0.0f));  // zeroed
  auto copy = buf;                                // deep copy, and moves, with cudaMalloc'd memory
  std::vector<decltype(buf)> moved;
  moved.push_back(std::move(copy));
  const auto v = normal_values(5000, 8);
  device_copy<cuda_backend> d(sync, v);
  auto sorted = v;
  std::sort(sorted.begin(), sorted.end());
  REQUIRE(sync.kth_smallest(d.buf.data(), v.size(), 1234) == sorted[1233]);
  REQUIRE(sync.count_if(v.size(), is_negative_fn{d.buf.data()}) ==
          static_cast<std::size_t>(std::count_if(v.begin(), v.end(), [](float x) { return x < 0.0f; })));

  const auto file = io::safetensors_file::open(adalora::testing::traces_dir() / "alloc-basic.safetensors");
  const auto r = validate::replay_alloc_trace(file, sync);
  INFO(r.detail);
  REQUIRE(r.passed());
}

TEST_CASE("scratch (Thrust's temporaries, the selection's sort) is kept across calls", "[cuda][memory]") {
  cuda_backend b{};
  const auto v = normal_values(20000, 12);
  device_copy<cuda_backend> d(b, v);
  (void)b.kth_smallest(d.buf.data(), v.size(), 10);
  (void)b.count_if(v.size(), is_negative_fn{d.buf.data()});
  (void)b.transform_sum(v.size(), square_fn{d.buf.data()});
  const std::size_t taken = b.system().device_allocations();
  for (int i = 0; i < 5; ++i) {
    (void)b.kth_smallest(d.buf.data(), v.size(), 10 + i);
    (void)b.count_if(v.size(), is_negative_fn{d.buf.data()});
    (void)b.transform_sum(v.size(), square_fn{d.buf.data()});
  }
  REQUIRE(b.system().device_allocations() == taken);
  // a larger selection needs larger blocks once; then it too takes nothing
  const auto w = normal_values(50000, 13);
  device_copy<cuda_backend> e(b, w);
  (void)b.kth_smallest(e.buf.data(), w.size(), 7);
  const std::size_t grown = b.system().device_allocations();
  REQUIRE(grown > taken);
  (void)b.kth_smallest(e.buf.data(), w.size(), 8);
  (void)b.kth_smallest(d.buf.data(), v.size(), 9);
  REQUIRE(b.system().device_allocations() == grown);
  b.system().release_scratch();
  REQUIRE(b.kth_smallest(d.buf.data(), v.size(), 1) == *std::min_element(v.begin(), v.end()));
}

namespace {
__global__ void nothing_kernel() {}

/// A TileLanePass whose every lane adds 1: out[t] = the tile's lane count (256), and no non-finite input.
struct count_lanes_pass {
  double* out;
  ADALORA_HOST_DEVICE detail::tile_lanes lanes(std::size_t) const noexcept { return {detail::plan_lanes, 1}; }
  ADALORA_HOST_DEVICE detail::lane_result lane_pass(std::size_t, std::size_t) const noexcept { return {1.0, 0}; }
  ADALORA_HOST_DEVICE void finish_lane(std::size_t t, std::size_t lane, const double* sums,
                                       std::uint32_t) const noexcept {
    if (lane == 0) out[t] = sums[0];
  }
};
}  // namespace

TEST_CASE("an earlier, unchecked CUDA error is not reported as the tiled pass's launch error", "[cuda]") {
  const cuda_backend b{};
  auto out = b.allocate<double>(3);
  nothing_kernel<<<1, 4096>>>();  // too many threads per block: cudaErrorInvalidConfiguration, left unchecked
  REQUIRE_NOTHROW(b.for_each_tile_lanes(3, count_lanes_pass{out.data()}));
  std::vector<double> h(3);
  b.copy_to_host(out.data(), 3, h.data());
  REQUIRE(h == std::vector<double>(3, static_cast<double>(detail::plan_lanes)));
  REQUIRE(cudaGetLastError() == cudaSuccess);  // the stale error was taken out of the runtime's slot
}
