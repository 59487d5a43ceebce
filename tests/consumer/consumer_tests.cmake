# Packaging checks (included from tests/CMakeLists.txt): the consumer project in this folder must configure, build
# and run against adalora both as an installed package and as an add_subdirectory subproject.
#   consumer_find_package      installs this build into <build>/tests/consumer/find_package/prefix, then builds the
#                              consumer with CMAKE_PREFIX_PATH=<prefix>
#   consumer_add_subdirectory  builds the consumer with add_subdirectory(<adalora source>) (tests/tools/examples OFF)
# Both run run_consumer.cmake (cmake -P) with the compiler and generator of this build. Label: packaging.

set(_consumer_source_dir "${CMAKE_CURRENT_LIST_DIR}")
set(_consumer_work_dir "${PROJECT_BINARY_DIR}/tests/consumer")

# Settings of this build that the consumer's fresh configure must share. Lists (CMAKE_PREFIX_PATH, the launcher)
# travel through -D as "|"-separated text; run_consumer.cmake turns them back into lists.
string(REPLACE ";" "|" _consumer_prefix_path "${CMAKE_PREFIX_PATH}")
string(REPLACE ";" "|" _consumer_launcher "${CMAKE_CXX_COMPILER_LAUNCHER}")
set(_consumer_args
    "-DADALORA_SOURCE_DIR=${PROJECT_SOURCE_DIR}"
    "-DADALORA_BINARY_DIR=${PROJECT_BINARY_DIR}"
    "-DCONSUMER_SOURCE_DIR=${_consumer_source_dir}"
    "-DCONSUMER_GENERATOR=${CMAKE_GENERATOR}"
    "-DCONSUMER_MAKE_PROGRAM=${CMAKE_MAKE_PROGRAM}"
    "-DCONSUMER_CXX_COMPILER=${CMAKE_CXX_COMPILER}"
    "-DCONSUMER_CXX_COMPILER_LAUNCHER=${_consumer_launcher}"
    "-DCONSUMER_BUILD_TYPE=${CMAKE_BUILD_TYPE}"
    "-DCONSUMER_PREFIX_PATH=${_consumer_prefix_path}"
    "-DCONSUMER_Eigen3_DIR=${Eigen3_DIR}"
    "-DCONSUMER_nlohmann_json_DIR=${nlohmann_json_DIR}")

foreach(_mode IN ITEMS find_package add_subdirectory)
  add_test(NAME consumer_${_mode}
           COMMAND "${CMAKE_COMMAND}" "-DCONSUMER_MODE=${_mode}" "-DCONSUMER_WORK_DIR=${_consumer_work_dir}/${_mode}"
                   "-DCONSUMER_CONFIG=$<CONFIG>" ${_consumer_args} -P "${_consumer_source_dir}/run_consumer.cmake")
  set_tests_properties(consumer_${_mode} PROPERTIES LABELS "packaging" TIMEOUT 600)
endforeach()
