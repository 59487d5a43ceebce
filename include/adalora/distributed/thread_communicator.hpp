// Ranks as threads of one process: a communicator for fast tests of distributed runs, with a time limit on waits.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "adalora/core/error.hpp"
#include "adalora/distributed/communicator.hpp"

namespace adalora {

namespace detail {

/// The meeting point of a thread group's ranks. A collective has two barriers: after the first every rank's
/// contribution is published and read by all; after the second every rank has finished reading, so that the
/// buffers can be reused. A rank that waits longer than the time limit breaks the group: it and every rank waiting
/// or arriving later throw communication_error (a rank that skipped a collective ends in an error, not a hang).
class thread_rendezvous {
public:
  thread_rendezvous(int size, std::chrono::milliseconds timeout)
      : size_(size), timeout_(timeout), sends_(static_cast<std::size_t>(size)), bytes_(static_cast<std::size_t>(size)) {}

  /// Every rank's `bytes` from `send`, concatenated in rank order into `recv`, on every rank.
  void all_gather(int rank, const char* what, const void* send, std::size_t bytes, void* recv) {
    std::unique_lock<std::mutex> lock(m_);
    sends_[static_cast<std::size_t>(rank)] = send;
    bytes_[static_cast<std::size_t>(rank)] = bytes;
    barrier(lock, rank, what);
    // nobody writes sends_ or bytes_ until every rank has passed the second barrier
    for (std::size_t k = 0; k < bytes_.size(); ++k)
      if (bytes_[k] != bytes)
        throw communication_error(std::string("thread_communicator: ") + what + ": rank " + std::to_string(k) +
                                  " contributes " + std::to_string(bytes_[k]) + " bytes but rank " +
                                  std::to_string(rank) + " " + std::to_string(bytes) +
                                  "; every rank must contribute the same amount");
    lock.unlock();
    auto* out = static_cast<unsigned char*>(recv);
    for (std::size_t k = 0; k < sends_.size(); ++k)
      if (bytes) std::memmove(out + k * bytes, sends_[k], bytes);
    lock.lock();
    barrier(lock, rank, what);
  }

  int size() const noexcept { return size_; }

private:
  void barrier(std::unique_lock<std::mutex>& lock, int rank, const char* what) {
    if (broken_) throw communication_error(reason_);
    const std::uint64_t generation = generation_;
    if (++arrived_ == size_) {
      arrived_ = 0;
      ++generation_;
      cv_.notify_all();
      return;
    }
    if (!cv_.wait_for(lock, timeout_, [&] { return generation_ != generation || broken_; })) {
      broken_ = true;
      reason_ = "thread_communicator: rank " + std::to_string(rank) + " waited " + std::to_string(timeout_.count()) +
                " ms in " + what + " for the other ranks, " + std::to_string(size_ - arrived_) +
                " of which never came: every rank must call every collective (call step(t) on every rank with the "
                "same t); the group is broken";
      cv_.notify_all();
      throw communication_error(reason_);
    }
    if (generation_ == generation) throw communication_error(reason_);  // broken while this rank waited
  }

  std::mutex m_;
  std::condition_variable cv_;
  int size_;
  std::chrono::milliseconds timeout_;
  int arrived_ = 0;
  std::uint64_t generation_ = 0;
  bool broken_ = false;
  std::string reason_;
  std::vector<const void*> sends_;
  std::vector<std::size_t> bytes_;
};

}  // namespace detail

/// One rank of a thread_group: the communicator a thread passes to its allocator.
class thread_communicator {
public:
  using communicator_concept = communicator_tag;
  using memory_space = host_space;
  static constexpr const char* name = "thread";

  thread_communicator(std::shared_ptr<detail::thread_rendezvous> group, int rank)
      : group_(std::move(group)), rank_(rank) {}

  int rank() const noexcept { return rank_; }
  int size() const noexcept { return group_->size(); }
  void all_gather(const double* send, std::size_t n, double* recv) const {
    group_->all_gather(rank_, "all_gather", send, n * sizeof(double), recv);
  }
  void all_gather_host(const std::uint64_t* send, std::size_t n, std::uint64_t* recv) const {
    group_->all_gather(rank_, "all_gather_host", send, n * sizeof(std::uint64_t), recv);
  }

private:
  std::shared_ptr<detail::thread_rendezvous> group_;
  int rank_;
};

static_assert(Communicator<thread_communicator>);
static_assert(!single_process_communicator<thread_communicator>);

/// `size` ranks that are threads of this process. A rank waits at most `timeout` for the others in a collective,
/// then throws communication_error (and so does every rank after it: the group is then broken).
class thread_group {
public:
  explicit thread_group(int size, std::chrono::milliseconds timeout = std::chrono::seconds(60))
      : state_(std::make_shared<detail::thread_rendezvous>(checked(size), timeout)) {}

  int size() const noexcept { return state_->size(); }
  thread_communicator communicator(int rank) const {
    if (rank < 0 || rank >= size())
      throw usage_error("thread_group::communicator(" + std::to_string(rank) + "): the group has ranks 0 to " +
                        std::to_string(size() - 1));
    return thread_communicator(state_, rank);
  }

  /// Runs f(communicator(k)) on one thread per rank k and waits for all of them. Returns, per rank, the exception
  /// its f ended with (null when it returned normally).
  template <class F>
  std::vector<std::exception_ptr> run(F f) const {
    std::vector<std::exception_ptr> errors(static_cast<std::size_t>(size()));
    std::vector<std::thread> threads;
    threads.reserve(errors.size());
    for (int k = 0; k < size(); ++k)
      threads.emplace_back([&, k] {
        try {
          f(communicator(k));
        } catch (...) {
          errors[static_cast<std::size_t>(k)] = std::current_exception();
        }
      });
    for (auto& t : threads) t.join();
    return errors;
  }

private:
  static int checked(int size) {
    if (size < 1) throw usage_error("thread_group: size = " + std::to_string(size) + "; need at least one rank");
    return size;
  }
  std::shared_ptr<detail::thread_rendezvous> state_;
};

}  // namespace adalora
