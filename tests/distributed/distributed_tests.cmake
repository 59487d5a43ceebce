# The distributed allocator's tests, included by tests/CMakeLists.txt.
#   test_distributed      (Catch2) the Communicator concept, thread_communicator, and the allocator on threads: every
#                         ownership on 2, 3 and 4 ranks against one process, the failure cases, per-rank checkpoints
#   mpi_<layout>_np<N>    mpi_allocator_check under mpiexec -np N (2, 3, 4): the same runs over MPI
#   mpi_error_<case>      each failure ends with the same error on every rank (a time limit catches a hang)
#   mpi_checkpoint_np3    per-rank checkpoints resumed bit for bit; one rank fewer is refused
# Each MPI test has a TIMEOUT: a rank left waiting in a collective fails the test instead of hanging CI.
find_package(Threads REQUIRED)

adalora_add_test(test_distributed SOURCES distributed/test_communicator.cpp distributed/test_distributed.cpp
                 LIBS adalora_test_backends adalora::io Threads::Threads)
set_tests_properties(test_distributed PROPERTIES TIMEOUT 600 ENVIRONMENT OMP_WAIT_POLICY=passive)

if(TARGET adalora::mpi)
  add_executable(mpi_allocator_check ${CMAKE_CURRENT_LIST_DIR}/mpi_allocator_check.cpp)
  target_link_libraries(mpi_allocator_check PRIVATE adalora::mpi adalora::eigen adalora::io adalora_project_options)
  target_include_directories(mpi_allocator_check PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
  target_compile_definitions(mpi_allocator_check PRIVATE ADALORA_TRACES_DIR="${ADALORA_TRACES_DIR}")

  # adalora_add_mpi_test(NAME RANKS ARGS...)
  function(adalora_add_mpi_test name ranks)
    add_test(NAME ${name}
             COMMAND ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} ${ranks} ${ADALORA_MPIEXEC_FLAGS} ${MPIEXEC_PREFLAGS}
                     $<TARGET_FILE:mpi_allocator_check> ${MPIEXEC_POSTFLAGS} ${ARGN})
    # OpenMPI runs as root (CI containers) only with this consent; other MPIs ignore it
    set_tests_properties(${name} PROPERTIES TIMEOUT 120 LABELS mpi PROCESSORS ${ranks}
                         ENVIRONMENT "OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1")
  endfunction()

  foreach(_ranks 2 3 4)
    foreach(_layout replicated disjoint lopsided sharded)
      adalora_add_mpi_test(mpi_${_layout}_np${_ranks} ${_ranks} run ${_layout})
    endforeach()
  endforeach()
  adalora_add_mpi_test(mpi_sharded_per_triplet_np3 3 run sharded per_triplet)
  foreach(_case config adapters shards non_finite steps divergence)
    adalora_add_mpi_test(mpi_error_${_case} 3 error ${_case})
  endforeach()
  adalora_add_mpi_test(mpi_checkpoint_np3 3 checkpoint ${CMAKE_CURRENT_BINARY_DIR}/mpi_checkpoint)
endif()
