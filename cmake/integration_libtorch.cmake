# The libtorch integration (adalora::libtorch): views of torch tensors, attach() and the SVDLinear module, for trainers
# written against libtorch. Headers: include/adalora/integrations/libtorch.hpp and include/adalora/integrations/libtorch/.
#
# Added when ADALORA_WITH_LIBTORCH (default ON) and Torch's CMake package are found (Debian: libtorch-dev, CPU; or a
# libtorch unpacked anywhere, with Torch_DIR or CMAKE_PREFIX_PATH pointing at its share/cmake/Torch); otherwise skipped
# with a STATUS message, and nothing else of the build changes. Links Torch's `torch` target (its include folders
# are imported, hence system folders: torch's own warnings stay out of -Werror builds), adalora::adalora,
# adalora::eigen (integrations/libtorch.hpp includes the CPU umbrella, so one include is enough) and adalora::io (the
# PEFT export). Sets ADALORA_HAS_LIBTORCH (ON/OFF) for the package config, which must find Torch
# again when it is ON.
option(ADALORA_WITH_LIBTORCH "Add the libtorch integration (adalora::libtorch) when Torch is found" ON)

# Torch's config (and Caffe2's, which it loads) sets variables in the scope it is found from (a CUDA libtorch's even
# sets CMAKE_CUDA_ARCHITECTURES OFF): found inside a function, they stay there; the imported targets it makes belong to
# the directory, as usual. It prints STATUS lines of its own even when QUIET.
function(_adalora_find_torch)
  find_package(Torch CONFIG QUIET)
  set(_adalora_torch_found "${Torch_FOUND}" PARENT_SCOPE)
  set(_adalora_torch_version "${Torch_VERSION}" PARENT_SCOPE)
endfunction()

set(ADALORA_HAS_LIBTORCH OFF)
if(ADALORA_WITH_LIBTORCH)
  _adalora_find_torch()
  if(_adalora_torch_found AND TARGET torch)
    add_library(adalora_libtorch INTERFACE)
    add_library(adalora::libtorch ALIAS adalora_libtorch)
    set_target_properties(adalora_libtorch PROPERTIES EXPORT_NAME libtorch)
    target_link_libraries(adalora_libtorch INTERFACE adalora adalora_eigen adalora_io torch)
    install(TARGETS adalora_libtorch EXPORT adaloraTargets)
    set(ADALORA_HAS_LIBTORCH ON)
    message(STATUS "adalora: libtorch ${_adalora_torch_version} found (${Torch_DIR}), adalora::libtorch enabled")
  else()
    message(STATUS "adalora: Torch (libtorch) not found, adalora::libtorch is not built (on Debian: apt-get install "
                   "libtorch-dev; elsewhere set Torch_DIR to libtorch's share/cmake/Torch, or "
                   "-DADALORA_WITH_LIBTORCH=OFF)")
  endif()
endif()
