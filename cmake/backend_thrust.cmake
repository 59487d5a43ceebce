# The Thrust backend (adalora::thrust, CPP/OMP systems with any C++ compiler) and the CUDA backend (adalora::cuda).
#
# adalora::thrust  added when ADALORA_WITH_THRUST (default ON) and CCCL (the CUDA toolkit's lib64/cmake/cccl) and
#                  OpenMP are found; otherwise skipped with a STATUS message. Links CCCL::Thrust, configured with host
#                  system CPP and, unless CCCL_THRUST_DEVICE_SYSTEM says otherwise, device system OMP, so that Thrust
#                  code builds with g++ alone. Its headers: include/adalora/backends/thrust/.
# adalora::cuda    added when ADALORA_ENABLE_CUDA (default OFF): enables the CUDA language (CMAKE_CUDA_ARCHITECTURES
#                  defaults to 90), links CUDA::cudart and CUDA::cublas, and compiles device code without fused
#                  multiply-adds (-fmad=false). Its headers (.cuh, nvcc only): include/adalora/backends/cuda/.
#                  Its tests (tests/cuda/cuda_tests.cmake, ctest label "cuda") are added after tests/ when the test
#                  suite is built.
option(ADALORA_WITH_THRUST "Add the Thrust backend (adalora::thrust) when CCCL is found" ON)
option(ADALORA_ENABLE_CUDA "Add the CUDA backend (adalora::cuda); needs nvcc and the CUDA toolkit" OFF)

# CCCL's CMake packages live in the CUDA toolkit (<root>/lib64/cmake/cccl): look there when CMAKE_PREFIX_PATH does not
# say where CCCL is.
set(_adalora_cuda_roots "${CUDAToolkit_ROOT}" "$ENV{CUDAToolkit_ROOT}" "$ENV{CUDA_PATH}" "$ENV{CUDA_HOME}"
                        /usr/local/cuda /opt/cuda)
if(CMAKE_CUDA_COMPILER)
  get_filename_component(_adalora_nvcc_dir "${CMAKE_CUDA_COMPILER}" DIRECTORY)
  list(PREPEND _adalora_cuda_roots "${_adalora_nvcc_dir}/..")
endif()
set(_adalora_cccl_hints)
foreach(_root IN LISTS _adalora_cuda_roots)
  if(_root)
    list(APPEND _adalora_cccl_hints "${_root}" "${_root}/lib64/cmake" "${_root}/lib/cmake")
  endif()
endforeach()

# For the package config (adaloraConfig.cmake.in): which of these targets the install exports.
set(ADALORA_HAS_THRUST OFF)
set(ADALORA_HAS_CUDA OFF)

# ---- adalora::thrust -------------------------------------------------------------------------------------------
if(ADALORA_WITH_THRUST)
  # CCCL::Thrust's device system (CCCL's own cache option): OMP unless the user chose another one.
  if(NOT DEFINED CCCL_THRUST_DEVICE_SYSTEM)
    set(CCCL_THRUST_DEVICE_SYSTEM OMP CACHE STRING
        "Device system of CCCL::Thrust (adalora's default: OMP, so that Thrust code builds with any C++ compiler)")
  endif()
  find_package(CCCL CONFIG QUIET HINTS ${_adalora_cccl_hints})
  find_package(OpenMP QUIET COMPONENTS CXX)
  if(NOT CCCL_FOUND OR NOT TARGET CCCL::Thrust)
    message(STATUS "adalora: CCCL (Thrust) not found, adalora::thrust skipped (set CMAKE_PREFIX_PATH or "
                   "CUDAToolkit_ROOT to the CUDA toolkit, or -DADALORA_WITH_THRUST=OFF)")
  elseif(NOT TARGET OpenMP::OpenMP_CXX)
    message(STATUS "adalora: OpenMP not found, adalora::thrust skipped (Thrust's OMP system needs it)")
  else()
    add_library(adalora_thrust INTERFACE)
    add_library(adalora::thrust ALIAS adalora_thrust)
    set_target_properties(adalora_thrust PROPERTIES EXPORT_NAME thrust)
    target_link_libraries(adalora_thrust INTERFACE adalora CCCL::Thrust OpenMP::OpenMP_CXX)
    # CCCL's include folder as a system folder: its headers are not held to the project's -Wpedantic -Werror.
    get_target_property(_adalora_thrust_includes Thrust::Thrust INTERFACE_INCLUDE_DIRECTORIES)
    if(_adalora_thrust_includes)
      target_include_directories(adalora_thrust SYSTEM INTERFACE $<BUILD_INTERFACE:${_adalora_thrust_includes}>)
    endif()
    install(TARGETS adalora_thrust EXPORT adaloraTargets)
    set(ADALORA_HAS_THRUST ON)
    message(STATUS "adalora: Thrust backend (adalora::thrust) with CCCL ${CCCL_VERSION} from ${CCCL_DIR}, device "
                   "system ${CCCL_THRUST_DEVICE_SYSTEM}")
  endif()
