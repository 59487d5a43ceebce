# The communicators of the distributed allocator beyond the header-only ones (self_communicator, thread_communicator,
# in adalora::adalora): adalora::mpi and adalora::nccl. Each is added when its dependency is found and skipped with a
# STATUS message otherwise; the rest of the build does not depend on them.
#
# adalora::mpi   when ADALORA_WITH_MPI (default ON) and MPI is found for C++ (Debian: libopenmpi-dev). Links
#                MPI::MPI_CXX without MPI's deprecated C++ bindings (the communicator calls the C interface); its
#                header: include/adalora/distributed/mpi/mpi_communicator.hpp. The tests and the
#                example run their programs with mpiexec (ADALORA_MPIEXEC_FLAGS: OpenMPI's --oversubscribe, so that
#                4 ranks run on 2 cores).
# adalora::nccl  when adalora::cuda exists and NCCL's nccl.h and library are found: in the CUDA toolkit's prefix,
#                under NCCL_ROOT, or in the nvidia-nccl-cu13 wheel (pip install nvidia-nccl-cu13; pass
#                -DNCCL_ROOT=<site-packages>/nvidia/nccl). Links adalora::cuda and the library; its header (.cuh,
#                nvcc only): include/adalora/distributed/nccl/nccl_communicator.cuh.
option(ADALORA_WITH_MPI "Add the MPI communicator (adalora::mpi) when MPI is found" ON)

# For the package config (adaloraConfig.cmake.in).
set(ADALORA_HAS_MPI OFF)
set(ADALORA_HAS_NCCL OFF)

# ---- adalora::mpi ----------------------------------------------------------------------------------------------
if(ADALORA_WITH_MPI)
  # the C interface through the C++ compiler (the project enables no C language), without the C++ bindings
  set(MPI_CXX_SKIP_MPICXX ON)
  find_package(MPI QUIET COMPONENTS CXX)
  if(NOT MPI_CXX_FOUND)
    message(STATUS "adalora: MPI not found, adalora::mpi skipped (Debian: apt-get install libopenmpi-dev, or "
                   "bash scripts/install-deps.sh --mpi)")
  else()
    add_library(adalora_mpi INTERFACE)
    add_library(adalora::mpi ALIAS adalora_mpi)
    set_target_properties(adalora_mpi PROPERTIES EXPORT_NAME mpi)
    target_link_libraries(adalora_mpi INTERFACE adalora MPI::MPI_CXX)
    # only MPI's C interface: keep the deprecated C++ bindings of OpenMPI and MPICH out
    target_compile_definitions(adalora_mpi INTERFACE OMPI_SKIP_MPICXX=1 MPICH_SKIP_MPICXX=1)
    install(TARGETS adalora_mpi EXPORT adaloraTargets)
    set(ADALORA_HAS_MPI ON)
    # How the project's MPI programs are launched: OpenMPI refuses more ranks than cores without --oversubscribe
    # (the tests run 4 ranks on 2-core machines) and refuses root without its consent (given by environment in the
    # tests, see tests/distributed/distributed_tests.cmake).
    set(ADALORA_MPIEXEC_FLAGS "")
    execute_process(COMMAND ${MPIEXEC_EXECUTABLE} --version OUTPUT_VARIABLE _adalora_mpiexec_version
                    ERROR_QUIET RESULT_VARIABLE _adalora_mpiexec_rc TIMEOUT 20)
    if(_adalora_mpiexec_version MATCHES "Open MPI|OpenRTE")
      set(ADALORA_MPIEXEC_FLAGS --oversubscribe)
    endif()
    message(STATUS "adalora: MPI communicator (adalora::mpi) with ${MPIEXEC_EXECUTABLE}, MPI ${MPI_CXX_VERSION}")
  endif()
endif()

# ---- adalora::nccl ---------------------------------------------------------------------------------------------
if(TARGET adalora::cuda)
  set(_adalora_nccl_hints ${NCCL_ROOT} $ENV{NCCL_ROOT} $ENV{NCCL_HOME} ${CUDAToolkit_LIBRARY_ROOT}
                          ${CUDAToolkit_TARGET_DIR})
  find_path(ADALORA_NCCL_INCLUDE_DIR nccl.h HINTS ${_adalora_nccl_hints} ${CUDAToolkit_INCLUDE_DIRS}
            PATH_SUFFIXES include)
  # the wheel ships libnccl.so.2 only
  find_library(ADALORA_NCCL_LIBRARY NAMES nccl libnccl.so.2 HINTS ${_adalora_nccl_hints} ${CUDAToolkit_LIBRARY_DIR}
               PATH_SUFFIXES lib lib64)
  if(NOT ADALORA_NCCL_INCLUDE_DIR OR NOT ADALORA_NCCL_LIBRARY)
    message(STATUS "adalora: NCCL not found, adalora::nccl skipped (pip install nvidia-nccl-cu13 and pass "
                   "-DNCCL_ROOT=<site-packages>/nvidia/nccl, or install NCCL into the CUDA prefix)")
  else()
    add_library(adalora_nccl INTERFACE)
    add_library(adalora::nccl ALIAS adalora_nccl)
    set_target_properties(adalora_nccl PROPERTIES EXPORT_NAME nccl)
    target_include_directories(adalora_nccl SYSTEM INTERFACE $<BUILD_INTERFACE:${ADALORA_NCCL_INCLUDE_DIR}>)
    target_link_libraries(adalora_nccl INTERFACE adalora_cuda $<BUILD_INTERFACE:${ADALORA_NCCL_LIBRARY}>)
    set(ADALORA_HAS_NCCL ON)
    message(STATUS "adalora: NCCL communicator (adalora::nccl) with ${ADALORA_NCCL_LIBRARY}")
  endif()
endif()
