// The MPI communicator: a distributed allocator over an MPI communicator the trainer already has (adalora::mpi).
#pragma once

#include <mpi.h>

#include <climits>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "adalora/core/error.hpp"
#include "adalora/distributed/communicator.hpp"

namespace adalora {

namespace detail {

[[noreturn]] inline void throw_mpi(int code, const char* call) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) length = 0;
  throw communication_error(std::string("mpi_communicator: ") + call + " failed: " + std::string(text, static_cast<std::size_t>(length)));
}

inline void check_mpi(int code, const char* call) {
  if (code != MPI_SUCCESS) throw_mpi(code, call);
}

/// The allocator's own duplicate of the trainer's communicator, freed with its last copy (unless MPI has already
/// been finalized, when there is nothing left to free).
class mpi_comm_holder {
public:
  explicit mpi_comm_holder(MPI_Comm comm) {
    int initialized = 0, finalized = 0;
    check_mpi(MPI_Initialized(&initialized), "MPI_Initialized");
    check_mpi(MPI_Finalized(&finalized), "MPI_Finalized");
    if (!initialized || finalized)
      throw usage_error("mpi_communicator: MPI is not initialized (or already finalized); call MPI_Init before "
                        "constructing it and MPI_Finalize after the allocator is gone");
    if (comm == MPI_COMM_NULL) throw usage_error("mpi_communicator: the communicator is MPI_COMM_NULL");
    check_mpi(MPI_Comm_dup(comm, &comm_), "MPI_Comm_dup");
    // errors of the allocator's collectives come back as codes (and become communication_error), whatever the
    // trainer's own communicator does with its errors
    check_mpi(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
  }
  mpi_comm_holder(const mpi_comm_holder&) = delete;
  mpi_comm_holder& operator=(const mpi_comm_holder&) = delete;
  ~mpi_comm_holder() {
    int finalized = 1;
    if (MPI_Finalized(&finalized) == MPI_SUCCESS && !finalized) MPI_Comm_free(&comm_);
  }
  MPI_Comm get() const noexcept { return comm_; }

private:
  MPI_Comm comm_ = MPI_COMM_NULL;
};

}  // namespace detail

/// A rank of an MPI communicator. The constructor duplicates `comm` (MPI_Comm_dup: a collective, so every rank
/// constructs its communicator at the same point of the program), so that the allocator's collectives never match
/// the trainer's own messages, and sets MPI_ERRORS_RETURN on the duplicate: a failed collective throws
/// communication_error. Copies share the duplicate; the last one frees it (destroy the allocator before
/// MPI_Finalize). Host memory: with a GPU backend the allocator stages its score sums through the host (or use
/// nccl_communicator).
class mpi_communicator {
public:
  using communicator_concept = communicator_tag;
  using memory_space = host_space;
  static constexpr const char* name = "mpi";

  explicit mpi_communicator(MPI_Comm comm) : comm_(std::make_shared<detail::mpi_comm_holder>(comm)) {
    detail::check_mpi(MPI_Comm_rank(comm_->get(), &rank_), "MPI_Comm_rank");
    detail::check_mpi(MPI_Comm_size(comm_->get(), &size_), "MPI_Comm_size");
  }

  int rank() const noexcept { return rank_; }
  int size() const noexcept { return size_; }
  /// The allocator's duplicate of the trainer's communicator.
  MPI_Comm comm() const noexcept { return comm_->get(); }

  void all_gather(const double* send, std::size_t n, double* recv) const {
    detail::check_mpi(MPI_Allgather(send, count(n, "all_gather"), MPI_DOUBLE, recv, count(n, "all_gather"),
                                    MPI_DOUBLE, comm_->get()),
                      "MPI_Allgather");
  }
  void all_gather_host(const std::uint64_t* send, std::size_t n, std::uint64_t* recv) const {
    detail::check_mpi(MPI_Allgather(send, count(n, "all_gather_host"), MPI_UINT64_T, recv,
                                    count(n, "all_gather_host"), MPI_UINT64_T, comm_->get()),
                      "MPI_Allgather");
  }

private:
  static int count(std::size_t n, const char* what) {
    if (n > static_cast<std::size_t>(INT_MAX))
      throw communication_error(std::string("mpi_communicator: ") + what + " of " + std::to_string(n) +
                                " values per rank exceeds MPI's int count");
    return static_cast<int>(n);
  }

  std::shared_ptr<detail::mpi_comm_holder> comm_;
  int rank_ = 0, size_ = 1;
};

static_assert(Communicator<mpi_communicator>);

}  // namespace adalora