endif()

# ---- adalora::cuda ---------------------------------------------------------------------------------------------
if(ADALORA_ENABLE_CUDA)
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
    set(CMAKE_CUDA_ARCHITECTURES 90 CACHE STRING "CUDA architectures to build for (adalora's default: 90, Hopper)")
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(NOT CMAKE_CUDA_COMPILER)
    message(FATAL_ERROR "adalora: ADALORA_ENABLE_CUDA is ON but CMake found no CUDA compiler; pass "
                        "-DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc (or put nvcc on PATH), "
                        "or -DADALORA_ENABLE_CUDA=OFF")
  endif()
  enable_language(CUDA)
  find_package(CUDAToolkit REQUIRED)

  add_library(adalora_cuda INTERFACE)
  add_library(adalora::cuda ALIAS adalora_cuda)
  set_target_properties(adalora_cuda PROPERTIES EXPORT_NAME cuda)
  target_link_libraries(adalora_cuda INTERFACE adalora CUDA::cudart CUDA::cublas)
  # C++20 in CUDA sources: a compile feature where this CMake knows it for nvcc (3.25 does not), else the flag.
  if("cuda_std_20" IN_LIST CMAKE_CUDA_COMPILE_FEATURES)
    target_compile_features(adalora_cuda INTERFACE cuda_std_20)
  else()
    target_compile_options(adalora_cuda INTERFACE $<$<COMPILE_LANG_AND_ID:CUDA,NVIDIA>:-std=c++20>)
  endif()
  # The core views index std::array in host+device functions: nvcc needs relaxed constexpr to call its constexpr
  # members from device code.
  target_compile_options(adalora_cuda INTERFACE $<$<COMPILE_LANG_AND_ID:CUDA,NVIDIA>:--expt-relaxed-constexpr>)
  # No fused multiply-adds, in device code (-fmad=false) nor in the host code nvcc hands to the host compiler: the
  # importance update must round every float32 product and sum as PEFT does.
  if(ADALORA_STRICT_FP)
    target_compile_options(adalora_cuda INTERFACE
      $<$<COMPILE_LANG_AND_ID:CUDA,NVIDIA>:-fmad=false>
      $<$<AND:$<COMPILE_LANG_AND_ID:CUDA,NVIDIA>,$<NOT:$<PLATFORM_ID:Windows>>>:-Xcompiler=-ffp-contract=off>
      $<$<COMPILE_LANG_AND_ID:CUDA,Clang>:-ffp-contract=off>)
  endif()
  install(TARGETS adalora_cuda EXPORT adaloraTargets)
  set(ADALORA_HAS_CUDA ON)
  message(STATUS "adalora: CUDA backend (adalora::cuda) for CUDA architectures ${CMAKE_CUDA_ARCHITECTURES}")

  # The CUDA tests (tests/cuda/cuda_tests.cmake) need the test suite's targets and settings, which exist only once
  # tests/ has been added: include them at the end of this directory's configuration.
  function(_adalora_add_cuda_tests)
    if(TARGET adalora_catch_main)
      include("${PROJECT_SOURCE_DIR}/tests/cuda/cuda_tests.cmake")
    endif()
  endfunction()
  if(ADALORA_BUILD_TESTS)
    cmake_language(DEFER CALL _adalora_add_cuda_tests)
  endif()
endif()
