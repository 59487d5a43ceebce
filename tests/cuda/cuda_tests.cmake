# The CUDA backend's tests (nvcc; they need a GPU to run), included by cmake/backend_thrust.cmake once tests/ has been
# added (ADALORA_ENABLE_CUDA=ON and the test suite built). They reuse the generic test bodies of tests/ with
# ADALORA_TEST_CUDA_ONLY, which makes support/backends_under_test.hpp hold just adalora::cuda_backend. Registered
# with ctest under the label "cuda", so that machines without a GPU skip them with `ctest -LE cuda`.
#   test_cuda_backend     backend primitives, the caller's stream, cuda_error, PEFT allocation trace replays
#   test_cuda_allocation  rank_allocator against the plain-loop reference, and its error handling
find_package(Catch2 2.13 REQUIRED)

set(_adalora_cuda_tests_dir "${CMAKE_CURRENT_LIST_DIR}")

# Catch2's main() once more, without the project's sanitizer flags (nvcc objects are not instrumented).
add_library(adalora_cuda_catch_main OBJECT "${_adalora_cuda_tests_dir}/../catch_main.cpp")
target_link_libraries(adalora_cuda_catch_main PRIVATE Catch2::Catch2)

function(adalora_add_cuda_test name)
  add_executable(${name} ${ARGN} $<TARGET_OBJECTS:adalora_cuda_catch_main>)
  target_link_libraries(${name} PRIVATE Catch2::Catch2 adalora::cuda adalora::io)
  target_include_directories(${name} PRIVATE "${_adalora_cuda_tests_dir}/..")
  target_compile_definitions(${name} PRIVATE ADALORA_TEST_CUDA_ONLY ADALORA_TRACES_DIR="${ADALORA_TRACES_DIR}")
  # nvcc's warning 554 ("operator strided_view<const T> will not be called" for views that are already const) is
  # about core/view.hpp's read-only conversion, harmless, and silenced here.
  target_compile_options(${name} PRIVATE
    $<$<COMPILE_LANG_AND_ID:CUDA,NVIDIA>:-Xcompiler=-Wall,-Wextra -diag-suppress=554>
    $<$<AND:$<COMPILE_LANG_AND_ID:CUDA,NVIDIA>,$<BOOL:${ADALORA_WARNINGS_AS_ERRORS}>>:-Werror=all-warnings>)
  set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY "${PROJECT_BINARY_DIR}/tests/cuda")
  add_test(NAME ${name} COMMAND ${name})
  set_tests_properties(${name} PROPERTIES LABELS cuda)
endfunction()

adalora_add_cuda_test(test_cuda_backend "${_adalora_cuda_tests_dir}/test_cuda_backend.cu")
adalora_add_cuda_test(test_cuda_allocation "${_adalora_cuda_tests_dir}/test_cuda_allocation.cu")
