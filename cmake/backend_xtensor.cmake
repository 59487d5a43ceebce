# The xtensor backend (adalora::xtensor): added when xtensor is found.
# Sets ADALORA_HAS_XTENSOR (ON/OFF) for the package config, which must find xtensor again when it is ON.
option(ADALORA_WITH_XTENSOR "Add the xtensor backend (adalora::xtensor) when xtensor is found" ON)

set(ADALORA_HAS_XTENSOR OFF)
if(ADALORA_WITH_XTENSOR)
  find_package(xtensor 0.24 CONFIG QUIET)
  if(xtensor_FOUND AND TARGET xtensor)
    add_library(adalora_xtensor INTERFACE)
    add_library(adalora::xtensor ALIAS adalora_xtensor)
    set_target_properties(adalora_xtensor PROPERTIES EXPORT_NAME xtensor)
    # xtensor is an imported target: its include folders reach consumers as SYSTEM, so its headers' warnings stay
    # out of -Werror builds.
    target_link_libraries(adalora_xtensor INTERFACE adalora::adalora xtensor)
    install(TARGETS adalora_xtensor EXPORT adaloraTargets)
    set(ADALORA_HAS_XTENSOR ON)
    message(STATUS "adalora: xtensor ${xtensor_VERSION} found, adalora::xtensor enabled")
  else()
    message(STATUS "adalora: xtensor (>= 0.24) not found, adalora::xtensor is not built "
                   "(install xtensor or point xtensor_DIR at its CMake config, or set ADALORA_WITH_XTENSOR=OFF)")
  endif()
endif()
