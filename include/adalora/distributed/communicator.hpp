// The Communicator concept: the few collectives a rank allocator needs to share one budget among many processes.
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "adalora/core/memory_space.hpp"

namespace adalora {

/// Tag that a communicator names as its `communicator_concept` to join the Communicator concept on purpose.
struct communicator_tag {};

/// A group of ranks (processes, threads or GPUs) that run one allocator together:
///  1. names `communicator_tag` as its `communicator_concept`, a `MemorySpace` as its `memory_space` and has a
///     `static constexpr const char* name`;
///  2. `c.rank()` and `c.size()` (int): this rank's index in [0, size) and the number of ranks;
///  3. `c.all_gather(send, n, recv)`: every rank contributes n doubles from `send`; afterwards `recv` (size · n
///     doubles) holds rank k's contribution at [k · n, (k + 1) · n) on every rank, bit for bit. Both buffers are in
///     `memory_space`; n is the same on every rank;
///  4. `c.all_gather_host(send, n, recv)`: the same for std::uint64_t words in host memory (flags, counts and the
///     descriptions the ranks compare at the first step).
/// Every rank calls every collective in the same order (a rank that skips one makes the others wait). A collective
/// that fails throws communication_error.
template <class C>
concept Communicator = std::same_as<typename C::communicator_concept, communicator_tag> &&
    MemorySpace<typename C::memory_space> &&
    requires(C& c, const double* sd, double* rd, const std::uint64_t* sw, std::uint64_t* rw, std::size_t n) {
  { C::name } -> std::convertible_to<const char*>;
  { c.rank() } -> std::same_as<int>;
  { c.size() } -> std::same_as<int>;
  c.all_gather(sd, n, rd);
  c.all_gather_host(sw, n, rw);
};

/// True for a communicator of exactly one process that declares so (`static constexpr bool single_process = true`):
/// the allocator then compiles every collective away (self_communicator).
template <class C>
inline constexpr bool single_process_communicator = requires {
  requires C::single_process;
};

/// Every rank's n words, on every rank: out[k · n + i] is word i of rank k.
template <Communicator C>
std::vector<std::uint64_t> gather_words(C& c, const std::vector<std::uint64_t>& mine) {
  std::vector<std::uint64_t> all(mine.size() * static_cast<std::size_t>(c.size()));
  c.all_gather_host(mine.data(), mine.size(), all.data());
  return all;
}

/// The sum over the ranks of one count, on every rank (an all-reduce built on all_gather_host, summed in rank
/// order).
template <Communicator C>
std::uint64_t all_reduce_sum(C& c, std::uint64_t value) {
  std::uint64_t sum = 0;
  for (std::uint64_t v : gather_words(c, std::vector<std::uint64_t>{value})) sum += v;
  return sum;
}

}  // namespace adalora
