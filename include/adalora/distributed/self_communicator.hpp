// The communicator of one process: the allocator's default, with which every collective compiles away.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "adalora/distributed/communicator.hpp"

namespace adalora {

/// One rank alone. rank_allocator's default communicator: with it the allocator runs no collective at all and its
/// behaviour and speed are those of a single-process allocator.
struct self_communicator {
  using communicator_concept = communicator_tag;
  using memory_space = host_space;
  static constexpr const char* name = "self";
  static constexpr bool single_process = true;

  int rank() const noexcept { return 0; }
  int size() const noexcept { return 1; }
  void all_gather(const double* send, std::size_t n, double* recv) const noexcept {
    if (n) std::memmove(recv, send, n * sizeof(double));
  }
  void all_gather_host(const std::uint64_t* send, std::size_t n, std::uint64_t* recv) const noexcept {
    if (n) std::memmove(recv, send, n * sizeof(std::uint64_t));
  }
};

static_assert(Communicator<self_communicator>);
static_assert(single_process_communicator<self_communicator>);

}  // namespace adalora
