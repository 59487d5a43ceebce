# The CUDA backend's tests (nvcc; they need a GPU to run), included by cmake/backend_thrust.cmake once tests/ has been
# added (ADALORA_ENABLE_CUDA=ON and the test suite built). They reuse the generic test bodies of tests/ with
# ADALORA_TEST_CUDA_ONLY, which makes support/backends_under_test.hpp hold just adalora::cuda_backend. Registered
# with ctest under the label "cuda", so that machines without a GPU skip them with `ctest -LE cuda`.
#   test_cuda_backend     backend primitives, the caller's stream, cuda_error, PEFT allocation trace replays
#   test_cuda_allocation  rank_allocator against the plain-loop reference, its error handling, and the fused
#                         pass's block launch (tile_lanes_kernel) against the host, bit for bit
#   test_cuda_bf16        bfloat16 parameters (float32 state) against float32
#   test_cuda_adapters    SVD / LoRA adapters and the orthogonal regularizer against reference/, AdamW
#   test_cuda_validate    the validation API (CUDA against Eigen), allocator checkpoint resume
#   adalora_trace_cuda    adalora-trace --backend cuda on every trace in ADALORA_TRACES_DIR
#   test_cuda_distributed the distributed allocator: ranks as threads on the CUDA backend, NCCL (one rank per GPU)
find_package(Catch2 2.13 REQUIRED)

set(_adalora_cuda_tests_dir "${CMAKE_CURRENT_LIST_DIR}")

# Catch2's main() once more, without the project's sanitizer flags (nvcc objects are not instrumented).
add_library(adalora_cuda_catch_main OBJECT "${_adalora_cuda_tests_dir}/../catch_main.cpp")
target_link_libraries(adalora_cuda_catch_main PRIVATE Catch2::Catch2)
# the tests' C++ standard: Catch2 converts std::string_view (C++17) only when its main() sees one
target_compile_features(adalora_cuda_catch_main PRIVATE cxx_std_20)
target_compile_options(adalora_cuda_catch_main PRIVATE $<$<CXX_COMPILER_ID:GNU,Clang>:-O0>)

function(adalora_add_cuda_test name)
  add_executable(${name} ${ARGN} $<TARGET_OBJECTS:adalora_cuda_catch_main>)
  target_link_libraries(${name} PRIVATE Catch2::Catch2 adalora::cuda adalora::eigen adalora::io adalora_cuda_project_options)
  target_include_directories(${name} PRIVATE "${_adalora_cuda_tests_dir}/..")
  target_compile_definitions(${name} PRIVATE ADALORA_TEST_CUDA_ONLY ADALORA_TRACES_DIR="${ADALORA_TRACES_DIR}")
  set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY "${PROJECT_BINARY_DIR}/tests/cuda")
  add_dependencies(adalora_cuda_programs ${name})
  add_test(NAME ${name} COMMAND ${name})
  set_tests_properties(${name} PROPERTIES LABELS cuda)
endfunction()

adalora_add_cuda_test(test_cuda_backend "${_adalora_cuda_tests_dir}/test_cuda_backend.cu")
adalora_add_cuda_test(test_cuda_allocation "${_adalora_cuda_tests_dir}/test_cuda_allocation.cu")
adalora_add_cuda_test(test_cuda_bf16 "${_adalora_cuda_tests_dir}/test_cuda_bf16.cu")
adalora_add_cuda_test(test_cuda_adapters "${_adalora_cuda_tests_dir}/test_cuda_adapters.cu")
adalora_add_cuda_test(test_cuda_validate "${_adalora_cuda_tests_dir}/test_cuda_validate.cu")

# Every PEFT trace replayed by adalora-trace on the GPU (the CPU backends' replays are in tests/CMakeLists.txt).
if(TARGET adalora-trace)
  file(GLOB _adalora_cuda_trace_files "${ADALORA_TRACES_DIR}/*.safetensors")
  add_test(NAME adalora_trace_cuda COMMAND adalora-trace --backend cuda ${_adalora_cuda_trace_files})
  set_tests_properties(adalora_trace_cuda PROPERTIES LABELS cuda)
endif()

# The distributed allocator on the GPU (tests/distributed/): ranks as threads on the CUDA backend, and with NCCL
# (adalora::nccl, cmake/distributed.cmake) one rank per visible GPU over nccl_communicator.
find_package(Threads REQUIRED)
adalora_add_cuda_test(test_cuda_distributed "${_adalora_cuda_tests_dir}/../distributed/test_cuda_distributed.cu")
target_link_libraries(test_cuda_distributed PRIVATE Threads::Threads)
if(TARGET adalora::nccl)
  target_link_libraries(test_cuda_distributed PRIVATE adalora::nccl)
  target_compile_definitions(test_cuda_distributed PRIVATE ADALORA_TEST_NCCL)
endif()
