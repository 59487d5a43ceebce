# The libtorch integration (adalora::libtorch): views of torch tensors, attach() and the SVDLinear module, for trainers
# written against libtorch. Headers: include/adalora/integrations/libtorch.hpp and include/adalora/integrations/libtorch/.
#
# Added when ADALORA_WITH_LIBTORCH (default ON) and Torch's CMake package are found (Debian: libtorch-dev, CPU; or a
# libtorch unpacked anywhere, with Torch_DIR or CMAKE_PREFIX_PATH pointing at its share/cmake/Torch); otherwise skipped
# with a STATUS message, and nothing else of the build changes. Links Torch's `torch` target (its include folders
# are imported, hence system folders: torch's own warnings stay out of -Werror builds), adalora::adalora and
# adalora::io (the PEFT export). Sets ADALORA_HAS_LIBTORCH (ON/OFF) for the package config, which must find Torch
# again when it is ON.
option(ADALORA_WITH_LIBTORCH "Add the libtorch integration (adalora::libtorch) when Torch is found" ON)

set(ADALORA_HAS_LIBTORCH OFF)
if(ADALORA_WITH_LIBTORCH)
  # Torch's config (and Caffe2's, which it loads) print STATUS lines of their own even when QUIET.
  find_package(Torch CONFIG QUIET)
  if(Torch_FOUND AND TARGET torch)
    add_library(adalora_libtorch INTERFACE)
    add_library(adalora::libtorch ALIAS adalora_libtorch)
    set_target_properties(adalora_libtorch PROPERTIES EXPORT_NAME libtorch)
    target_link_libraries(adalora_libtorch INTERFACE adalora adalora_io torch)
    install(TARGETS adalora_libtorch EXPORT adaloraTargets)
    set(ADALORA_HAS_LIBTORCH ON)
    message(STATUS "adalora: libtorch ${Torch_VERSION} found (${Torch_DIR}), adalora::libtorch enabled")
  else()
    message(STATUS "adalora: Torch (libtorch) not found, adalora::libtorch is not built (on Debian: apt-get install "
                   "libtorch-dev; elsewhere set Torch_DIR to libtorch's share/cmake/Torch, or "
                   "-DADALORA_WITH_LIBTORCH=OFF)")
  endif()
endif()
