# cmake -P script behind the consumer_* tests (see consumer_tests.cmake): from a clean work folder, optionally install
# adalora from its build folder, then configure, build and run the consumer project, failing on any step.
# Inputs (-D): CONSUMER_MODE (find_package | add_subdirectory), CONSUMER_WORK_DIR, CONSUMER_SOURCE_DIR,
# ADALORA_SOURCE_DIR, ADALORA_BINARY_DIR, CONSUMER_CONFIG, and the build's CONSUMER_GENERATOR, CONSUMER_MAKE_PROGRAM,
# CONSUMER_CXX_COMPILER, CONSUMER_CXX_COMPILER_LAUNCHER, CONSUMER_BUILD_TYPE, CONSUMER_PREFIX_PATH, CONSUMER_Eigen3_DIR,
# CONSUMER_nlohmann_json_DIR ("|"-separated where they are lists).
cmake_minimum_required(VERSION 3.25)

foreach(_var CONSUMER_MODE CONSUMER_WORK_DIR CONSUMER_SOURCE_DIR ADALORA_SOURCE_DIR ADALORA_BINARY_DIR
             CONSUMER_GENERATOR CONSUMER_CXX_COMPILER)
  if(NOT DEFINED ${_var} OR "${${_var}}" STREQUAL "")
    message(FATAL_ERROR "run_consumer.cmake: pass -D${_var}=...")
  endif()
endforeach()

# Runs a command, echoing it first; stops the script (and fails the test) when it fails.
function(consumer_step what)
  string(REPLACE ";" " " _shown "${ARGN}")
  message(STATUS "[consumer ${CONSUMER_MODE}] ${what}: ${_shown}")
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE _rc OUTPUT_VARIABLE _out ERROR_VARIABLE _out)
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "[consumer ${CONSUMER_MODE}] ${what} failed (${_rc}):\n${_out}")
  endif()
  set(step_output "${_out}" PARENT_SCOPE)
endfunction()

set(_config "${CONSUMER_CONFIG}")
if(_config STREQUAL "")
  set(_config "${CONSUMER_BUILD_TYPE}")
endif()
set(_config_args)
if(NOT _config STREQUAL "")
  set(_config_args --config "${_config}")
endif()

file(REMOVE_RECURSE "${CONSUMER_WORK_DIR}")
file(MAKE_DIRECTORY "${CONSUMER_WORK_DIR}")
set(_build "${CONSUMER_WORK_DIR}/build")

# The consumer's settings go through an initial cache file (cmake -C): lists such as CMAKE_PREFIX_PATH and the
# compiler launcher survive there intact, where on a command line their semicolons would split the arguments.
string(REPLACE "|" ";" _prefix_path "${CONSUMER_PREFIX_PATH}")
string(REPLACE "|" ";" _launcher "${CONSUMER_CXX_COMPILER_LAUNCHER}")
set(_cache "${CONSUMER_WORK_DIR}/initial-cache.cmake")
set(_cache_text "")
# Appends set(<name> "<value>" CACHE <type> "") to the initial cache file's text.
macro(consumer_cache name type value)
  string(APPEND _cache_text "set(${name} [==[${value}]==] CACHE ${type} \"\")\n")
endmacro()

consumer_cache(CMAKE_CXX_COMPILER FILEPATH "${CONSUMER_CXX_COMPILER}")
consumer_cache(ADALORA_CONSUMER_MODE STRING "${CONSUMER_MODE}")
consumer_cache(CMAKE_FIND_PACKAGE_NO_PACKAGE_REGISTRY BOOL ON)
if(NOT CONSUMER_MAKE_PROGRAM STREQUAL "")
  consumer_cache(CMAKE_MAKE_PROGRAM FILEPATH "${CONSUMER_MAKE_PROGRAM}")
endif()
if(NOT _launcher STREQUAL "")
  consumer_cache(CMAKE_CXX_COMPILER_LAUNCHER STRING "${_launcher}")
endif()
if(NOT CONSUMER_BUILD_TYPE STREQUAL "")
  consumer_cache(CMAKE_BUILD_TYPE STRING "${CONSUMER_BUILD_TYPE}")
endif()
foreach(_pkg Eigen3 nlohmann_json)
  if(CONSUMER_${_pkg}_DIR AND NOT CONSUMER_${_pkg}_DIR MATCHES "-NOTFOUND$")
    consumer_cache(${_pkg}_DIR PATH "${CONSUMER_${_pkg}_DIR}")
  endif()
endforeach()

if(CONSUMER_MODE STREQUAL "find_package")
  set(_prefix "${CONSUMER_WORK_DIR}/prefix")
  consumer_step("install adalora" "${CMAKE_COMMAND}" --install "${ADALORA_BINARY_DIR}" --prefix "${_prefix}"
                ${_config_args})
  list(PREPEND _prefix_path "${_prefix}")
elseif(CONSUMER_MODE STREQUAL "add_subdirectory")
  consumer_cache(ADALORA_SOURCE_DIR PATH "${ADALORA_SOURCE_DIR}")
  foreach(_part TESTS TOOLS EXAMPLES BENCHMARKS)
    consumer_cache(ADALORA_BUILD_${_part} BOOL OFF)
  endforeach()
else()
  message(FATAL_ERROR "run_consumer.cmake: CONSUMER_MODE = '${CONSUMER_MODE}'; use find_package or add_subdirectory")
endif()
if(_prefix_path)
  consumer_cache(CMAKE_PREFIX_PATH STRING "${_prefix_path}")
endif()
file(WRITE "${_cache}" "${_cache_text}")

set(_configure "${CMAKE_COMMAND}" -C "${_cache}" -S "${CONSUMER_SOURCE_DIR}" -B "${_build}" -G "${CONSUMER_GENERATOR}")
consumer_step("configure" ${_configure})

if(CONSUMER_MODE STREQUAL "find_package")
  # The package must come from the prefix just installed, not from some adalora elsewhere on the system.
  file(STRINGS "${_build}/CMakeCache.txt" _found REGEX "^adalora_DIR:")
  string(REGEX REPLACE "^adalora_DIR:[A-Z]+=" "" _found "${_found}")
  file(REAL_PATH "${_found}" _found)
  file(REAL_PATH "${_prefix}" _prefix_real)
  string(FIND "${_found}/" "${_prefix_real}/" _at)
  if(NOT _at EQUAL 0)
    message(FATAL_ERROR "[consumer find_package] adalora was found at '${_found}', not under '${_prefix_real}'")
  endif()
endif()

consumer_step("build" "${CMAKE_COMMAND}" --build "${_build}" ${_config_args})
consumer_step("run" "${_build}/bin/adalora_consumer")
if(NOT step_output MATCHES "adalora consumer OK")
  message(FATAL_ERROR "[consumer ${CONSUMER_MODE}] the program did not print 'adalora consumer OK':\n${step_output}")
endif()
message(STATUS "[consumer ${CONSUMER_MODE}] ${step_output}")
