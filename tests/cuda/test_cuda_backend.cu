// The CUDA backend (nvcc, needs a GPU): the generic backend primitive tests, then what only the CUDA backend has
// (a caller's stream, cuda_error) and the PEFT allocation traces replayed on the device.
// Built with ADALORA_TEST_CUDA_ONLY, so that support/backends_under_test.hpp holds just adalora::cuda_backend.
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
  const auto file = io::safetensors_file::open(std::filesystem::path(ADALORA_TRACES_DIR) / "alloc-basic.safetensors");
  const auto r = validate::replay_alloc_trace(file, cuda_backend{s.stream});
  INFO(r.detail);
  REQUIRE(r.passed());
}
