// Memory spaces as types: where a view's memory lives, so that host memory cannot reach a device algorithm.
#pragma once

#include <concepts>

namespace adalora {

/// Tag that a memory space carries to join the MemorySpace concept on purpose.
struct memory_space_tag {};

/// Ordinary host memory, readable by the CPU.
struct host_space {
  using memory_space_concept = memory_space_tag;
  static constexpr const char* name = "host";
};

/// Memory of a CUDA device (global memory), readable only by device code.
struct cuda_device_space {
  using memory_space_concept = memory_space_tag;
  static constexpr const char* name = "cuda_device";
};

/// A memory space:
///  1. names `memory_space_tag` as its `memory_space_concept`;
///  2. has a `static constexpr const char* name` for messages.
template <class S>
concept MemorySpace = std::same_as<typename S::memory_space_concept, memory_space_tag> && requires {
  { S::name } -> std::convertible_to<const char*>;
};

}  // namespace adalora
